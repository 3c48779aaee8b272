// The event contract of README.md, written once and registered per topology:
// contract.test.mjs runs it against one instance, cluster.test.mjs against a
// three-instance Redis cluster. In a cluster, the k-th client of a test
// connects to instance k % 3 (see `Clients`), so every broadcast, room and
// ack test crosses instances.

import { describe, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  Clients,
  ack,
  assertMessageFlows,
  assertRefused,
  eventually,
  getJson,
  it,
  metricOf,
  metricValue,
  nextEvent,
  recorder,
  sortedIds,
  QUIET_MS,
  SERVER_ACK_TIMEOUT_MS,
} from "./harness.mjs";

const BAD_ROOMS = [
  ["a number", 42],
  ["an empty string", ""],
  ["a 129-character string", "r".repeat(129)],
  ["an object", { room: "lobby" }],
];

/** A round trip on loopback is far below this; anything near it is a bug. */
const ACK_BOUND_MS = 2_000;

/** Answers every `room:ask` on `socket` with `answer(room, data)`; records the calls. */
function answerAsks(socket, answer) {
  const calls = [];
  socket.on("room:ask", (room, data, callback) => {
    calls.push({ room, data, callbackType: typeof callback });
    if (answer) callback(...answer(room, data));
  });
  return calls;
}

/**
 * Registers the whole contract suite against the topology `start()` resolves
 * to (see harness.mjs: startSingle, startCluster). `clustered` adds the
 * cluster-only assertions.
 */
