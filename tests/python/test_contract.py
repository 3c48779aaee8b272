"""The event contract of README.md with python-socketio's AsyncClient, over
WebSocket and HTTP long-polling, against one instance and a three-instance
Redis cluster (each test runs once per topology and transport)."""

from __future__ import annotations

import asyncio

QUIET_S = 0.3


async def assert_quiet(client, event: str, what: str) -> None:
    """Waits QUIET_S and fails if `event` reached `client` meanwhile."""
    queue = client.record(event)
    await asyncio.sleep(QUIET_S)
    assert queue.empty(), f"{what} should not have received {event!r}: {queue.get_nowait()!r}"


def assert_refused(reply, what: str) -> None:
    assert isinstance(reply, dict), f"{what}: {reply!r}"
    assert reply.get("ok") is False, f"{what}: {reply!r}"
    assert isinstance(reply.get("error"), str) and reply["error"], f"{what}: {reply!r}"


async def test_welcome_names_the_socket_and_the_instance(connect):
    client = await connect()
    assert client.welcome == {"id": client.sid, "instance": client.server.id, "user": None}


async def test_message_reaches_the_others_not_the_sender_and_is_acked(connect):
    sender, b, c = await connect(), await connect(), await connect()
    sender.record("message")
    data = {"text": "héllo ✓", "n": 42, "list": [1, None, True], "nested": {"x": 1.5}}
    assert await sender.call("message", data) == {"ok": True}
    assert await b.next("message") == (data,)
    assert await c.next("message") == (data,)
    await assert_quiet(sender, "message", "the sender")


async def test_message_without_data_gets_an_error_ack(connect):
    client = await connect()
    assert_refused(await client.call("message"), "message without data")


async def test_binary_data_arrives_intact(connect):
    sender, receiver = await connect(), await connect()
    blob = bytes(range(256)) * 4
    for data in (blob, {"file": blob, "parts": [b"x", b""], "name": "blob.bin"}):
        assert await sender.call("message", data) == {"ok": True}
        (received,) = await receiver.next("message")
        assert received == data
    assert isinstance(received["file"], bytes)


async def test_join_room_message_and_leave(connect, transport):
    room = f"py-{transport}"
    sender, member, outsider = await connect(), await connect(), await connect()
    assert await member.call("join", room) == {"ok": True, "room": room}
    assert await sender.call("join", room) == {"ok": True, "room": room}
    sender.record("room:message")
    outsider.record("room:message")

    data = {"alert": 1, "raw": b"\x00\xff"}
    assert await sender.call("room:message", room, data) == {"ok": True}
    assert await member.next("room:message") == (room, data)
    await assert_quiet(sender, "room:message", "the sender")
    await assert_quiet(outsider, "room:message", "a client outside the room")

    assert await member.call("leave", room) == {"ok": True, "room": room}
    assert await sender.call("room:message", room, "after leave") == {"ok": True}
    await assert_quiet(member, "room:message", "a client that left")


async def test_bad_rooms_get_an_error_ack_and_the_connection_stays(connect):
    client = await connect()
    for bad in (42, "", "r" * 129, {"room": "lobby"}):
        assert_refused(await client.call("join", bad), f"join {bad!r}")
        assert_refused(await client.call("leave", bad), f"leave {bad!r}")
    assert_refused(await client.call("room:message", 7, "data"), "room:message to a number")
    assert client.sio.connected
    assert await client.call("join", "x" * 128) == {"ok": True, "room": "x" * 128}


async def test_latency_the_client_answers_the_servers_ack(connect):
    client = await connect()
    asked = []

    async def on_latency(info):
        asked.append(info)
        return "pong"  # the handler's return value is the ack

    client.sio.on("latency", on_latency)
    reply = await client.call("latency")
    assert reply["ok"] is True, reply
    assert isinstance(reply["rtt_ms"], (int, float)) and reply["rtt_ms"] >= 0
    assert asked == [{"instance": client.server.id}]
