"""Webhooks (docs/webhooks.md) with python-socketio clients against real ecos
processes and a real HTTP backend started by this module.

The backend (`Backend`) is `http.server` on a thread. It checks EVERY request
the way docs/webhooks.md tells a backend to: the headers, then the signature
(HMAC-SHA256 over "<t>.<raw body>", compared in constant time, `t` at most
5 minutes away), with its own code below, not ecos's. A request that fails a
check is answered 401 and recorded, and every test fails if any was (the
autouse `signatures_all_verified`). It records the verified ones and answers
from a script: allow or deny a connection by its session cookie, answer an
event with JSON, be slow, fail with 500, answer something that is not JSON.

Instances: `hooks` (connect hook with the cookie forwarded, events,
disconnect notifications, timeout_ms 300); `fail_open` (its backend is a
closed port, `webhooks.fail_open = true`); `hung` (its backend accepts TCP
connections and never answers: the broadcast path must not notice); and
`example` (examples/webhooks/app.py, the Flask backend of the docs, run for
real).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib.util
import json
import re
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest
import socketio

from conftest import EVENT_TIMEOUT_S, close
from launcher import ECOS_BIN, REPO_ROOT, Launch, Server

SECRET = "py-webhooks-secret-5f0c1a9e7d3b4c2a"
# Short, so the slow-backend tests stay short; the backend's "slow" is well past it.
TIMEOUT_MS = 300
SLOW_S = 1.0
SIGNATURE_WINDOW_S = 300
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Events the `hooks` instance forwards (see Backend.answer_event).
FORWARDED = "echo,slow,fail,text,empty,whoami"


# ---------------------------------------------------------------------------
# The signature, as docs/webhooks.md describes it (written here, not imported)
# ---------------------------------------------------------------------------


class BadSignature(Exception):
    pass


def verify_signature(secret: bytes, header: str | None, body: bytes, now: float | None = None) -> int:
    """Checks `X-Ecos-Signature: t=<unix seconds>,v1=<hex>` against `body`;
    returns t, or raises BadSignature saying why."""
    if not header:
        raise BadSignature("no X-Ecos-Signature")
    fields = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise BadSignature(f"malformed part {part!r}")
        fields[name] = value
    t, v1 = fields.get("t", ""), fields.get("v1", "")
    if not t.isdigit():
        raise BadSignature(f"t is not a unix time: {t!r}")
    if not HEX64.match(v1):
        raise BadSignature(f"v1 is not 64 lowercase hex digits: {v1!r}")
    now = time.time() if now is None else now
    if abs(now - int(t)) > SIGNATURE_WINDOW_S:
        raise BadSignature(f"t={t} is more than {SIGNATURE_WINDOW_S} s from now ({now:.0f})")
    expected = hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, v1):
        raise BadSignature("v1 does not match the body")
    return int(t)


def sign(secret: bytes, body: bytes, t: int) -> str:
    return f"t={t},v1=" + hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_the_verifier_itself_rejects_what_it_should():
    """The backend's checks are only worth what they refuse."""
    key, body, now = b"k", b'{"type":"event"}', 1_800_000_000
    assert verify_signature(key, sign(key, body, now), body, now) == now
    assert verify_signature(key, sign(key, body, now - 299), body, now) == now - 299
    refused = {
        "tampered body": (sign(key, body, now), body + b" ", now),
        "other key": (sign(b"x", body, now), body, now),
        "older than 5 min": (sign(key, body, now - 301), body, now),
        "no t": ("v1=" + "0" * 64, body, now),
        "uppercase hex": (f"t={now},v1=" + sign(key, body, now).split("v1=")[1].upper(), body, now),
        "missing": (None, body, now),
    }
    for why, (header, raw, at) in refused.items():
        with pytest.raises(BadSignature):
            verify_signature(key, header, raw, at)
            pytest.fail(f"accepted: {why}")


# ---------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------


@dataclass
class Delivery:
    """One verified request from ecos."""

    kind: str  # X-Ecos-Event
    delivery: str  # X-Ecos-Delivery
    t: int  # from the signature
    body: dict
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)

    @property
    def sid(self) -> str:
        return self.body["socket"]["id"]


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # bytes as they are; anything else as JSON; None: empty
    delay_s: float = 0.0


