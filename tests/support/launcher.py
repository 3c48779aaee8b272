"""ecos processes for Python callers (the python-socketio suite and
scripts/deploy_checks.py), started by tests/support/launcher.mjs in CLI mode.

`Launch(ids, ...)` runs `node tests/support/launcher.mjs`, which starts the
instances and prints one JSON line once they are all ready; the instances live
as long as that launcher does. Closing its stdin (`Launch.close()`, or the end
of a `with` block) stops them all, and so does this process dying. Standard
library only; needs `node` ($NODE, or on PATH).
"""

from __future__ import annotations

import collections
import json
import os
import queue
import secrets
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = REPO_ROOT / "tests" / "support" / "launcher.mjs"
ECOS_BIN = Path(os.environ.get("ECOS_BIN") or REPO_ROOT / "target" / "release" / "ecos").resolve()
REDIS_URL = os.environ.get("ECOS_TEST_REDIS_URL") or "redis://127.0.0.1:6379"
# The launcher bounds start-up itself (10 s for the start-up line, 10 s more
# for /readyz); this only guards against the launcher hanging.
LAUNCH_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


def node_bin() -> str | None:
    return os.environ.get("NODE") or shutil.which("node")


def unique_prefix(tag: str) -> str:
    """A fresh Redis key prefix, so parallel runs and clusters never see each other."""
    return f"ecos-{tag}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass
class Server:
    """One running ecos instance."""

    id: str
    port: int
    pid: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self, lines: int = 60) -> str:
        """The last `lines` lines of its output."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except OSError as exc:
            text = [f"(no log: {exc})"]
        return f"--- {self.id} output ---\n" + "\n".join(text)


class Launch:
    """The instances `ids`, running under one launcher process.

    `env` is added to each instance's environment; with `redis_url` they form
    a cluster under `redis_prefix` (a fresh one by default). `binary` defaults to
    $ECOS_BIN or target/release/ecos. Raises RuntimeError, with the
    launcher's output, if they do not all start and become ready.
    """

    def __init__(
        self,
        ids: list[str],
        env: dict[str, str] | None = None,
        *,
        binary: Path | str = ECOS_BIN,
        redis_url: str | None = None,
        redis_prefix: str | None = None,
    ):
        node = node_bin()
        if not node:
            raise RuntimeError("node not found: the ecos launcher (tests/support/launcher.mjs) needs Node.js 20+")
        if not Path(binary).exists():
            raise RuntimeError(f"{binary} not found: run `cargo build --release` or set ECOS_BIN")
        self._logdir = tempfile.TemporaryDirectory(prefix="ecos-launch-")
        args = [node, str(LAUNCHER), "--ids", ",".join(ids), "--bin", str(binary), "--log-dir", self._logdir.name]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        if redis_url:
            args += ["--redis-url", redis_url, "--redis-prefix", redis_prefix or unique_prefix("py")]
        self._proc = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        # Both pipes are read on threads so the launcher never blocks on them.
        self._events: queue.Queue = queue.Queue()
        self._stderr: collections.deque = collections.deque(maxlen=200)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            first = self._events.get(timeout=LAUNCH_TIMEOUT_S)
        except queue.Empty:
            first = {"error": f"no answer from the launcher within {LAUNCH_TIMEOUT_S:g} s"}
        if "instances" not in first:
            self.close()
            raise RuntimeError(f"ecos did not start: {first.get('error')}\n{self.stderr()}")
        self.redis_prefix: str | None = first.get("redis_prefix")
        self.servers = [Server(i["id"], i["port"], i["pid"], Path(i["log"])) for i in first["instances"]]

    def _read_stdout(self) -> None:
        for line in self._proc.stdout:
            try:
                self._events.put(json.loads(line))
            except ValueError:
                self._stderr.append(f"(launcher stdout) {line.rstrip()}")
        self._events.put({"error": f"the launcher exited (status {self._proc.wait()})"})

    def _read_stderr(self) -> None:
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    def stderr(self) -> str:
        """What the launcher said on stderr (start-up failures, unexpected exits, with log tails)."""
        return "\n".join(self._stderr)

    def stop(self, server_id: str, grace_s: float = STOP_GRACE_S) -> dict:
        """SIGTERM to one instance (SIGKILL after `grace_s`); waits for its
        exit and returns `{"code", "signal"}`."""
        return self._signal(f"stop {server_id} {grace_s:g}", server_id, grace_s + 5)

    def kill(self, server_id: str) -> dict:
        """SIGKILL to one instance, like a crash; waits for its exit."""
        return self._signal(f"kill {server_id}", server_id, 10)

    def _signal(self, command: str, server_id: str, timeout_s: float) -> dict:
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        while True:
            event = self._events.get(timeout=timeout_s)
            if event.get("event") == "exited" and event.get("id") == server_id:
                return {"code": event.get("code"), "signal": event.get("signal")}
            if "error" in event:
                raise RuntimeError(f"{event['error']}\n{self.stderr()}")

    def close(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stops every instance still running (the launcher's SIGTERM, then SIGKILL)."""
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(grace_s + 5)
            except subprocess.TimeoutExpired:
                # SIGTERM makes the launcher stop the instances itself.
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        self._logdir.cleanup()

    def __enter__(self) -> Launch:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
