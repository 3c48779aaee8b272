#!/usr/bin/env python3
"""Check app.json against Heroku's documented app.json schema, then against
what ecos needs on Heroku.

Usage: scripts/check_app_json.py [PATH]   (default: app.json beside scripts/)

Prints one line per problem and exits 1 if there is any, else prints a
one-line summary and exits 0. Standard library only.

The schema rules follow Heroku Dev Center's "app.json Schema" article: the
keys it documents, their types, env entries as strings or objects with
description/value/required/generator ("secret"), add-ons as plan strings or
objects with `plan` (and optional `as`, `options`), formation as
{process type: {quantity, size}}, buildpacks as [{url}], and `environments`
(Heroku CI's `test`, and `review`) holding the same kinds of keys plus the
`test-setup` and `test` scripts. The name limit (3 to 30 characters) and
the description limit (140) are those of Heroku's own app.json validator
package.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

TOP_LEVEL_KEYS = {
    "name", "description", "keywords", "website", "repository", "logo",
    "success_url", "scripts", "env", "formation", "image", "addons",
    "buildpacks", "environments", "stack",
}
ENVIRONMENT_NAMES = {"test", "review"}
ENVIRONMENT_KEYS = {"addons", "buildpacks", "env", "formation", "scripts", "stack", "image"}
SCRIPT_NAMES = {"postdeploy", "pr-predestroy", "test-setup", "test"}
ENV_ENTRY_KEYS = {"description", "value", "required", "generator"}
ADDON_KEYS = {"plan", "as", "options"}
# Dyno sizes (lower case). Eco and Basic run at most one dyno per process
# type, so a quantity above 1 needs Standard or bigger.
SINGLE_DYNO_SIZES = {"eco", "basic", "free", "hobby"}
KNOWN_SIZES = SINGLE_DYNO_SIZES | {
    "standard-1x", "standard-2x", "performance-m", "performance-l",
    "performance-l-ram", "performance-xl", "performance-2xl",
    "private-s", "private-m", "private-l", "private-memory-l",
    "private-memory-xl", "private-memory-2xl", "shield-s", "shield-m",
    "shield-l", "shield-memory-l", "shield-memory-xl", "shield-memory-2xl",
}
# Newer dyno sizes are named by cores and memory, e.g. dyno-1c-0.5gb.
SIZE_PATTERN = re.compile(r"^dyno-\d+c-\d+(\.\d+)?gb$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")


class Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    # -- generic schema -------------------------------------------------

    def string(self, where: str, value, *, min_len: int = 0, max_len: int | None = None) -> bool:
        if not isinstance(value, str):
            self.error(where, f"must be a string, got {type(value).__name__}")
            return False
        if len(value) < min_len:
            self.error(where, f"must have at least {min_len} characters")
            return False
        if max_len is not None and len(value) > max_len:
            self.error(where, f"must have at most {max_len} characters, has {len(value)}")
            return False
        return True

    def url(self, where: str, value) -> None:
        if self.string(where, value) and not URL.match(value):
            self.error(where, f"must be an http(s) URL, got {value!r}")

    def scripts(self, where: str, value, allowed: set[str]) -> None:
        if not isinstance(value, dict):
            self.error(where, "must be an object of script name to command")
            return
        for name, command in value.items():
            if name not in allowed:
                self.error(f"{where}.{name}", f"unknown script (known: {', '.join(sorted(allowed))})")
            if self.string(f"{where}.{name}", command) and not command.strip():
                self.error(f"{where}.{name}", "must not be empty")

    def env(self, where: str, value) -> None:
        if not isinstance(value, dict):
            self.error(where, "must be an object of variable name to entry")
            return
        for name, entry in value.items():
            at = f"{where}.{name}"
            if not ENV_NAME.match(name):
                self.error(at, "is not a valid environment variable name")
            if isinstance(entry, str):
                continue
            if not isinstance(entry, dict):
                self.error(at, "must be a string or an object with description/value/required/generator")
                continue
            for key in entry:
                if key not in ENV_ENTRY_KEYS:
                    self.error(f"{at}.{key}", f"unknown key (known: {', '.join(sorted(ENV_ENTRY_KEYS))})")
            if "description" in entry:
                self.string(f"{at}.description", entry["description"], min_len=1)
            if "value" in entry:
                # Config var values are strings: "25", not 25; "true", not true.
                self.string(f"{at}.value", entry["value"])
            if "required" in entry and not isinstance(entry["required"], bool):
                self.error(f"{at}.required", "must be true or false")
            if "generator" in entry and entry["generator"] != "secret":
                self.error(f"{at}.generator", 'the only generator is "secret"')
            if "value" in entry and "generator" in entry:
                self.error(at, "has both value and generator")

    def addons(self, where: str, value) -> None:
        if not isinstance(value, list):
            self.error(where, "must be a list")
            return
        for i, addon in enumerate(value):
            at = f"{where}[{i}]"
            if isinstance(addon, str):
                self.string(at, addon, min_len=1)
            elif isinstance(addon, dict):
                for key in addon:
                    if key not in ADDON_KEYS:
                        self.error(f"{at}.{key}", f"unknown key (known: {', '.join(sorted(ADDON_KEYS))})")
                if "plan" not in addon:
                    self.error(at, "needs a plan")
                else:
                    self.string(f"{at}.plan", addon["plan"], min_len=1)
                if "as" in addon:
                    self.string(f"{at}.as", addon["as"], min_len=1)
                if "options" in addon and not isinstance(addon["options"], dict):
                    self.error(f"{at}.options", "must be an object")
            else:
                self.error(at, 'must be a plan string or an object with "plan"')

    def buildpacks(self, where: str, value) -> None:
        if not isinstance(value, list) or not value:
            self.error(where, "must be a non-empty list")
            return
        for i, pack in enumerate(value):
            at = f"{where}[{i}]"
            if not isinstance(pack, dict) or set(pack) != {"url"}:
                self.error(at, 'must be an object with exactly one key, "url"')
                continue
            self.string(f"{at}.url", pack["url"], min_len=1)

    def formation(self, where: str, value) -> None:
        if not isinstance(value, dict):
            self.error(where, "must be an object of process type to {quantity, size}")
            return
        for proc, spec in value.items():
            at = f"{where}.{proc}"
            if not isinstance(spec, dict):
                self.error(at, "must be an object")
                continue
            for key in spec:
                if key not in {"quantity", "size"}:
                    self.error(f"{at}.{key}", "unknown key (known: quantity, size)")
            quantity = spec.get("quantity")
            if "quantity" in spec and (not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0):
                self.error(f"{at}.quantity", "must be a whole number >= 0")
            size = spec.get("size")
            if "size" in spec and self.string(f"{at}.size", size, min_len=1):
                low = size.lower()
                if low not in KNOWN_SIZES and not SIZE_PATTERN.match(low):
                    self.error(f"{at}.size", f"unknown dyno size {size!r}")
                if low in SINGLE_DYNO_SIZES and isinstance(quantity, int) and quantity > 1:
                    self.error(at, f"{size} dynos cannot run more than one dyno per process type; use standard-1x or bigger")

    def check_schema(self, doc) -> None:
        if not isinstance(doc, dict):
            self.error("app.json", "must be a JSON object")
            return
        for key in doc:
            if key not in TOP_LEVEL_KEYS:
                self.error(key, "unknown top-level key")
        if "name" in doc:
            self.string("name", doc["name"], min_len=3, max_len=30)
        if "description" in doc:
            self.string("description", doc["description"], min_len=1, max_len=140)
        if "keywords" in doc:
            kw = doc["keywords"]
            if not isinstance(kw, list) or not all(isinstance(k, str) and k for k in kw):
                self.error("keywords", "must be a list of non-empty strings")
        for key in ("website", "repository", "logo"):
            if key in doc:
                self.url(key, doc[key])
        if "success_url" in doc:
            self.string("success_url", doc["success_url"], min_len=1)
        if "scripts" in doc:
            self.scripts("scripts", doc["scripts"], {"postdeploy", "pr-predestroy"})
        if "env" in doc:
            self.env("env", doc["env"])
        if "formation" in doc:
            self.formation("formation", doc["formation"])
        if "addons" in doc:
            self.addons("addons", doc["addons"])
        if "buildpacks" in doc:
            self.buildpacks("buildpacks", doc["buildpacks"])
        for key in ("image", "stack"):
            if key in doc:
                self.string(key, doc[key], min_len=1)
        if "environments" in doc:
            envs = doc["environments"]
            if not isinstance(envs, dict):
                self.error("environments", "must be an object")
                return
            for name, spec in envs.items():
                at = f"environments.{name}"
                if name not in ENVIRONMENT_NAMES:
                    self.error(at, f"unknown environment (known: {', '.join(sorted(ENVIRONMENT_NAMES))})")
                if not isinstance(spec, dict):
                    self.error(at, "must be an object")
                    continue
                for key in spec:
                    if key not in ENVIRONMENT_KEYS:
                        self.error(f"{at}.{key}", f"unknown key (known: {', '.join(sorted(ENVIRONMENT_KEYS))})")
                if "addons" in spec:
                    self.addons(f"{at}.addons", spec["addons"])
                if "buildpacks" in spec:
                    self.buildpacks(f"{at}.buildpacks", spec["buildpacks"])
                if "env" in spec:
                    self.env(f"{at}.env", spec["env"])
                if "formation" in spec:
                    self.formation(f"{at}.formation", spec["formation"])
                if "scripts" in spec:
                    self.scripts(f"{at}.scripts", spec["scripts"], SCRIPT_NAMES)
            test = envs.get("test")
            if isinstance(test, dict):
                scripts = test.get("scripts")
                if not isinstance(scripts, dict) or not isinstance(scripts.get("test"), str):
                    self.error("environments.test.scripts.test", "Heroku CI needs a test command (string)")

    # -- what ecos needs --------------------------------------------------

    def check_ecos(self, doc, root: Path) -> None:
        if not isinstance(doc, dict):
            return
        web = (doc.get("formation") or {}).get("web")
        if not isinstance(web, dict):
            self.error("formation.web", "ecos is a web process: declare formation.web")
        elif isinstance(web.get("quantity"), int) and web["quantity"] < 2:
            self.error("formation.web.quantity", "use at least 2 dynos to show the Redis fan-out")

        def plans(addons) -> list[str]:
            out = []
            for a in addons or []:
                out.append(a if isinstance(a, str) else (a.get("plan", "") if isinstance(a, dict) else ""))
            return out

        if not any(p.split(":")[0] == "heroku-redis" for p in plans(doc.get("addons"))):
            self.error("addons", "ecos needs a Redis for several dynos: add heroku-redis (Heroku Key-Value Store)")
        env = doc.get("env") or {}
        tls = env.get("ECOS_REDIS__TLS_INSECURE")
        tls_value = tls.get("value") if isinstance(tls, dict) else tls
        if tls_value != "true":
            self.error("env.ECOS_REDIS__TLS_INSECURE", 'must be "true": Heroku Key-Value Store uses a self-signed certificate')
        if isinstance(tls, dict) and not tls.get("description"):
            self.error("env.ECOS_REDIS__TLS_INSECURE", "needs a description saying why")
        drain = env.get("ECOS_SHUTDOWN__DRAIN_TIMEOUT_SECS")
        drain_value = drain.get("value") if isinstance(drain, dict) else drain
        if drain_value is not None:
            try:
                if not float(drain_value) < 30:
                    self.error("env.ECOS_SHUTDOWN__DRAIN_TIMEOUT_SECS", "must be under 30: Heroku sends SIGKILL 30 s after SIGTERM")
            except ValueError:
                self.error("env.ECOS_SHUTDOWN__DRAIN_TIMEOUT_SECS", f"not a number: {drain_value!r}")
        urls = [b.get("url", "") for b in doc.get("buildpacks") or [] if isinstance(b, dict)]
        if not any("heroku-buildpack-rust" in u or u == "emk/rust" for u in urls):
            self.error("buildpacks", "expected the Rust buildpack (emk/rust), which builds target/release/ecos")
        test = (doc.get("environments") or {}).get("test") or {}
        scripts = test.get("scripts") or {}
        if scripts.get("test") != "./scripts/test":
            self.error("environments.test.scripts.test", 'must be "./scripts/test", the project\'s one test command')
        if not any(p.split(":")[0] == "heroku-redis" for p in plans(test.get("addons"))):
            self.error("environments.test.addons", "the tests need Redis: add heroku-redis:in-dyno")
        for name, command in scripts.items():
            if not isinstance(command, str):
                continue
            first = command.split()[0] if command.split() else ""
            if first.startswith("./"):
                path = root / first[2:]
                if not path.is_file():
                    self.error(f"environments.test.scripts.{name}", f"{first} does not exist")
                elif not os.access(path, os.X_OK):
                    self.error(f"environments.test.scripts.{name}", f"{first} is not executable")


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "app.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"{path}: not found")
        return 1
    except json.JSONDecodeError as exc:
        print(f"{path}: invalid JSON: {exc}")
        return 1
    checker = Checker()
    checker.check_schema(doc)
    checker.check_ecos(doc, root)
    for line in checker.errors:
        print(line)
    if checker.errors:
        return 1
    env_count = len(doc.get("env", {}))
    print(f"app.json ok: name {doc.get('name')!r}, {env_count} env entries, formation {doc.get('formation')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