class Backend:
    """The test's webhook receiver on 127.0.0.1, one thread per request."""

    def __init__(self, secret: str, script: Callable[["Backend", Delivery], Answer] | None = None):
        self.secret = secret.encode()
        self.script = script or (lambda _backend, _d: Answer(body={"ok": True}))
        self.deliveries: list[Delivery] = []
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        # Connect hook: cookie value -> answer body.
        self.sessions: dict[str, dict] = {}
        # Socket ids whose next disconnect notification gets a 500.
        self.fail_disconnect_once: set[str] = set()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as ecos's pool expects

            def do_POST(self):  # noqa: N802 - the http.server API
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    delivery = backend.check(self.path, dict(self.headers.items()), raw)
                except BadSignature as exc:
                    with backend.lock:
                        backend.rejected.append(f"{self.headers.get('X-Ecos-Event')}: {exc}")
                    return self.reply(Answer(401, b"bad signature"))
                with backend.lock:
                    backend.deliveries.append(delivery)
                self.reply(backend.script(backend, delivery))

            def reply(self, answer: Answer):
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                body = answer.body
                if body is None:
                    body = b""
                elif not isinstance(body, bytes):
                    body = json.dumps(body).encode()
                try:
                    self.send_response(answer.status)
                    if answer.status != 204:  # which has no body, nor a length
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # ecos gave up waiting (timeout): nobody to answer

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/ecos/hooks"

    def check(self, path: str, headers: dict[str, str], raw: bytes) -> Delivery:
        """Everything docs/webhooks.md promises about a request; BadSignature if not."""
        h = {k.lower(): v for k, v in headers.items()}
        if path != "/ecos/hooks":
            raise BadSignature(f"posted to {path}")
        t = verify_signature(self.secret, h.get("x-ecos-signature"), raw)
        kind, delivery = h.get("x-ecos-event"), h.get("x-ecos-delivery", "")
        if kind not in ("connect", "disconnect", "event"):
            raise BadSignature(f"X-Ecos-Event {kind!r}")
        if not HEX32.match(delivery):
            raise BadSignature(f"X-Ecos-Delivery {delivery!r}")
        if not h.get("content-type", "").startswith("application/json"):
            raise BadSignature(f"Content-Type {h.get('content-type')!r}")
        if not h.get("user-agent", "").startswith("ecos/"):
            raise BadSignature(f"User-Agent {h.get('user-agent')!r}")
        body = json.loads(raw)
        if body.get("type") != kind:
            raise BadSignature(f"body type {body.get('type')!r} under X-Ecos-Event {kind}")
        sock = body.get("socket")
        if not isinstance(sock, dict) or not isinstance(sock.get("id"), str) or not isinstance(sock.get("instance"), str):
            raise BadSignature(f"socket {sock!r}")
        if not (sock.get("user") is None or isinstance(sock.get("user"), str)):
            raise BadSignature(f"socket.user {sock.get('user')!r}")
        return Delivery(kind, delivery, t, body, h)

    def of(self, kind: str, sid: str | None = None, event: str | None = None) -> list[Delivery]:
        with self.lock:
            return [
                d
                for d in self.deliveries
                if d.kind == kind and (sid is None or d.sid == sid) and (event is None or d.body.get("event") == event)
            ]

    async def wait(self, kind: str, sid: str | None = None, event: str | None = None, count: int = 1, timeout: float = EVENT_TIMEOUT_S) -> list[Delivery]:
        """The deliveries of that kind once there are at least `count` (polled: the
        test's event loop must keep running for its clients)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.of(kind, sid, event)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} {kind} request(s) for {sid or 'any socket'} within {timeout} s, wanted {count}")
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def script(backend: Backend, d: Delivery) -> Answer:
    """The `hooks` instance's backend."""
    if d.kind == "connect":
        cookie = d.body["headers"].get("cookie", "")
        token = cookie.partition("session=")[2].split(";")[0] if "session=" in cookie else None
        if token is None:
            return Answer(body={"allow": False, "reason": "no session"})
        if token == "slow":
            return Answer(body={"allow": True}, delay_s=SLOW_S)
        if token == "crash":
            return Answer(500, b"internal error")
        if token == "not-json":
            return Answer(body=b"<html>hello</html>")
        if token == "no-allow":
            return Answer(body={"user": "alice"})
        return Answer(body=backend.sessions.get(token, {"allow": False}))
    if d.kind == "disconnect":
        if d.sid in backend.fail_disconnect_once:
            backend.fail_disconnect_once.discard(d.sid)
            return Answer(500, b"try again")
        return Answer(body={"ok": True})
    name, args = d.body["event"], d.body["args"]
    if name == "echo":
        return Answer(body={"ok": True, "args": args})
    if name == "whoami":
        return Answer(body={"ok": True, "user": d.body["socket"]["user"], "id": d.sid})
    if name == "slow":
        return Answer(body={"ok": True}, delay_s=SLOW_S)
    if name == "fail":
        return Answer(500, b'{"ok": false, "error": "database down"}')
    if name == "text":
        return Answer(body=b"all good")
    if name == "empty":
        return Answer(204)
    return Answer(404, b"unknown event")


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    b = Backend(SECRET, script)
    b.sessions.update(
        {
            "s-alice": {"allow": True, "user": "alice", "rooms": ["team:42"]},
            "s-bob": {"allow": True, "user": "bob"},
            "s-anon": {"allow": True},
            "s-banned": {"allow": False, "reason": "banned"},
        }
    )
    yield b
    b.close()


