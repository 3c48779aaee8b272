"""Fixtures of the python-socketio suite: the two topologies (one instance, a
three-instance Redis cluster), the transports, and a factory of connected
`socketio.AsyncClient`s spread over the instances. The ecos processes are
started by tests/support/launcher.mjs, through tests/support/launcher.py."""

from __future__ import annotations

import asyncio
import collections
import itertools
from dataclasses import dataclass

import pytest
import socketio

from launcher import REDIS_URL, Launch, Server, unique_prefix

EVENT_TIMEOUT_S = 5.0


@dataclass
class Topology:
    name: str
    servers: list[Server]

    def server_for(self, k: int) -> Server:
        """Where the k-th client of a test connects: round robin, so in the
        cluster every broadcast crosses instances."""
        return self.servers[k % len(self.servers)]


@pytest.fixture(scope="session")
def single():
    with Launch(["py-single"]) as launch:
        yield Topology("single", launch.servers)


@pytest.fixture(scope="session")
def cluster():
    """Three instances sharing the machine's Redis under a prefix of their own."""
    with Launch(["py-a", "py-b", "py-c"], redis_url=REDIS_URL, redis_prefix=unique_prefix("py")) as launch:
        yield Topology("cluster", launch.servers)


@pytest.fixture(params=["single", "cluster"])
def topology(request) -> Topology:
    return request.getfixturevalue(request.param)


@pytest.fixture(params=["websocket", "polling"])
def transport(request) -> str:
    return request.param


class Client:
    """A connected AsyncClient plus a queue per event it records."""

    def __init__(self, sio: socketio.AsyncClient, server: Server):
        self.sio = sio
        self.server = server
        self.queues: dict[str, asyncio.Queue] = collections.defaultdict(asyncio.Queue)
        self.welcome: dict | None = None

        # Every event without a handler of its own is recorded from the start,
        # so nothing that arrives before a test looks for it is lost.
        async def record_all(event, *args):
            self.queues[event].put_nowait(args)

        sio.on("*", record_all)

    def record(self, event: str) -> asyncio.Queue:
        """The `event`s (argument tuples) received so far and from now on."""
        return self.queues[event]

    async def next(self, event: str, timeout: float = EVENT_TIMEOUT_S) -> tuple:
        try:
            return await asyncio.wait_for(self.record(event).get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {event!r} within {timeout} s on {self.sio.sid}") from None

    async def call(self, event: str, *args):
        """Emits with an ack request and returns the ack's argument."""
        data = args[0] if len(args) == 1 else (tuple(args) if args else None)
        return await self.sio.call(event, data, timeout=EVENT_TIMEOUT_S)

    @property
    def sid(self) -> str:
        return self.sio.get_sid("/")


@pytest.fixture
async def connect(topology: Topology, transport: str):
    """`await connect()` opens one more client on the next instance and waits
    for `connect` and `welcome`; every client is closed after the test."""
    clients: list[Client] = []
    counter = itertools.count()

    async def open_client() -> Client:
        server = topology.server_for(next(counter))
        sio = socketio.AsyncClient(reconnection=False)
        client = Client(sio, server)
        welcome = client.record("welcome")
        clients.append(client)
        await sio.connect(server.url, transports=[transport], wait_timeout=EVENT_TIMEOUT_S)
        (client.welcome,) = await asyncio.wait_for(welcome.get(), EVENT_TIMEOUT_S)
        return client

    yield open_client
    await asyncio.gather(*(close(c.sio) for c in clients))


async def close(sio: socketio.AsyncClient) -> None:
    """Disconnects, bounded. python-engineio's polling client can miss its own
    close packet: when `disconnect()` runs while a POST is in flight (here the
    pong to the ping engineioxide sends right at connect), `_write_loop` sees
    the state leave "connected" and exits without sending the queued CLOSE,
    and `disconnect()` then waits for the pending long-poll GET, which the
    server answers only at its next ping (25 s). Cut that wait short."""
    try:
        await asyncio.wait_for(sio.disconnect(), 1.0)
    except asyncio.TimeoutError:
        # The wait was cancelled along with the read loop's GET; release the
        # HTTP session. The server drops the session at its next ping.
        await sio.eio.disconnect(abort=True)
    except Exception:  # noqa: BLE001 - teardown must not mask the test's outcome
        pass
