// The event contract with the MessagePack encoding: ecos started with
// `socketio.parser = msgpack` (ECOS_SOCKETIO__PARSER=msgpack) and the official
// socket.io-client using `socket.io-msgpack-parser`, over WebSocket and HTTP
// long-polling, against one instance and a three-instance Redis cluster (the
// k-th client of a test connects to instance k % 3, so every broadcast
// crosses instances there).

import { describe, it as nodeIt, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";
import { Clients, ack, assertRefused, nextEvent, recorder, startCluster, startSingle } from "./harness.mjs";

const MSGPACK_ENV = { ECOS_SOCKETIO__PARSER: "msgpack" };
const TRANSPORTS = ["websocket", "polling"];
const it = (name, fn) => nodeIt(name, { timeout: 20_000 }, fn);

/** A payload using every MessagePack type the contract should carry unchanged. */
const RICH = {
  text: "héllo ✓",
  int: -42,
  big: 2 ** 40,
  float: 1.5,
  yes: true,
  nothing: null,
  list: [1, "two", [3]],
  nested: { deep: { bytes: Buffer.from([0, 1, 254, 255]) } },
};

function msgpackSuite(title, start) {
  describe(title, () => {
    let topo;
    const clients = new Clients(() => topo);
    const connect = (transport) => clients.connect(transport, { parser: msgpackParser });

    before(async () => {
      topo = await start();
    });
    afterEach(() => clients.closeAllAndSettle());
    after(async () => {
      clients.closeAll();
      await topo?.stop();
    });

    for (const transport of TRANSPORTS) {
      describe(`over ${transport}`, () => {
        it("welcome carries the socket id and the instance", async () => {
          const { socket, welcome, server } = await connect(transport);
          assert.deepEqual(welcome, { id: socket.id, instance: server.id, user: null });
        });

        it("message reaches every other client, not the sender, and is acked", async () => {
          const { socket: a } = await connect(transport);
          const { socket: b } = await connect(transport);
          const { socket: c } = await connect(transport);
          const self = recorder(a, "message");
          const atB = nextEvent(b, "message");
          const atC = nextEvent(c, "message");
          assert.deepEqual(await ack(a, "message", RICH), { ok: true });
          assert.deepEqual(await atB, [RICH]);
          assert.deepEqual(await atC, [RICH]);
          await self.assertNone("the sender");
        });

        it("binary data (a Buffer, alone and nested) arrives intact", async () => {
          const { socket: a } = await connect(transport);
          const { socket: b } = await connect(transport);
          const bytes = Buffer.from(Array.from({ length: 300 }, (_, i) => i % 256));
          for (const data of [bytes, { file: bytes, parts: [Buffer.from("x"), Buffer.alloc(0)] }]) {
            const got = nextEvent(b, "message");
            assert.deepEqual(await ack(a, "message", data), { ok: true });
            const [received] = await got;
            assert.deepEqual(received, data);
            if (data === bytes) assert.ok(Buffer.isBuffer(received), `expected a Buffer, got ${typeof received}`);
          }
        });

        it("join, room:message to the members only, leave", async () => {
          const room = `mp-${transport}`;
          const { socket: sender } = await connect(transport);
          const { socket: member } = await connect(transport);
          const { socket: outsider } = await connect(transport);
          assert.deepEqual(await ack(member, "join", room), { ok: true, room });
          assert.deepEqual(await ack(sender, "join", room), { ok: true, room });
          const notSender = recorder(sender, "room:message");
          const notOutsider = recorder(outsider, "room:message");
          const got = nextEvent(member, "room:message");
          const data = { n: 1, bin: Buffer.from([7, 7]) };
          assert.deepEqual(await ack(sender, "room:message", room, data), { ok: true });
          assert.deepEqual(await got, [room, data]);
          await notSender.assertNone("the sender");
          await notOutsider.assertNone("a client outside the room");

          assert.deepEqual(await ack(member, "leave", room), { ok: true, room });
          const left = recorder(member, "room:message");
          assert.deepEqual(await ack(sender, "room:message", room, "after leave"), { ok: true });
          await left.assertNone("a client that left the room");
        });

        it("a bad room and a missing argument get an error ack", async () => {
          const { socket } = await connect(transport);
          for (const bad of [42, "", "r".repeat(129), { room: "x" }]) {
            assertRefused(await ack(socket, "join", bad), `join ${JSON.stringify(bad)}`);
          }
          assertRefused(await ack(socket, "room:message", 7, "data"), "room:message to a number");
          assertRefused(await ack(socket, "message"), "message without data");
          // The connection stays usable.
          assert.deepEqual(await ack(socket, "join", "fine"), { ok: true, room: "fine" });
        });

        it("latency: the client answers the server's ack request", async () => {
          const { socket, server } = await connect(transport);
          const asked = [];
          socket.on("latency", (info, answer) => {
            asked.push(info);
            answer();
          });
          const reply = await ack(socket, "latency");
          assert.equal(reply.ok, true, JSON.stringify(reply));
          assert.equal(typeof reply.rtt_ms, "number");
          assert.deepEqual(asked, [{ instance: server.id }]);
        });
      });
    }
  });
}

msgpackSuite("msgpack parser (single instance)", () => startSingle({ id: "js-msgpack", env: MSGPACK_ENV }));
msgpackSuite("msgpack parser (3-instance cluster)", () =>
  startCluster({ ids: ["js-mp-a", "js-mp-b", "js-mp-c"], env: MSGPACK_ENV }),
);

describe("msgpack parser: mismatched encodings fail fast", () => {
  let msgpack;
  let standard;
  before(async () => {
    [msgpack, standard] = await Promise.all([
      startSingle({ id: "js-msgpack-only", env: MSGPACK_ENV }),
      startSingle({ id: "js-default-only" }),
    ]);
  });
  after(() => Promise.all([msgpack?.stop(), standard?.stop()]));

  /** Resolves with what happened first: "connect", "connect_error" or "disconnect". */
  function outcome(url, transport, options) {
    const socket = io(url, { transports: [transport], forceNew: true, reconnection: false, timeout: 3_000, ...options });
    return new Promise((resolve) => {
      for (const event of ["connect", "connect_error", "disconnect"]) socket.once(event, () => resolve(event));
    }).finally(() => socket.close());
  }

  for (const transport of TRANSPORTS) {
    it(`a default-encoding client is not connected to a msgpack server (${transport})`, async () => {
      assert.notEqual(await outcome(msgpack.servers[0].url, transport), "connect");
    });
    it(`a msgpack client is not connected to a default server (${transport})`, async () => {
      assert.notEqual(await outcome(standard.servers[0].url, transport, { parser: msgpackParser }), "connect");
    });
  }
});
