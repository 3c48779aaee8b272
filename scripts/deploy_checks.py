#!/usr/bin/env python3
"""Checks of the deployment files that no off-the-shelf linter makes.

Called by scripts/check-deploy, one subcommand per check:

    deploy_checks.py NAME [ARGS...]

Each subcommand prints a one-line summary (and, on failure, the problems
indented below it) and exits 0 (pass), 1 (fail) or 3 (skipped: something it
needs is missing). Runs with the Python of the deploy-tools venv, which has
PyYAML (through yamllint); everything else is the standard library.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = 3

# The ecos launcher the test suites share (tests/support/launcher.py).
sys.path.insert(0, str(ROOT / "tests" / "support"))
import launcher  # noqa: E402


class Fail(Exception):
    pass


def need(cond, message: str, problems: list[str]) -> None:
    if not cond:
        problems.append(message)


def report(summary: str, problems: list[str]) -> int:
    if problems:
        print(f"{len(problems)} problem(s)")
        for p in problems:
            print(f"    - {p}")
        return 1
    print(summary)
    return 0


def load_yaml(path: Path):
    import yaml  # from the venv (yamllint depends on it)

    with path.open(encoding="utf-8") as fh:
        return list(yaml.safe_load_all(fh))


# The Rust toolchain is pinned by VERSION in RustConfig, which only the Heroku
# buildpack (emk/rust) reads. A top-level rust-toolchain file would pin it for
# rustup as well, and then every cargo command on a machine without exactly
# that toolchain installed (offline, RUSTUP_AUTO_INSTALL=0) would fail.
TOOLCHAIN_FILES = ("rust-toolchain", "rust-toolchain.toml")


def rustconfig() -> tuple[dict[str, str], list[str]]:
    """RustConfig's NAME=value assignments (the buildpack sources the file
    with bash; values are unquoted here the way the shell would), and the
    lines that are not assignments."""
    values: dict[str, str] = {}
    bad: list[str] = []
    for line in (ROOT / "RustConfig").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Z_]+)=(.*)", line)
        if not m:
            bad.append(line)
            continue
        values[m.group(1)] = " ".join(shlex.split(m.group(2)))
    return values, bad


# --------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_stages(path: Path) -> list[dict]:
    stages: list[dict] = []
    for inst, args in dockerfile_instructions(path):
        if inst == "FROM":
            parts = args.split()
            image = next(p for p in parts if not p.startswith("--"))
            alias = parts[-1] if len(parts) >= 3 and parts[-2].upper() == "AS" else None
            stages.append({"image": image, "alias": alias, "ins": []})
        elif stages:
            stages[-1]["ins"].append((inst, args))
    return stages


def cmd_dockerfile_layers(_args) -> int:
    """What one real build (scripts/test-container) cannot show: that the
    dependency layer stays cached across source changes, and that both cargo
    steps build in release mode from the committed Cargo.lock."""
    problems: list[str] = []
    stages = dockerfile_stages(ROOT / "Dockerfile")
    runs = [(i, a) for i, s in enumerate(stages) for (ins, a) in s["ins"] if ins == "RUN"]
    prepare = [i for i, a in runs if "cargo chef prepare" in a]
    cook = [(i, a) for i, a in runs if "cargo chef cook" in a]
    build = [(i, a) for i, a in runs if re.search(r"\bcargo build\b", a)]
    need(prepare, "no `cargo chef prepare` (planner stage)", problems)
    need(cook, "no `cargo chef cook` (dependency layer)", problems)
    need(build, "no `cargo build`", problems)
    for _, a in cook + build:
        need("--release" in a, f"not a release build: RUN {a}", problems)
        need("--locked" in a, f"does not use the committed Cargo.lock (--locked): RUN {a}", problems)
    if cook and build:
        ins = stages[cook[0][0]]["ins"]
        cook_at = next(n for n, (x, a) in enumerate(ins) if x == "RUN" and "cargo chef cook" in a)
        src_at = [n for n, (x, a) in enumerate(ins) if x == "COPY" and re.search(r"(^|\s)src\b", a)]
        need(src_at and min(src_at) > cook_at, "the sources must be copied after `cargo chef cook`, or the dependency layer is rebuilt on every change", problems)
    return report("cargo chef cook (dependencies) before the sources are copied; cook and build --release --locked", problems)


def cmd_toolchain(_args) -> int:
    problems: list[str] = []
    if not (ROOT / "RustConfig").exists():
        return report("", ["no RustConfig: the Rust version is pinned by VERSION in RustConfig"])
    version = rustconfig()[0].get("VERSION", "")
    need(version, "RustConfig sets no VERSION (the Rust version pin)", problems)
    need(not version or re.fullmatch(r"\d+\.\d+\.\d+", version),
         f"RustConfig VERSION should be a plain version like 1.95.0, is {version!r}", problems)
    rust_images = [s["image"] for s in dockerfile_stages(ROOT / "Dockerfile") if re.match(r"^(docker\.io/)?(library/)?rust:", s["image"])]
    need(rust_images, "no rust: base image in the Dockerfile", problems)
    for image in rust_images:
        tag = image.split(":", 1)[1]
        need(tag == version or tag.startswith(version + "-"), f"Dockerfile uses {image}, RustConfig VERSION is {version!r}", problems)
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    msrv = manifest.get("package", {}).get("rust-version")
    if msrv and re.fullmatch(r"\d+\.\d+(\.\d+)?", version):
        as_tuple = lambda v: tuple(int(x) for x in (v.split(".") + ["0"])[:3])  # noqa: E731
        need(as_tuple(msrv) <= as_tuple(version), f"Cargo.toml rust-version {msrv} is newer than RustConfig VERSION {version}", problems)
    return report(f"RustConfig VERSION {version} = Dockerfile {', '.join(rust_images)}; >= Cargo.toml rust-version {msrv}", problems)


def cmd_no_toolchain_file(_args) -> int:
    problems: list[str] = []
    for name in TOOLCHAIN_FILES:
        need(not os.path.lexists(ROOT / name),
             f"{name} exists: rustup reads it for every cargo command here, so cargo and CI fail wherever that exact "
             "toolchain is not installed (offline, RUSTUP_AUTO_INSTALL=0). Delete it; the version is pinned by "
             "VERSION in RustConfig, which only the Heroku buildpack reads", problems)
    return report(f"no {' or '.join(TOOLCHAIN_FILES)} at the top level (the pin is VERSION in RustConfig, which rustup ignores)", problems)


# --------------------------------------------------------------------------
# Procfile and RustConfig (Heroku buildpack)


def procfile() -> dict[str, str]:
    procs: dict[str, str] = {}
    for n, line in enumerate((ROOT / "Procfile").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(\S.*)", line.strip())
        if not m:
            raise Fail(f"Procfile line {n} is not `name: command`: {line!r}")
        if m.group(1) in procs:
            raise Fail(f"Procfile declares {m.group(1)} twice")
        procs[m.group(1)] = m.group(2)
    return procs


def cmd_procfile(_args) -> int:
    problems: list[str] = []
    try:
        procs = procfile()
    except Fail as exc:
        return report("", [str(exc)])
    need("web" in procs, "Procfile has no web process", problems)
    web = procs.get("web", "")
    need(web.split()[:1] == ["./target/release/ecos"], f"web should start ./target/release/ecos (where the Rust buildpack leaves it), starts {web!r}", problems)
    return report(f"process types {sorted(procs)}; web: {web}", problems)


def cmd_rustconfig(_args) -> int:
    problems: list[str] = []
    if not (ROOT / "RustConfig").exists():
        return report("", ["no RustConfig: without its VERSION the buildpack builds with whatever `stable` is that day"])
    values, bad = rustconfig()
    problems += [f"RustConfig line is not NAME=value: {line!r}" for line in bad]
    need(values.get("VERSION"), "RustConfig sets no VERSION: the buildpack would build with `stable`, not the pinned toolchain", problems)
    flags = values.get("RUST_CARGO_BUILD_FLAGS", "--release")
    need("--release" in flags.split(), "RUST_CARGO_BUILD_FLAGS lacks --release (the Procfile runs target/release/ecos)", problems)
    need("--locked" in flags.split(), "RUST_CARGO_BUILD_FLAGS lacks --locked", problems)
    return report(f"buildpack: Rust {values.get('VERSION')}, cargo build {flags}", problems)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, headers: dict | None = None, timeout: float = 3.0):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace"), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace"), exc.headers


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOS_") and k not in {"REDIS_URL", "DYNO", "PORT", "RUST_LOG"}}
    env.update(extra)
    return env


def wait_started(proc: subprocess.Popen, out_path: Path, deadline: float) -> dict | None:
    while time.monotonic() < deadline:
        for line in out_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            fields = rec.get("fields", rec)
            if fields.get("message") == "ecos started":
                return fields
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def has_healthcheck(binary: Path) -> bool:
    res = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=10)
    return re.search(r"^\s+healthcheck\b", res.stdout, re.M) is not None


def cmd_procfile_run(_args) -> int:
    """Start the Procfile's web command as Heroku would (bash -c, from the app
    root, PORT set), check where it binds, then stop it with SIGTERM."""
    binary = ROOT / "target/release/ecos"
    if not binary.exists():
        print("target/release/ecos not built (cargo build --release); not run")
        return SKIP
    try:
        web = procfile()["web"]
    except (Fail, KeyError) as exc:
        return report("", [f"no usable web process: {exc}"])
    problems: list[str] = []
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"ecos-procfile-{os.getpid()}.log"
    env = clean_env(PORT="0", ECOS_LOG__FORMAT="json")
    with out.open("w") as fh:
        proc = subprocess.Popen(["bash", "-c", web], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        fields = wait_started(proc, out, time.monotonic() + 15)
        if fields is None:
            tail = out.read_text(errors="replace").strip().splitlines()[-5:]
            return report("", [f"no `ecos started` line within 15 s (exit {proc.poll()}); output: {tail}"])
        addr = str(fields.get("addr", ""))
        host, _, port = addr.rpartition(":")
        need(host == "0.0.0.0", f"binds {addr}; a platform router needs 0.0.0.0:$PORT", problems)
        need(port.isdigit() and int(port) > 0, f"no port in addr {addr!r}", problems)
        hc = "not checked"
        if port.isdigit():
            status, _, _ = http_get(f"http://127.0.0.1:{port}/healthz")
            need(status == 200, f"/healthz answered {status}", problems)
            status, body, _ = http_get(f"http://127.0.0.1:{port}/readyz")
            need(status == 200, f"/readyz answered {status}: {body}", problems)
            if has_healthcheck(binary):
                ok = subprocess.run([str(binary), "healthcheck"], env=clean_env(PORT=port), capture_output=True, timeout=15)
                need(ok.returncode == 0, f"`ecos healthcheck` exited {ok.returncode} against a live instance", problems)
                bad = subprocess.run([str(binary), "healthcheck"], env=clean_env(PORT=str(free_port())), capture_output=True, timeout=15)
                need(bad.returncode == 1, f"`ecos healthcheck` exited {bad.returncode} with nothing listening (want 1)", problems)
                hc = "`ecos healthcheck` 0 when up, 1 when down"
            else:
                hc = "binary has no `healthcheck` subcommand yet (rebuild), not checked"
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=35)
        except subprocess.TimeoutExpired:
            problems.append("still running 35 s after SIGTERM")
            code = None
        need(code == 0, f"exit code {code} after SIGTERM (want 0)", problems)
        return report(f"`{web}` bound {addr}, /healthz and /readyz 200, {hc}, SIGTERM -> exit {code}", problems)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# heroku.yml, fly.toml, render.yaml


def cmd_heroku_yml(_args) -> int:
    problems: list[str] = []
    (doc,) = load_yaml(ROOT / "heroku.yml")
    dockerfile = ((doc or {}).get("build") or {}).get("docker", {}).get("web")
    need(dockerfile == "Dockerfile" and (ROOT / "Dockerfile").exists(), f"build.docker.web should be the top-level Dockerfile, is {dockerfile!r}", problems)
    run = (doc or {}).get("run")
    need(not run or "web" not in run, "a run.web command is started through /bin/sh, which the distroless image lacks; let the image's ENTRYPOINT run", problems)
    return report("build.docker.web = Dockerfile; web runs the image's ENTRYPOINT", problems)


def drain_of(env: dict) -> float:
    return float(env.get("ECOS_SHUTDOWN__DRAIN_TIMEOUT_SECS", 25))


def cmd_fly(_args) -> int:
    problems: list[str] = []
    doc = tomllib.loads((ROOT / "deploy/fly.toml").read_text(encoding="utf-8"))
    env = doc.get("env", {})
    drain = drain_of(env)
    need(doc.get("kill_signal") == "SIGTERM", f"kill_signal is {doc.get('kill_signal')!r} (Fly's default is SIGINT)", problems)
    kt = doc.get("kill_timeout")
    kt_s = float(re.sub(r"s$", "", str(kt))) if kt is not None and re.fullmatch(r"\d+(\.\d+)?s?", str(kt)) else None
    need(kt_s is not None and kt_s > drain, f"kill_timeout {kt!r} must exceed the drain timeout {drain:g}", problems)
    svc = doc.get("http_service", {})
    port = int(env.get("PORT", 3000))
    need(svc.get("internal_port") == port, f"http_service.internal_port {svc.get('internal_port')} != PORT {port}", problems)
    paths = [c.get("path") for c in svc.get("checks", [])] + [c.get("path") for c in doc.get("checks", {}).values()]
    need("/readyz" in paths, "no check on /readyz", problems)
    need("/healthz" in paths, "no check on /healthz", problems)
    need(env.get("ECOS_LOG__FORMAT") == "json", "[env] ECOS_LOG__FORMAT should be json", problems)
    return report(f"SIGTERM, kill_timeout {kt} > drain {drain:g} s, internal_port {svc.get('internal_port')}, checks {paths}", problems)


def cmd_render(_args) -> int:
    problems: list[str] = []
    (doc,) = load_yaml(ROOT / "deploy/render.yaml")
    services = doc.get("services", [])
    webs = [s for s in services if s.get("type") == "web"]
    kvs = {s.get("name"): s for s in services if s.get("type") in {"keyvalue", "redis"}}
    need(len(webs) == 1, f"expected one web service, found {len(webs)}", problems)
    for kv in kvs.values():
        need("ipAllowList" in kv, f"Key Value {kv.get('name')} needs ipAllowList (required by Render)", problems)
    if webs:
        web = webs[0]
        env = {e.get("key"): e for e in web.get("envVars", [])}
        drain = float((env.get("ECOS_SHUTDOWN__DRAIN_TIMEOUT_SECS") or {}).get("value", 25))
        need(web.get("runtime") == "docker" and web.get("dockerfilePath") == "./Dockerfile", "web should build ./Dockerfile (runtime: docker)", problems)
        need(web.get("healthCheckPath") == "/readyz", f"healthCheckPath is {web.get('healthCheckPath')!r}, want /readyz", problems)
        need(int(web.get("numInstances", 1)) >= 2, "numInstances should be at least 2", problems)
        need(float(web.get("maxShutdownDelaySeconds", 30)) > drain, "maxShutdownDelaySeconds must exceed the drain timeout", problems)
        src = (env.get("REDIS_URL") or {}).get("fromService") or {}
        need(src.get("name") in kvs and src.get("type") == kvs.get(src.get("name"), {}).get("type") and src.get("property") == "connectionString",
             f"REDIS_URL should come fromService (connectionString) of a declared Key Value, is {src}", problems)
    return report(f"web: /readyz, {webs[0].get('numInstances') if webs else '?'} instances, REDIS_URL from Key Value {list(kvs)}", problems)


# --------------------------------------------------------------------------
# Kubernetes


def cmd_kubernetes(_args) -> int:
    problems: list[str] = []
    kdir = ROOT / "deploy/kubernetes"
    docs = {p.name: load_yaml(p) for p in sorted(kdir.glob("*.yaml"))}
    kinds = {d["kind"]: (name, d) for name, ds in docs.items() for d in ds if d}
    for kind in ("Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "Kustomization"):
        need(kind in kinds, f"no {kind}", problems)
    if problems:
        return report("", problems)
    kust = kinds["Kustomization"][1]
    listed = set(kust.get("resources", []))
    manifests = {n for n in docs if n not in {"kustomization.yaml"}}
    need(listed == manifests - {"secret.example.yaml"},
         f"kustomization resources {sorted(listed)} should be every manifest but secret.example.yaml ({sorted(manifests - {'secret.example.yaml'})})", problems)
    dep = kinds["Deployment"][1]
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (ctr,) = spec["containers"]
    env = {e["name"]: e for e in ctr.get("env", [])}
    drain = float(env.get("ECOS_SHUTDOWN__DRAIN_TIMEOUT_SECS", {}).get("value", 25))
    delay = float(env.get("ECOS_SHUTDOWN__DELAY_SECS", {}).get("value", 0))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    need(dep["spec"].get("replicas") == 3, "Deployment should run 3 replicas", problems)
    need(grace > drain, f"terminationGracePeriodSeconds {grace} must exceed the drain timeout {drain:g}", problems)
    need(0 < delay < drain, f"ECOS_SHUTDOWN__DELAY_SECS {delay:g} should be a few seconds, below the drain {drain:g}", problems)
    need(env.get("ECOS_INSTANCE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
         "ECOS_INSTANCE_ID should come from metadata.name (downward API)", problems)
    secret_ref = env.get("REDIS_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
    secret = kinds["Secret"][1]
    need(secret_ref.get("name") == secret["metadata"]["name"] and secret_ref.get("key") in (secret.get("stringData") or secret.get("data") or {}),
         f"REDIS_URL secretKeyRef {secret_ref} does not match secret.example.yaml", problems)
    need((ctr.get("livenessProbe") or {}).get("httpGet", {}).get("path") == "/healthz", "liveness probe should GET /healthz", problems)
    need((ctr.get("readinessProbe") or {}).get("httpGet", {}).get("path") == "/readyz", "readiness probe should GET /readyz", problems)
    res = ctr.get("resources", {})
    need(res.get("requests", {}).get("cpu") and res.get("limits", {}).get("memory"), "set CPU requests (the HPA needs them) and a memory limit", problems)
    psc, csc = spec.get("securityContext", {}), ctr.get("securityContext", {})
    need(psc.get("runAsNonRoot") or csc.get("runAsNonRoot"), "runAsNonRoot is not set", problems)
    need(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true", problems)
    need(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false", problems)
    need("ALL" in (csc.get("capabilities") or {}).get("drop", []), "capabilities do not drop ALL", problems)
    svc = kinds["Service"][1]
    need(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service selector does not match the pod labels", problems)
    pdb = kinds["PodDisruptionBudget"][1]
    need(pdb["apiVersion"] == "policy/v1", "PDB should be policy/v1", problems)
    need(all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()), "PDB selector does not match the pod labels", problems)
    hpa = kinds["HorizontalPodAutoscaler"][1]
    need(hpa["apiVersion"] == "autoscaling/v2", "HPA should be autoscaling/v2", problems)
    need(hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "HPA does not target the Deployment", problems)
    need(any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"].get("metrics", [])), "HPA does not scale on CPU", problems)
    ing = kinds["Ingress"][1]
    ann = ing["metadata"].get("annotations", {})
    p = "nginx.ingress.kubernetes.io/"
    need(ann.get(p + "affinity") == "cookie", "Ingress lacks cookie affinity", problems)
    need(ann.get(p + "affinity-mode") == "persistent", "Ingress affinity-mode should be persistent", problems)
    need(ann.get(p + "session-cookie-name"), "Ingress lacks session-cookie-name", problems)
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        need(int(ann.get(p + key, 60)) >= 3600, f"Ingress {key} should be 3600 for WebSockets", problems)
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    need(backend["name"] == svc["metadata"]["name"], "Ingress does not route to the Service", problems)
    return report(f"grace {grace} s > drain {drain:g} s (delay {delay:g} s), probes /healthz + /readyz, cookie affinity, HPA/PDB match, kustomization lists {len(listed)} resources", problems)


# --------------------------------------------------------------------------
# docker compose + HAProxy


def cmd_compose(args) -> int:
    """Consistency of the compose file (as `docker-compose config` resolved it,
    JSON on stdin) with the Dockerfile and haproxy.cfg."""
    problems: list[str] = []
    cfg = json.load(sys.stdin)
    services = cfg.get("services", {})
    ecos = {n: s for n, s in services.items() if n.startswith("ecos")}
    need(sorted(ecos) == ["ecos1", "ecos2", "ecos3"], f"expected services ecos1..ecos3, found {sorted(ecos)}", problems)
    ids = set()
    for name, svc in ecos.items():
        build = svc.get("build", {})
        need(Path(build.get("context", "")).resolve() == ROOT and build.get("dockerfile") == "Dockerfile",
             f"{name} should build the top-level Dockerfile", problems)
        env = svc.get("environment", {})
        ids.add(env.get("ECOS_INSTANCE_ID"))
        need(str(env.get("REDIS_URL", "")).startswith("redis://redis:"), f"{name} REDIS_URL should point at the redis service", problems)
        grace = svc.get("stop_grace_period", "10s")
        secs = float(re.sub(r"s$", "", grace)) if re.fullmatch(r"\d+(\.\d+)?s", grace) else 0
        need(secs > drain_of(env), f"{name} stop_grace_period {grace} must exceed its drain timeout", problems)
    need(len(ids) == 3 and None not in ids, f"each instance needs its own ECOS_INSTANCE_ID, got {ids}", problems)
    need("redis" in services, "no redis service", problems)
    hap = services.get("haproxy", {})
    henv = hap.get("environment", {})
    for n in (1, 2, 3):
        need(henv.get(f"ECOS{n}_ADDR") == f"ecos{n}:3000", f"haproxy ECOS{n}_ADDR should be ecos{n}:3000", problems)
    ports = hap.get("ports", [])
    need(any(str(p.get("published")) == str(henv.get("HAPROXY_PORT")) == "8080" for p in ports), "haproxy should publish 8080 = HAPROXY_PORT", problems)
    mounts = [v for v in hap.get("volumes", []) if str(v.get("source", "")).endswith("haproxy.cfg")]
    need(mounts and Path(mounts[0]["source"]).resolve() == ROOT / "deploy/compose/haproxy.cfg", "haproxy should mount deploy/compose/haproxy.cfg", problems)
    cfg_text = (ROOT / "deploy/compose/haproxy.cfg").read_text(encoding="utf-8")
    for n in (1, 2, 3):
        need(f"presetenv ECOS{n}_ADDR ecos{n}:3000" in cfg_text, f"haproxy.cfg default for ECOS{n}_ADDR should be ecos{n}:3000", problems)
    return report(f"services {sorted(services)}; 3 instances with ids {sorted(i for i in ids if i)}; haproxy on 8080", problems)


def ws_upgrade(port: int, cookie: str | None) -> str:
    """Raw WebSocket handshake through HAProxy; returns the status line plus
    the first text frame (the Engine.IO open packet)."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    req = (f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    if cookie:
        req += f"Cookie: {cookie}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((req + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n")[0].decode()
        if " 101 " not in status + " ":
            return status
        while len(rest) < 2:
            rest += s.recv(4096)
        length = rest[1] & 0x7F
        offset = 2
        if length == 126:
            while len(rest) < 4:
                rest += s.recv(4096)
            length, offset = int.from_bytes(rest[2:4], "big"), 4
        while len(rest) < offset + length:
            rest += s.recv(4096)
        return status + " " + rest[offset: offset + length].decode("utf-8", "replace")


