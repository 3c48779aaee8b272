"""A Python backend reaching ecos's clients through Redis with PyPI's
`socket-io-redis-emitter` (socket.io's Redis format, like the official Node
emitter): emit to everyone, to rooms, except rooms, and the join, leave and
disconnect requests, against a three-instance cluster, asserted on
python-socketio clients connected to every instance.

That package names its channels slightly differently from the Node emitter
(`<prefix>#/` and `<prefix>#/#<room>`, without the trailing `#`); ecos
accepts every channel of namespace `/` under its `emitter.prefix`."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import redis.asyncio
import socketio
from socketio_emitter import Emitter

from conftest import EVENT_TIMEOUT_S, Client, close
from launcher import REDIS_URL, Launch, unique_prefix

QUIET_S = 0.3

# The package (0.0.3) calls pydantic's deprecated `.json()`; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning"),
]


@pytest.fixture(scope="module")
def emitter_prefix() -> str:
    return unique_prefix("py-emitter")


@pytest.fixture(scope="module")
def servers(emitter_prefix):
    with Launch(
        ["py-e1", "py-e2", "py-e3"],
        redis_url=REDIS_URL,
        redis_prefix=unique_prefix("py-em"),
        env={"ECOS_EMITTER__PREFIX": emitter_prefix},
    ) as launch:
        yield launch.servers


@pytest.fixture
async def emitter(emitter_prefix):
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield Emitter(client=client, channel_prefix=emitter_prefix)
    await client.aclose()


@pytest.fixture
async def connect(servers):
    """`await connect()` opens a WebSocket client on the next instance."""
    clients: list[Client] = []
    counter = itertools.count()

    async def open_client() -> Client:
        server = servers[next(counter) % len(servers)]
        sio = socketio.AsyncClient(reconnection=False)
        client = Client(sio, server)
        gone = client.record("disconnect")

        @sio.on("disconnect")
        async def on_disconnect(*args):
            gone.put_nowait(args)

        welcome = client.record("welcome")
        clients.append(client)
        await sio.connect(server.url, transports=["websocket"], wait_timeout=EVENT_TIMEOUT_S)
        (client.welcome,) = await asyncio.wait_for(welcome.get(), EVENT_TIMEOUT_S)
        return client

    yield open_client
    await asyncio.gather(*(close(c.sio) for c in clients))


async def everyone(emitter: Emitter, event: str, data) -> None:
    async with emitter.namespace("/") as nsp:
        async with nsp.all_rooms():
            await nsp.emit(event, data)


async def warm_up(emitter: Emitter, clients: list[Client]) -> None:
    """Emits until every client has seen one: every instance has subscribed."""
    deadline = time.monotonic() + 10
    pending = list(clients)
    while pending and time.monotonic() < deadline:
        await everyone(emitter, "warmup", {})
        await asyncio.sleep(0.1)
        pending = [c for c in pending if c.record("warmup").empty()]
    assert not pending, "every instance should receive the emitter's messages within 10 s"


async def assert_quiet(client: Client, event: str, what: str) -> None:
    await asyncio.sleep(QUIET_S)
    queue = client.record(event)
    assert queue.empty(), f"{what} should not have received {event!r}: {queue.get_nowait()!r}"


async def test_emit_to_everyone_reaches_every_instance(connect, emitter):
    clients = [await connect() for _ in range(3)]
    await warm_up(emitter, clients)
    data = {"text": "héllo ✓", "n": 42, "blob": b"\x00\x01\xfe", "none": None, "list": [1.5, True]}
    await everyone(emitter, "news", data)
    for client in clients:
        assert await client.next("news") == (data,)


async def test_emit_to_a_room_and_except_a_room(connect, emitter):
    a, b, c, d = [await connect() for _ in range(4)]
    await warm_up(emitter, [a, b, c, d])
    for client in (a, b, c):
        assert await client.call("join", "py-order:9") == {"ok": True, "room": "py-order:9"}
    assert await b.call("join", "py-muted") == {"ok": True, "room": "py-muted"}
    async with emitter.namespace("/") as nsp:
        async with nsp.rooms("py-order:9"):
            await nsp.emit("shipped", {"order": 9})
    for client in (a, b, c):
        assert await client.next("shipped") == ({"order": 9},)
    await assert_quiet(d, "shipped", "a client outside the room")

    async with emitter.namespace("/") as nsp:
        async with nsp.all_rooms(except_=["py-muted"]):
            await nsp.emit("announce", {"all": "but b"})
    for client in (a, c, d):
        assert await client.next("announce") == ({"all": "but b"},)
    await assert_quiet(b, "announce", "a muted client")


async def test_join_leave_and_disconnect_requests(connect, emitter):
    a, b, c, outsider = [await connect() for _ in range(4)]
    await warm_up(emitter, [a, b, c, outsider])
    for client in (a, b, c):
        assert await client.call("join", "py-team") == {"ok": True, "room": "py-team"}

    async with emitter.namespace("/") as nsp:
        async with nsp.rooms("py-team"):
            await nsp.join("devices:dave")
        async with nsp.rooms("devices:dave"):
            await nsp.emit("for-dave", {"hi": "dave"})
    for client in (a, b, c):
        assert await client.next("for-dave") == ({"hi": "dave"},)
    await assert_quiet(outsider, "for-dave", "a client not in devices:dave")
    members = await outsider.call("room:members", "devices:dave")
    assert members["count"] == 3, members

    async with emitter.namespace("/") as nsp:
        async with nsp.rooms("devices:dave"):
            await nsp.leave("devices:dave")
    # room:members asks the cluster over ecos's own channels, which may
    # overtake the emitter's request: wait for the leave.
    for _ in range(50):
        if (await outsider.call("room:members", "devices:dave"))["count"] == 0:
            break
        await asyncio.sleep(0.1)
    assert (await outsider.call("room:members", "devices:dave"))["count"] == 0

    async with emitter.namespace("/") as nsp:
        async with nsp.rooms("py-team"):
            await nsp.disconnect()
    for client in (a, b, c):
        await client.next("disconnect")
        assert not client.sio.connected
    await assert_quiet(outsider, "disconnect", "a client outside the room")
    assert outsider.sio.connected
