"""Starting and stopping ecos processes for the Python client suite.

Each server is the release binary ($ECOS_BIN, default target/release/ecos),
started with PORT=0 and JSON logs; its port is read from the start-up line
(`fields.addr` of the line whose `fields.message` is "ecos started"), and it
counts as up once `/readyz` answers 200.
"""

from __future__ import annotations

import collections
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ECOS_BIN = Path(os.environ.get("ECOS_BIN") or REPO_ROOT / "target" / "release" / "ecos").resolve()
REDIS_URL = os.environ.get("ECOS_TEST_REDIS_URL") or "redis://127.0.0.1:6379"
STARTUP_TIMEOUT_S = 10.0


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment minus anything that would change what ecos does behind
    the test's back (a stray REDIS_URL, $DYNO, PORT, ECOS_*), plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ECOS_") and k not in ("REDIS_URL", "DYNO", "PORT")
    }
    env.update({"PORT": "0", "ECOS_LOG__FORMAT": "json"})
    env.update(extra)
    return env


@dataclass
class Server:
    """One running ecos process."""

    id: str
    process: subprocess.Popen
    port: int = 0
    lines: collections.deque = field(default_factory=lambda: collections.deque(maxlen=60))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return f"--- {self.id} output ---\n" + "\n".join(self.lines)

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(instance_id: str, env: dict[str, str] | None = None) -> Server:
    """Starts ecos and returns once it printed its start-up line and /readyz is 200."""
    if not ECOS_BIN.exists():
        raise RuntimeError(f"{ECOS_BIN} not found: run `cargo build --release` or set ECOS_BIN")
    process = subprocess.Popen(
        [str(ECOS_BIN)],
        cwd=REPO_ROOT,
        env=server_env({"ECOS_INSTANCE_ID": instance_id, **(env or {})}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    server = Server(instance_id, process)
    started = threading.Event()

    def read() -> None:
        # Read for the whole life of the process so it never blocks on a full pipe.
        for line in process.stdout:
            line = line.rstrip("\n")
            server.lines.append(line)
            if started.is_set():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            fields = entry.get("fields") or {}
            if fields.get("message") == "ecos started" and "addr" in fields:
                match = re.search(r":(\d+)$", str(fields["addr"]))
                if match:
                    server.port = int(match.group(1))
                    started.set()

    threading.Thread(target=read, name=f"ecos-{instance_id}-stdout", daemon=True).start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not started.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{instance_id}: no start-up line (exit code {process.poll()})\n{server.logs()}")
    wait_ready(server, deadline)
    return server


def wait_ready(server: Server, deadline: float) -> None:
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=1) as res:
                if res.status == 200:
                    return
                last = str(res.status)
        except urllib.error.HTTPError as err:
            last = f"{err.code} {err.read().decode(errors='replace')}"
        except OSError as err:
            last = str(err)
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{server.id}: /readyz never answered 200 (last: {last})\n{server.logs()}")


def unique_prefix() -> str:
    return f"ecos-py-{os.getpid()}-{secrets.token_hex(4)}"


def start_all(specs: list[tuple[str, dict[str, str]]]) -> list[Server]:
    """Starts servers one after another; stops the ones already up if one fails."""
    servers: list[Server] = []
    try:
        for instance_id, env in specs:
            servers.append(start_server(instance_id, env))
    except Exception:
        for server in servers:
            server.stop()
        raise
    return servers


def start_cluster(ids: list[str], env: dict[str, str] | None = None) -> list[Server]:
    """`len(ids)` instances sharing the machine's Redis under a prefix of their own."""
    member_env = {
        "REDIS_URL": REDIS_URL,
        "ECOS_REDIS__PREFIX": unique_prefix(),
        "ECOS_REDIS__STATS_INTERVAL_SECS": "0.2",
        **(env or {}),
    }
    return start_all([(i, member_env) for i in ids])