def cmd_haproxy_smoke(args) -> int:
    """haproxy.cfg, outside Docker, in front of three ecos processes on
    127.0.0.1 (started by tests/support/launcher.mjs): sticky long-polling,
    WebSocket upgrade, health checks."""
    haproxy = args[0] if args else "haproxy"
    binary = ROOT / "target/release/ecos"
    if not binary.exists():
        print("target/release/ecos not built; not run")
        return SKIP
    if not launcher.node_bin():
        print("node not found (the ecos launcher needs it); not run")
        return SKIP
    try:
        ecos = launcher.Launch([f"smoke{n}" for n in (1, 2, 3)], binary=binary)
    except RuntimeError as exc:
        return report("", [str(exc)])
    hp: subprocess.Popen | None = None
    hlog = Path(os.environ.get("TMPDIR", "/tmp")) / f"haproxy-smoke-{os.getpid()}.log"
    with ecos:
        try:
            ports = [server.port for server in ecos.servers]
            hport = free_port()
            henv = clean_env(HAPROXY_PORT=str(hport), **{f"ECOS{n}_ADDR": f"127.0.0.1:{ports[n - 1]}" for n in (1, 2, 3)})
            henv.pop("HAPROXY_DNS", None)
            with hlog.open("w") as fh:
                hp = subprocess.Popen([haproxy, "-db", "-f", str(ROOT / "deploy/compose/haproxy.cfg")], env=henv, stdout=fh, stderr=subprocess.STDOUT)
            return haproxy_smoke(ecos, hp, hport, hlog)
        finally:
            if hp is not None and hp.poll() is None:
                hp.terminate()
                try:
                    hp.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    hp.kill()
                    hp.wait()
            hlog.unlink(missing_ok=True)