export function contractSuite({ title, clustered, start }) {
  describe(title, () => {
    let topo;
    const clients = new Clients(() => topo);
    const connect = (transport, options) => clients.connect(transport, options);
    const connectMany = (transport, n) => clients.connectMany(transport, n);

    before(async () => {
      topo = await start();
    });

    after(async () => {
      await clients.closeAllAndSettle();
      await topo?.stop();
    });

    afterEach(() => clients.closeAll());

    describe("HTTP endpoints", () => {
      it("GET /healthz answers 200 on every instance", async () => {
        for (const server of topo.servers) {
          const { status, body } = await getJson(`${server.url}/healthz`);
          assert.equal(status, 200, server.id);
          assert.deepEqual(body, { status: "alive" });
        }
      });

      it("GET /readyz answers 200 ready with the instance id on every instance", async () => {
        for (const server of topo.servers) {
          const { status, body } = await getJson(`${server.url}/readyz`);
          assert.equal(status, 200, `${server.id}: ${JSON.stringify(body)}`);
          assert.equal(body.status, "ready");
          assert.equal(body.instance, server.id);
          assert.equal(typeof body.adapter, "string");
          if (topo.clustered) assert.equal(body.adapter, "redis");
        }
      });

      if (clustered) {
        it("every instance sees the whole cluster in /readyz and /metrics", async () => {
          const size = topo.servers.length;
          for (const server of topo.servers) {
            await eventually(
              async () => (await getJson(`${server.url}/readyz`)).body.cluster?.instances,
              size,
              3_000,
              `${server.id} /readyz cluster.instances`,
            );
            await eventually(() => metricOf(server, "ecos_cluster_instances"), size, 3_000, `${server.id} ecos_cluster_instances`);
            assert.equal(await metricOf(server, "ecos_redis_up"), 1, `${server.id} ecos_redis_up`);
          }
        });
      }

      it("GET /metrics is Prometheus text with ecos_connected_sockets", async () => {
        for (const server of topo.servers) {
          const res = await fetch(`${server.url}/metrics`);
          assert.equal(res.status, 200);
          assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
          const body = await res.text();
          assert.match(body, /ecos_connected_sockets/);
          assert.equal(typeof metricValue(body, "ecos_connected_sockets"), "number");
          assert.match(body, new RegExp(`node="${server.id}"`), "series carry the node label");
        }
      });

      it("GET / serves the demo page with the client script filled in", async () => {
        const res = await fetch(`${topo.servers[0].url}/`);
        assert.equal(res.status, 200);
        assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
        const html = await res.text();
        assert.ok(!html.includes("<!--ECOS_CLIENT_SCRIPT-->"), "placeholder should have been replaced");
        assert.match(html, /<script[^>]+src="[^"]*socket\.io[^"]*\.js"/);
        for (const id of ["status", "instance", "input", "send", "messages"]) {
          assert.match(html, new RegExp(`id="${id}"`), `page should have #${id}`);
        }
      });
    });

    for (const transport of ["websocket", "polling"]) {
      describe(`over ${transport}`, () => {
        it("greets each connection with welcome { id, instance } of the instance it reached", async () => {
          const first = await connect(transport);
          assert.equal(first.socket.io.engine.transport.name, transport);
          assert.equal(typeof first.welcome, "object");
          assert.equal(typeof first.welcome.id, "string");
          assert.ok(first.welcome.id.length > 0);
          assert.equal(first.welcome.id, first.socket.id);
          assert.equal(first.welcome.instance, first.server.id);

          const ids = new Set([first.welcome.id]);
          const instances = new Set([first.welcome.instance]);
          // One more client than instances: every instance greets at least once.
          for (let i = 0; i < topo.servers.length; i++) {
            const other = await connect(transport);
            assert.equal(other.welcome.id, other.socket.id);
            assert.equal(other.welcome.instance, other.server.id);
            ids.add(other.welcome.id);
            instances.add(other.welcome.instance);
          }
          assert.equal(ids.size, topo.servers.length + 1, "each socket gets its own id");
          assert.deepEqual([...instances].sort(), topo.servers.map((s) => s.id).sort());
        });

        it("message is broadcast to every other socket, not the sender, and acked", async () => {
          const [a, b, c] = await connectMany(transport, 3);
          const data = { text: "hello from a — ünïcödé ✓", n: 7, list: [1, "two", null, true], nested: { deep: { x: 1.5 } } };
          const atB = nextEvent(b, "message");
          const atC = nextEvent(c, "message");
          const atA = recorder(a, "message");

          const reply = await ack(a, "message", data);
          assert.deepEqual(reply, { ok: true });
          assert.deepEqual(await atB, [data]);
          assert.deepEqual(await atC, [data]);
          await atA.assertNone("the sender");
        });

        it("message passes plain strings through unchanged and works without an ack", async () => {
          const [a, b] = await connectMany(transport, 2);
          const first = nextEvent(b, "message");
          a.emit("message", "just a string");
          assert.deepEqual(await first, ["just a string"]);

          const second = nextEvent(b, "message");
          assert.deepEqual(await ack(a, "message", ""), { ok: true });
          assert.deepEqual(await second, [""]);
        });

        it("message without data is refused with ok:false", async () => {
          const [a, b] = await connectMany(transport, 2);
          const atB = recorder(b, "message");
          assertRefused(await ack(a, "message"), "message without data");
          await atB.assertNone("another socket");
          await assertMessageFlows(a, b, "after a refused message");
        });

        it("binary data nested in an object arrives as Buffers with the same bytes", async () => {
          const [a, b] = await connectMany(transport, 2);
          const bytes = Buffer.from([0, 1, 2, 3, 127, 128, 254, 255]);
          const big = Buffer.alloc(4096, 0xab);
          const data = { name: "blob", payload: bytes, nested: { inner: big, list: [Buffer.from("hi")] } };
          const atB = nextEvent(b, "message");

          assert.deepEqual(await ack(a, "message", data), { ok: true });
          const [got] = await atB;
          assert.equal(got.name, "blob");
          assert.ok(Buffer.isBuffer(got.payload), "payload should arrive as a Buffer");
          assert.ok(Buffer.isBuffer(got.nested.inner), "nested.inner should arrive as a Buffer");
          assert.ok(Buffer.isBuffer(got.nested.list[0]), "nested.list[0] should arrive as a Buffer");
          assert.deepEqual([...got.payload], [...bytes]);
          assert.ok(got.nested.inner.equals(big), "nested.inner bytes should be unchanged");
          assert.equal(got.nested.list[0].toString(), "hi");
        });

        it("a top-level Buffer as message data arrives intact", async () => {
          const [a, b] = await connectMany(transport, 2);
          const bytes = Buffer.from("binary ✓ payload");
          const atB = nextEvent(b, "message");
          assert.deepEqual(await ack(a, "message", bytes), { ok: true });
          const [got] = await atB;
          assert.ok(Buffer.isBuffer(got));
          assert.ok(got.equals(bytes));
        });

        it("join and leave are acked with { ok: true, room }", async () => {
          const { socket } = await connect(transport);
          assert.deepEqual(await ack(socket, "join", "lobby"), { ok: true, room: "lobby" });
          assert.deepEqual(await ack(socket, "join", "lobby"), { ok: true, room: "lobby" }, "joining twice is fine");
          assert.deepEqual(await ack(socket, "leave", "lobby"), { ok: true, room: "lobby" });
          const longest = "r".repeat(128);
          assert.deepEqual(await ack(socket, "join", longest), { ok: true, room: longest }, "128 characters is allowed");
          assert.deepEqual(await ack(socket, "leave", longest), { ok: true, room: longest });
        });

        it(`bad rooms (${BAD_ROOMS.map(([label]) => label).join(", ")}) are refused by every room event`, async () => {
          const [a, b] = await connectMany(transport, 2);
          await ack(b, "join", "lobby"); // so a wrongly accepted "lobby" would show
          const atB = [recorder(b, "room:message"), recorder(b, "room:ask")];
          for (const [label, room] of BAD_ROOMS) {
            assertRefused(await ack(a, "join", room), `join with ${label}`);
            assertRefused(await ack(a, "leave", room), `leave with ${label}`);
            assertRefused(await ack(a, "room:message", room, { x: 1 }), `room:message with ${label}`);
            assertRefused(await ack(a, "room:members", room), `room:members with ${label}`);
            assertRefused(await ack(a, "room:ask", room, { x: 1 }), `room:ask with ${label}`);
          }
          assert.equal(a.connected, true, "the socket should still be connected");
          await Promise.all(atB.map((r) => r.assertNone("another socket")));
          await assertMessageFlows(a, b, "after bad rooms");
        });

        it("room events with missing arguments are refused with ok:false", async () => {
          const [a, b] = await connectMany(transport, 2);
          assertRefused(await ack(a, "join"), "join without a room");
          assertRefused(await ack(a, "room:members"), "room:members without a room");
          assertRefused(await ack(a, "room:message", "lobby"), "room:message without data");
          assertRefused(await ack(a, "room:ask", "lobby"), "room:ask without data");
          await assertMessageFlows(a, b, "after refused room events");
        });

        it("room:message reaches only the other members of the room, with (room, data)", async () => {
          const [a, b, c, outsider] = await connectMany(transport, 4);
          for (const s of [a, b, c]) {
            assert.deepEqual(await ack(s, "join", "room-1"), { ok: true, room: "room-1" });
          }
          assert.deepEqual(await ack(outsider, "join", "room-2"), { ok: true, room: "room-2" });

          const data = { text: "members only", bin: Buffer.from([9, 8, 7]) };
          const atB = nextEvent(b, "room:message");
          const atC = nextEvent(c, "room:message");
          const atA = recorder(a, "room:message");
          const atOutsider = recorder(outsider, "room:message");
          const plainAtB = recorder(b, "message");

          assert.deepEqual(await ack(a, "room:message", "room-1", data), { ok: true });
          for (const got of [await atB, await atC]) {
            assert.equal(got.length, 2, "room:message carries two arguments");
            assert.equal(got[0], "room-1");
            assert.equal(got[1].text, "members only");
            assert.ok(Buffer.isBuffer(got[1].bin));
            assert.deepEqual([...got[1].bin], [9, 8, 7]);
          }
          await Promise.all([
            atA.assertNone("the sender"),
            atOutsider.assertNone("a socket outside the room"),
            plainAtB.assertNone("a room member (as a plain message)"),
          ]);
        });

        it("after leave, a socket no longer receives room:message", async () => {
          const [a, b, c] = await connectMany(transport, 3);
          for (const s of [a, b, c]) await ack(s, "join", "room-leave");
          assert.deepEqual(await ack(b, "leave", "room-leave"), { ok: true, room: "room-leave" });

          const atC = nextEvent(c, "room:message");
          const atB = recorder(b, "room:message");
          assert.deepEqual(await ack(a, "room:message", "room-leave", "still here?"), { ok: true });
          assert.deepEqual(await atC, ["room-leave", "still here?"]);
          await atB.assertNone("a socket that left the room");
        });

        it("a socket outside a room can still send room:message to its members", async () => {
          const [member, outsider] = await connectMany(transport, 2);
          assert.deepEqual(await ack(member, "join", "room-3"), { ok: true, room: "room-3" });
          const atMember = nextEvent(member, "room:message");
          assert.deepEqual(await ack(outsider, "room:message", "room-3", 123), { ok: true });
          assert.deepEqual(await atMember, ["room-3", 123]);
        });

        it("room:members lists the room's socket ids, sorted, from any instance", async () => {
          const [a, b, c, outsider] = await connectMany(transport, 4);
          for (const s of [a, b, c]) await ack(s, "join", "members-room");
          await ack(outsider, "join", "members-elsewhere");
          const expected = { ok: true, room: "members-room", count: 3, members: sortedIds([a, b, c]) };

          // Asked by a member and by a socket outside the room, so in a cluster
          // from more than one instance.
          assert.deepEqual(await ack(a, "room:members", "members-room"), expected);
          assert.deepEqual(await ack(outsider, "room:members", "members-room"), expected);

          assert.deepEqual(await ack(b, "leave", "members-room"), { ok: true, room: "members-room" });
          assert.deepEqual(await ack(outsider, "room:members", "members-room"), {
            ok: true,
            room: "members-room",
            count: 2,
            members: sortedIds([a, c]),
          });

          // A disconnect is noticed by the server in its own time: poll.
          const cId = c.id;
          c.disconnect();
          await eventually(
            () => ack(outsider, "room:members", "members-room"),
            { ok: true, room: "members-room", count: 1, members: [a.id] },
            3_000,
            `room:members after ${cId} disconnected`,
          );
        });

        it("room:members of an empty or unknown room is an empty list", async () => {
          const { socket } = await connect(transport);
          assert.deepEqual(await ack(socket, "room:members", "nobody-here"), {
            ok: true,
            room: "nobody-here",
            count: 0,
            members: [],
          });
        });

        it("room:ask gathers the answers of the other members; a silent one counts as missed", async () => {
          // In a cluster: asker on instance 0, answering members on 1 and 2,
          // the silent member on 0 again, the outsider on 1.
          const [asker, b, c, silent, outsider] = await connectMany(transport, 5);
          for (const s of [asker, b, c, silent]) await ack(s, "join", "ask-room");
          const atB = answerAsks(b, (room, data) => [{ from: "b", n: data.n * 2 }]);
          const atC = answerAsks(c, (room, data) => [{ from: "c", bytes: data.bin.length }]);
          const atSilent = answerAsks(silent, null); // receives, never calls back
          const atAsker = recorder(asker, "room:ask");
          const atOutsider = recorder(outsider, "room:ask");

          const started = Date.now();
          const reply = await ack(asker, "room:ask", "ask-room", { n: 21, bin: Buffer.from([1, 2, 3]) });
          const elapsed = Date.now() - started;

          assert.equal(reply.ok, true, JSON.stringify(reply));
          assert.equal(reply.missed, 1, "the silent member is missed");
          assert.ok(Array.isArray(reply.answers), "answers is an array");
          const byId = [...reply.answers].sort((x, y) => (x.id < y.id ? -1 : 1));
          const expected = [
            { id: b.id, answer: { from: "b", n: 42 } },
            { id: c.id, answer: { from: "c", bytes: 3 } },
          ].sort((x, y) => (x.id < y.id ? -1 : 1));
          assert.deepEqual(byId, expected);
          assert.ok(
            elapsed >= SERVER_ACK_TIMEOUT_MS - 100,
            `the reply should wait for the server's ack timeout (${SERVER_ACK_TIMEOUT_MS} ms) for the silent member; came after ${elapsed} ms`,
          );

          // Every other member got (room, data, callback), binary intact.
          for (const [name, calls] of [["b", atB], ["c", atC], ["silent", atSilent]]) {
            assert.equal(calls.length, 1, `${name} should be asked once`);
            assert.equal(calls[0].room, "ask-room");
            assert.equal(calls[0].data.n, 21);
            assert.ok(Buffer.isBuffer(calls[0].data.bin), `${name}: binary data should arrive as a Buffer`);
            assert.deepEqual([...calls[0].data.bin], [1, 2, 3]);
            assert.equal(calls[0].callbackType, "function", `${name}: room:ask should request an ack`);
          }
          await Promise.all([atAsker.assertNone("the asker"), atOutsider.assertNone("a socket outside the room")]);
          await assertMessageFlows(silent, asker, "the silent member is still connected");
        });

        it("room:ask answers quickly when every member answers, including answers without a value", async () => {
          const [asker, b, c] = await connectMany(transport, 3);
          for (const s of [asker, b, c]) await ack(s, "join", "ask-all");
          answerAsks(b, () => ["yes"]);
          answerAsks(c, () => []); // callback() with no value

          const started = Date.now();
          const reply = await ack(asker, "room:ask", "ask-all", "anyone?");
          const elapsed = Date.now() - started;
          assert.equal(reply.ok, true, JSON.stringify(reply));
          assert.equal(reply.missed, 0, JSON.stringify(reply));
          const byId = Object.fromEntries(reply.answers.map(({ id, answer }) => [id, answer]));
          assert.deepEqual(byId, { [b.id]: "yes", [c.id]: null }, JSON.stringify(reply));
          assert.ok(
            elapsed < SERVER_ACK_TIMEOUT_MS,
            `with every member answering the reply should not wait for the ack timeout; came after ${elapsed} ms`,
          );
        });

        // With nobody else in the room, the Redis adapter would wait for its
        // request timeout on top of the ack timeout; ecos bounds the gathering
        // to the ack timeout plus a small margin, so the answer comes in time
        // for a client that waits a little longer than the server's ack timeout.
        it("room:ask to a room with no other member answers with nothing within the ack timeout", async () => {
          const [asker, other] = await connectMany(transport, 2);
          await ack(asker, "join", "ask-alone");
          const atOther = recorder(other, "room:ask");
          const bound = SERVER_ACK_TIMEOUT_MS + 1000;
          const timed = async (...args) => {
            const started = Date.now();
            const reply = await asker.timeout(bound).emitWithAck(...args);
            return { reply, elapsed: Date.now() - started };
          };
          for (const room of ["ask-alone", "ask-nobody"]) {
            const { reply, elapsed } = await timed("room:ask", room, 1);
            assert.deepEqual(reply, { ok: true, answers: [], missed: 0 });
            assert.ok(elapsed < bound, `room:ask to ${room} took ${elapsed} ms`);
          }
          await atOther.assertNone("a socket outside the room");
        });

        it("latency: the server asks the client for an ack and reports the round trip", async () => {
          // One client per instance.
          const connections = [];
          for (let i = 0; i < topo.servers.length; i++) connections.push(await connect(transport));
          for (const { socket, server } of connections) {
            const asked = [];
            socket.on("latency", (info, callback) => {
              asked.push({ info, callbackType: typeof callback });
              callback();
            });
            const reply = await ack(socket, "latency");
            assert.equal(reply.ok, true, JSON.stringify(reply));
            assert.equal(typeof reply.rtt_ms, "number");
            assert.ok(Number.isFinite(reply.rtt_ms) && reply.rtt_ms >= 0, `rtt_ms should be >= 0, got ${reply.rtt_ms}`);
            assert.ok(reply.rtt_ms < ACK_BOUND_MS, `rtt_ms should be small, got ${reply.rtt_ms}`);
            assert.deepEqual(Object.keys(reply).sort(), ["ok", "rtt_ms"]);
            assert.equal(asked.length, 1, "the server should emit latency exactly once");
            assert.equal(asked[0].callbackType, "function", "latency should request an ack");
            assert.equal(typeof asked[0].info, "object");
            assert.equal(asked[0].info.instance, server.id);
          }
        });

        it("latency: a client that never answers gets ok:false after the server's ack timeout", async () => {
          const [quiet, other] = await connectMany(transport, 2);
          let asked = 0;
          quiet.on("latency", () => {
            asked += 1; // and no callback
          });
          const started = Date.now();
          const reply = await ack(quiet, "latency");
          const elapsed = Date.now() - started;
          assertRefused(reply, "latency without an answer");
          assert.equal(asked, 1, "the client should have been asked");
          assert.ok(
            elapsed >= SERVER_ACK_TIMEOUT_MS - 100 && elapsed < SERVER_ACK_TIMEOUT_MS + 2_000,
            `the refusal should come after about ${SERVER_ACK_TIMEOUT_MS} ms, came after ${elapsed} ms`,
          );
          assert.equal(quiet.connected, true);
          await assertMessageFlows(quiet, other, "after an unanswered latency");
        });

        it("unknown events are ignored and the connection stays up", async () => {
          const [a, b] = await connectMany(transport, 2);
          const atB = recorder(b, "no-such-event");
          a.emit("no-such-event", { anything: true });
          a.emit("another:unknown", 1, 2, 3);
          await assert.rejects(
            a.timeout(QUIET_MS).emitWithAck("no-such-event", "with ack"),
            "an unknown event should not be acknowledged",
          );
          await atB.assertNone("another socket");
          assert.equal(a.connected, true);
          await assertMessageFlows(a, b, "after unknown events");
        });

        it("when one client disconnects, the others keep working", async () => {
          const [a, b, c] = await connectMany(transport, 3);
          for (const s of [a, b, c]) await ack(s, "join", "room-dc");

          const gone = nextEvent(c, "disconnect");
          c.disconnect();
          assert.equal((await gone)[0], "io client disconnect");
          assert.equal(c.connected, false);

          await assertMessageFlows(a, b, "after a peer left");
          await assertMessageFlows(b, a, "after a peer left, reverse");
          const atB = nextEvent(b, "room:message");
          assert.deepEqual(await ack(a, "room:message", "room-dc", "still fine"), { ok: true });
          assert.deepEqual(await atB, ["room-dc", "still fine"]);
        });

        it("each instance counts its own sockets (ecos_connected_sockets goes up and back down)", async () => {
          // Every socket of earlier tests has been closed, and this file is
          // the servers' only client: once those closes are noticed every
          // gauge is 0.
          const gauges = () => Promise.all(topo.servers.map((s) => metricOf(s, "ecos_connected_sockets")));
          const zeros = topo.servers.map(() => 0);
          await eventually(gauges, zeros, 5_000, "ecos_connected_sockets per instance");

          // Two sockets on every instance.
          const sockets = await connectMany(transport, 2 * topo.servers.length);
          await eventually(gauges, topo.servers.map(() => 2), 5_000, "ecos_connected_sockets per instance");

          // One leaves the first instance: only that gauge moves.
          const [first] = sockets;
          const home = clients.serverOf(first);
          first.disconnect();
          const afterLeave = topo.servers.map((s) => (s === home ? 1 : 2));
          await eventually(gauges, afterLeave, 5_000, "ecos_connected_sockets after one disconnect");

          const { socket: late } = await connect(transport, { server: home });
          await eventually(gauges, topo.servers.map(() => 2), 5_000, "ecos_connected_sockets after a new connection");
          await assertMessageFlows(sockets.at(-1), late, "after the server saw a disconnect");

          if (topo.clustered) {
            // The cluster-wide total comes from the stats round (every 0.2 s).
            const total = 2 * topo.servers.length;
            for (const server of topo.servers) {
              await eventually(
                () => metricOf(server, "ecos_cluster_connected_sockets"),
                total,
                3_000,
                `${server.id} ecos_cluster_connected_sockets`,
              );
            }
          }

          clients.closeAll();
          await eventually(gauges, zeros, 5_000, "ecos_connected_sockets once everyone left");
        });
      });
    }
  });
}