@pytest.fixture(autouse=True)
def signatures_all_verified(request):
    """Every request any backend of this module got passed its checks."""
    backends = [request.getfixturevalue(n) for n in ("backend",) if n in request.fixturenames]
    yield
    for b in backends:
        assert not b.rejected, f"the backend refused requests: {b.rejected}"


def hook_env(url: str, **extra: str) -> dict[str, str]:
    env = {"ECOS_WEBHOOKS__URL": url, "ECOS_WEBHOOKS__SECRET": SECRET, "ECOS_WEBHOOKS__TIMEOUT_MS": str(TIMEOUT_MS)}
    env.update({f"ECOS_WEBHOOKS__{k.upper()}": v for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def hooks(backend) -> Server:
    env = hook_env(backend.url, connect="true", forward_headers="cookie", events=FORWARDED, disconnect="true")
    with Launch(["py-hooks"], env) as launch:
        yield launch.servers[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fail_open() -> Server:
    env = hook_env(f"http://127.0.0.1:{closed_port()}/hooks", connect="true", fail_open="true", events="echo", disconnect="true")
    with Launch(["py-hooks-open"], env) as launch:
        yield launch.servers[0]


@pytest.fixture(scope="module")
def hung():
    """An instance whose backend accepts connections (the kernel's backlog does) and never answers."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(1024)
    env = hook_env(
        f"http://127.0.0.1:{hole.getsockname()[1]}/hooks",
        events="echo",
        disconnect="true",
        timeout_ms="1000",
        max_concurrency="2",
    )
    try:
        with Launch(["py-hooks-hung"], env) as launch:
            yield launch.servers[0]
    finally:
        hole.close()


@pytest.fixture
async def opened():
    """Closes, after the test, every client a test opened through `attempt`."""
    clients: list[socketio.AsyncClient] = []
    yield clients
    await asyncio.gather(*(close(c) for c in clients))


async def attempt(server: Server, opened: list, *, cookie: str | None = None, auth: dict | None = None, headers: dict | None = None, transport: str = "websocket"):
    """Connects; returns (client, welcome) or (None, the connect_error message)."""
    sio = socketio.AsyncClient(reconnection=False)
    welcome: asyncio.Queue = asyncio.Queue()
    refusal: asyncio.Queue = asyncio.Queue()
    sio.on("welcome", lambda data: welcome.put_nowait(data))
    sio.on("connect_error", lambda data: refusal.put_nowait(data))
    headers = dict(headers or {})
    if cookie is not None:
        headers["Cookie"] = cookie
    try:
        await sio.connect(server.url, transports=[transport], auth=auth, headers=headers, wait_timeout=EVENT_TIMEOUT_S)
    except socketio.exceptions.ConnectionError:
        data = await asyncio.wait_for(refusal.get(), EVENT_TIMEOUT_S)
        await close(sio)
        return None, data.get("message") if isinstance(data, dict) else data
    opened.append(sio)
    return sio, await asyncio.wait_for(welcome.get(), EVENT_TIMEOUT_S)


async def call(sio: socketio.AsyncClient, event: str, *args):
    return await sio.call(event, args if len(args) > 1 else (args[0] if args else None), timeout=EVENT_TIMEOUT_S)


def metric(server: Server, name: str, **labels: str) -> float:
    """The value of one series of /metrics (0 when absent)."""
    text = urllib.request.urlopen(f"{server.url}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------------------
# Connect hook
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_session_cookie_lets_in_as_the_backends_user_in_its_rooms(hooks, backend, opened, transport):
    sio, welcome = await attempt(hooks, opened, cookie="session=s-alice", auth={"token": "not-for-the-backend", "plan": "pro"}, transport=transport)
    assert sio is not None, f"refused: {welcome}"
    sid = sio.get_sid("/")
    assert welcome == {"id": sid, "instance": hooks.id, "user": "alice"}

    (hook,) = backend.of("connect", sid)
    assert hook.body["socket"] == {"id": sid, "instance": hooks.id, "user": None}
    assert hook.body["auth"] == {"plan": "pro"}, "the token is never sent to the backend"
    assert hook.body["headers"] == {"cookie": "session=s-alice"}, "only the forwarded headers"
    assert hook.body["address"] == "127.0.0.1"

    members = await call(sio, "room:members", "team:42")
    assert members["ok"] is True and sid in members["members"], members
    assert members["users"] == ["alice"], members
    # user:alice holds the socket, and stays reserved.
    assert await call(sio, "join", "user:alice") == {"ok": False, "error": "forbidden"}


async def test_without_rooms_or_user_in_the_answer(hooks, opened):
    sio, welcome = await attempt(hooks, opened, cookie="session=s-bob")
    assert welcome["user"] == "bob"
    sio2, welcome2 = await attempt(hooks, opened, cookie="session=s-anon")
    assert sio2 is not None and welcome2["user"] is None


async def test_connect_with_a_token_only_and_behind_a_router(hooks, backend, opened):
    sio, _ = await attempt(hooks, opened, cookie="session=s-bob", auth={"token": "secret-token"}, headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.4"})
    (hook,) = backend.of("connect", sio.get_sid("/"))
    # python-socketio always sends an auth object (`{}` when none is given).
    assert hook.body["auth"] == {}
    assert "secret-token" not in json.dumps(hook.body)
    assert hook.body["address"] == "198.51.100.4", "the rightmost X-Forwarded-For entry"


@pytest.mark.parametrize(
    "cookie, message",
    [
        (None, "unauthorized: no session"),
        ("session=s-banned", "unauthorized: banned"),
        ("session=unknown", "unauthorized: denied"),
        ("session=slow", "unauthorized: backend unavailable"),
        ("session=crash", "unauthorized: backend unavailable"),
        ("session=not-json", "unauthorized: backend error"),
        ("session=no-allow", "unauthorized: backend error"),
    ],
    ids=["no-cookie", "reason", "no-reason", "timeout", "500", "not-json", "no-allow"],
)
async def test_refusals_reach_connect_error(hooks, backend, opened, cookie, message):
    started = time.monotonic()
    sio, seen = await attempt(hooks, opened, cookie=cookie)
    assert sio is None, "should have been refused"
    assert seen == message
    if cookie == "session=slow":
        assert time.monotonic() - started < SLOW_S, "refused at timeout_ms, not when the backend answered"


async def test_fail_open_lets_in_anonymously_when_the_backend_is_down(fail_open, opened):
    sio, welcome = await attempt(fail_open, opened, cookie="session=s-alice")
    assert sio is not None, f"refused: {welcome}"
    assert welcome == {"id": sio.get_sid("/"), "instance": fail_open.id, "user": None}
    assert await call(sio, "echo", 1) == {"ok": False, "error": "backend unavailable"}
    assert metric(fail_open, "ecos_webhook_requests_total", type="connect", outcome="unavailable") >= 1


# ---------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------


async def test_a_forwarded_event_is_acked_with_the_backends_json(hooks, backend, opened):
    sio, _ = await attempt(hooks, opened, cookie="session=s-alice")
    sid = sio.get_sid("/")
    before = metric(hooks, "ecos_webhook_requests_total", type="event", outcome="ok")
    assert await call(sio, "echo", {"qty": 2}, "x") == {"ok": True, "args": [{"qty": 2}, "x"]}
    assert await call(sio, "whoami") == {"ok": True, "user": "alice", "id": sid}
    (hook,) = backend.of("event", sid, "echo")
    assert hook.body == {"type": "event", "socket": {"id": sid, "instance": hooks.id, "user": "alice"}, "event": "echo", "args": [{"qty": 2}, "x"]}
    assert await call(sio, "empty") is None, "an empty 2xx body acks null"
    assert metric(hooks, "ecos_webhook_requests_total", type="event", outcome="ok") >= before + 3


async def test_an_event_without_ack_is_still_forwarded(hooks, backend, opened):
    sio, _ = await attempt(hooks, opened, cookie="session=s-bob")
    await sio.emit("echo", {"fire": "and forget"})
    (hook,) = await backend.wait("event", sio.get_sid("/"), "echo")
    assert hook.body["args"] == [{"fire": "and forget"}]


async def test_a_slow_backend_acks_backend_unavailable_at_the_timeout(hooks, opened):
    sio, _ = await attempt(hooks, opened, cookie="session=s-bob")
    before = metric(hooks, "ecos_webhook_requests_total", type="event", outcome="timeout")
    started = time.monotonic()
    assert await call(sio, "slow") == {"ok": False, "error": "backend unavailable"}
    elapsed = time.monotonic() - started
    assert TIMEOUT_MS / 1000 * 0.9 <= elapsed < SLOW_S, f"acked after {elapsed:.2f} s"
    assert metric(hooks, "ecos_webhook_requests_total", type="event", outcome="timeout") == before + 1
    # The socket carries on.
    assert await call(sio, "join", "after-timeout") == {"ok": True, "room": "after-timeout"}


@pytest.mark.parametrize("event", ["fail", "text"], ids=["500", "2xx-not-json"])
async def test_a_failing_backend_acks_backend_error(hooks, opened, event):
    sio, _ = await attempt(hooks, opened, cookie="session=s-bob")
    before = metric(hooks, "ecos_webhook_requests_total", type="event", outcome="error")
    assert await call(sio, event) == {"ok": False, "error": "backend error"}
    assert metric(hooks, "ecos_webhook_requests_total", type="event", outcome="error") == before + 1


async def test_binary_arguments_travel_as_base64_both_ways(hooks, backend, opened):
    sio, _ = await attempt(hooks, opened, cookie="session=s-alice")
    blob, deep = bytes(range(256)), b"\x00\xff"
    answer = await call(sio, "echo", blob, {"file": {"name": "a.bin", "data": [deep]}})
    (hook,) = backend.of("event", sio.get_sid("/"), "echo")
    top, nested = hook.body["args"]
    assert set(top) == {"$base64"} and base64.b64decode(top["$base64"]) == blob
    inner = nested["file"]["data"][0]
    assert set(inner) == {"$base64"} and base64.b64decode(inner["$base64"]) == deep
    assert nested["file"]["name"] == "a.bin"
    # The backend echoed the $base64 objects: the client gets bytes back.
    assert answer == {"ok": True, "args": [blob, {"file": {"name": "a.bin", "data": [deep]}}]}


async def test_contract_events_are_not_forwarded(hooks, backend, opened):
    sio, _ = await attempt(hooks, opened, cookie="session=s-bob")
    assert await call(sio, "join", "plain") == {"ok": True, "room": "plain"}
    await sio.emit("not-forwarded", 1)
    assert await call(sio, "echo", "last") == {"ok": True, "args": ["last"]}
    assert [d.body["event"] for d in backend.of("event", sio.get_sid("/"))] == ["echo"]


# ---------------------------------------------------------------------------
# Disconnect notifications
# ---------------------------------------------------------------------------


async def test_one_disconnect_notification_per_disconnect(hooks, backend, opened):
    clients = [(await attempt(hooks, opened, cookie=f"session={c}"))[0] for c in ("s-alice", "s-bob")]
    sids = [c.get_sid("/") for c in clients]
    await asyncio.sleep(0.2)
    for c in clients:
        await close(c)
    for sid, user in zip(sids, ("alice", "bob")):
        (hook,) = await backend.wait("disconnect", sid)
        assert hook.body["socket"] == {"id": sid, "instance": hooks.id, "user": user}
        # python-socketio sends its DISCONNECT and closes the transport at
        # once: ecos may see either first.
        assert hook.body["reason"] in ("client_disconnect", "transport_close"), hook.body
        assert isinstance(hook.body["connected_seconds"], float) and 0.1 < hook.body["connected_seconds"] < 30
    await asyncio.sleep(1.0)
    for sid in sids:
        assert len(backend.of("disconnect", sid)) == 1, "exactly once when the backend said 2xx"
    assert len({d.delivery for sid in sids for d in backend.of("disconnect", sid)}) == 2


async def test_a_failed_disconnect_notification_is_retried_with_the_same_delivery_id(hooks, backend, opened):
    sio, _ = await attempt(hooks, opened, cookie="session=s-alice")
    sid = sio.get_sid("/")
    retries = metric(hooks, "ecos_webhook_retries_total")
    backend.fail_disconnect_once.add(sid)
    await close(sio)
    first, second = await backend.wait("disconnect", sid, count=2, timeout=10)
    assert first.delivery == second.delivery
    assert first.body == second.body
    assert 0.3 < second.at - first.at < 5, "retried after the backoff"
    assert second.t >= first.t, "signed again"
    await asyncio.sleep(1.5)
    assert len(backend.of("disconnect", sid)) == 2, "not again after the 2xx"
    assert metric(hooks, "ecos_webhook_retries_total") >= retries + 1
    assert metric(hooks, "ecos_webhook_requests_total", type="disconnect", outcome="error") >= 1


# ---------------------------------------------------------------------------
# A backend that never answers
# ---------------------------------------------------------------------------


async def test_a_hung_backend_does_not_slow_down_broadcasts(hung, opened):
    """Every slot to the backend is taken by requests that will time out after
    1 s; `message` between connected clients still takes milliseconds."""
    (a, _), (b, _), (c, _) = [await attempt(hung, opened) for _ in range(3)]
    received: asyncio.Queue = asyncio.Queue()
    b.on("message", lambda data: received.put_nowait((time.monotonic(), data)))
    pending = [asyncio.create_task(call(a, "echo", i)) for i in range(6)]
    for i in range(20):
        await a.emit("echo", i)  # no ack: forwarded all the same
    await close(c)  # a disconnect notification, queued and retried
    await asyncio.sleep(0.1)
    worst = 0.0
    for n in range(20):
        started = time.monotonic()
        assert await call(a, "message", {"n": n}) == {"ok": True}
        at, data = await asyncio.wait_for(received.get(), EVENT_TIMEOUT_S)
        assert data == {"n": n}
        worst = max(worst, at - started, time.monotonic() - started)
    assert worst < 0.5, f"a broadcast took {worst * 1000:.0f} ms with the backend hung"
    assert await asyncio.gather(*pending) == [{"ok": False, "error": "backend unavailable"}] * 6
    # Timed out on the wire or waiting for one of the 2 slots.
    gave_up = sum(metric(hung, "ecos_webhook_requests_total", type="event", outcome=o) for o in ("timeout", "unavailable"))
    assert gave_up >= 6


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, key",
    [
        ({"ECOS_WEBHOOKS__URL": "http://127.0.0.1:9/h", "ECOS_WEBHOOKS__CONNECT": "true"}, "webhooks.secret"),
        ({"ECOS_WEBHOOKS__URL": "http://127.0.0.1:9/h", "ECOS_WEBHOOKS__SECRET": SECRET, "ECOS_WEBHOOKS__EVENTS": "order:place,message"}, "webhooks.events"),
        ({"ECOS_WEBHOOKS__URL": "http://127.0.0.1:9/h", "ECOS_WEBHOOKS__SECRET": SECRET, "ECOS_WEBHOOKS__EVENTS": "disconnect"}, "webhooks.events"),
        ({"ECOS_WEBHOOKS__URL": "ftp://127.0.0.1/h", "ECOS_WEBHOOKS__SECRET": SECRET, "ECOS_WEBHOOKS__CONNECT": "true"}, "webhooks.url"),
        ({"ECOS_WEBHOOKS__URL": "http://127.0.0.1:9/h", "ECOS_WEBHOOKS__SECRET": SECRET, "ECOS_WEBHOOKS__CONNECT": "true", "ECOS_WEBHOOKS__TIMEOUT_MS": "50"}, "webhooks.timeout_ms"),
    ],
    ids=["no-secret", "contract-event", "reserved-event", "bad-url", "timeout-range"],
)
def test_bad_settings_stop_start_up_naming_the_key(env, key):
    base = {"PATH": "/usr/bin:/bin", "PORT": "0"}
    done = subprocess.run([str(ECOS_BIN)], env={**base, **env}, capture_output=True, text=True, timeout=20)
    assert done.returncode == 2, done.stderr
    assert key in done.stderr, done.stderr
    assert SECRET not in done.stderr + done.stdout, "the secret is never printed"


# ---------------------------------------------------------------------------
# The example backend of the docs (examples/webhooks/app.py)
# ---------------------------------------------------------------------------

EXAMPLE = REPO_ROOT / "examples" / "webhooks" / "app.py"
DOCS = REPO_ROOT / "docs" / "webhooks.md"


def test_the_docs_show_the_example_file_verbatim():
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)
    source = EXAMPLE.read_text(encoding="utf-8")
    assert source in blocks, "docs/webhooks.md must show examples/webhooks/app.py unchanged in a ```python block"


@pytest.fixture(scope="module")
def example(monkeypatch_module):
    """The Flask app served by werkzeug on a thread, and ecos pointed at it."""
    from werkzeug.serving import make_server

    monkeypatch_module.setenv("ECOS_WEBHOOKS_SECRET", SECRET)
    monkeypatch_module.setenv("FLASK_SECRET_KEY", "py-example-flask-key")
    spec = importlib.util.spec_from_file_location("ecos_webhooks_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    http = make_server("127.0.0.1", 0, module.app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{http.server_port}"
    env = hook_env(f"{base}/ecos", connect="true", forward_headers="cookie", events="order:place", disconnect="true")
    try:
        with Launch(["py-hooks-flask"], env) as launch:
            yield base, launch.servers[0]
    finally:
        http.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def login(base: str, user: str) -> str:
    """Logs in to the Flask app; returns the session cookie as a Cookie header."""
    request = urllib.request.Request(f"{base}/login", data=f"user={user}".encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        set_cookie = response.headers["Set-Cookie"]
    return set_cookie.split(";")[0]


async def test_the_example_backend_authenticates_by_cookie_and_answers_orders(example, opened):
    base, server = example
    cookie = login(base, "alice")
    sio, welcome = await attempt(server, opened, cookie=cookie)
    assert sio is not None, f"refused: {welcome}"
    assert welcome["user"] == "alice"
    answer = await call(sio, "order:place", {"item": "tea", "qty": 2})
    assert answer == {"ok": True, "order": {"id": 1, "item": "tea", "qty": 2, "user": "alice"}}
    assert await call(sio, "order:place", {"item": "tea", "qty": 0}) == {"ok": False, "error": "qty must be 1 to 99"}
    members = await call(sio, "room:members", "orders:alice")
    assert members["users"] == ["alice"], members

    nobody, message = await attempt(server, opened)
    assert nobody is None and message == "unauthorized: no session"
    forged, message = await attempt(server, opened, cookie=cookie[:-3] + "abc")
    assert forged is None and message == "unauthorized: no session"