def haproxy_smoke(ecos: launcher.Launch, hp: subprocess.Popen, hport: int, hlog: Path) -> int:
    """The checks of cmd_haproxy_smoke, once ecos and haproxy run."""
    problems: list[str] = []
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", hport), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or hp.poll() is not None:
                return report("", [f"haproxy did not listen on {hport}: {hlog.read_text(errors='replace')[-400:]}"])
            time.sleep(0.1)
    base = f"http://127.0.0.1:{hport}"
    # 1. Long-polling handshake: HAProxy adds the SERVERID cookie.
    status, body, headers = http_get(f"{base}/socket.io/?EIO=4&transport=polling")
    need(status == 200 and '"sid"' in body, f"handshake through HAProxy: {status} {body[:80]}", problems)
    cookies = [c.split(";")[0] for c in headers.get_all("Set-Cookie") or [] if c.startswith("SERVERID=")]
    need(cookies, "no SERVERID cookie on the handshake response", problems)
    if problems:
        return report("", problems)
    cookie = cookies[0]
    server = cookie.split("=", 1)[1]
    sid = json.loads(body[1:])["sid"]
    # 2. The next requests, with the cookie, reach the same instance.
    req = urllib.request.Request(f"{base}/socket.io/?EIO=4&transport=polling&sid={sid}", data=b"40", headers={"Cookie": cookie}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        need(resp.status == 200, f"POST with the cookie: {resp.status}", problems)
    status, body, _ = http_get(f"{base}/socket.io/?EIO=4&transport=polling&sid={sid}", {"Cookie": cookie}, timeout=10)
    m = re.search(r'"instance":"([^"]+)"', body)
    expected = "smoke" + server.removeprefix("ecos")
    need(status == 200 and m and m.group(1) == expected, f"poll with the cookie {cookie}: {status} {body[:120]} (want welcome from {expected})", problems)
    # 3. WebSocket upgrade passes through.
    ws = ws_upgrade(hport, None)
    need(" 101 " in ws and '"sid"' in ws, f"WebSocket upgrade through HAProxy: {ws[:120]}", problems)
    # 4. Health checks: a drained instance leaves the pool, and requests
    #    pinned to it are redispatched.
    victim = int(server.removeprefix("ecos"))
    exit_status = ecos.stop(f"smoke{victim}", grace_s=30)
    need(exit_status["signal"] != "SIGKILL", f"ecos{victim} was still running 30 s after SIGTERM", problems)
    deadline = time.monotonic() + 10
    moved = None
    while time.monotonic() < deadline:
        try:
            status, body, _ = http_get(f"{base}/readyz", {"Cookie": cookie})
            if status == 200 and f'"smoke{victim}"' not in body:
                moved = body
                break
        except OSError:
            pass
        time.sleep(0.3)
    need(moved is not None, f"requests pinned to the stopped ecos{victim} were not redispatched within 10 s", problems)
    # Checks run every second and need 2 failures.
    deadline = time.monotonic() + 10
    while f"ecos{victim} is DOWN" not in hlog.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)
    need(f"ecos{victim} is DOWN" in hlog.read_text(errors="replace"), f"HAProxy's health check did not mark ecos{victim} DOWN within 10 s", problems)
    return report(f"cookie {cookie} pins polling to {expected}; WebSocket 101; ecos{victim} stopped -> marked DOWN, its clients redispatched", problems)


COMMANDS = {
    "dockerfile-layers": cmd_dockerfile_layers,
    "toolchain": cmd_toolchain,
    "no-toolchain-file": cmd_no_toolchain_file,
    "procfile": cmd_procfile,
    "procfile-run": cmd_procfile_run,
    "rustconfig": cmd_rustconfig,
    "heroku-yml": cmd_heroku_yml,
    "fly": cmd_fly,
    "render": cmd_render,
    "kubernetes": cmd_kubernetes,
    "compose": cmd_compose,
    "haproxy-smoke": cmd_haproxy_smoke,
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: {sys.argv[0]} {{{','.join(COMMANDS)}}} [ARGS]", file=sys.stderr)
        return 2
    try:
        return COMMANDS[sys.argv[1]](sys.argv[2:])
    except Exception as exc:  # a crash is a failed check, with its reason
        print(f"check crashed: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
