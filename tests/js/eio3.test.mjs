// Socket.IO v2 clients (Engine.IO protocol v3): `socket.io-client@2`, installed
// under the npm alias `socket.io-client-v2`, against ecos started with
// `socketio.allow_eio3 = true` (ECOS_SOCKETIO__ALLOW_EIO3=true), side by side
// with today's client; and refused when the setting is off (the default).

import { describe, it as nodeIt, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import ioV2 from "socket.io-client-v2";
import { Clients, ack, nextEvent, recorder, startCluster, startSingle } from "./harness.mjs";

const TRANSPORTS = ["websocket", "polling"];
const TIMEOUT_MS = 5_000;
const it = (name, fn) => nodeIt(name, { timeout: 20_000 }, fn);

/** Resolves with the arguments of the next `event` on a v2 socket, or rejects after TIMEOUT_MS. */
function nextV2(socket, event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, handler);
      reject(new Error(`timed out waiting for "${event}" on a v2 client`));
    }, TIMEOUT_MS);
    timer.unref();
    const handler = (...args) => {
      clearTimeout(timer);
      resolve(args);
    };
    socket.once(event, handler);
  });
}

/** v2's emit with an ack callback (it has no emitWithAck), bounded by TIMEOUT_MS. */
function ackV2(socket, ...args) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for "${args[0]}" from a v2 client`)), TIMEOUT_MS);
    socket.emit(...args, (reply) => {
      clearTimeout(timer);
      resolve(reply);
    });
  });
}

/** The v2 sockets of a test file, closed after each test. */
const v2Sockets = new Set();

/** Connects a socket.io-client@2 socket and waits for `connect` and `welcome`. */
async function connectV2(server, transport) {
  const socket = ioV2(server.url, { transports: [transport], forceNew: true, reconnection: false, timeout: TIMEOUT_MS });
  v2Sockets.add(socket);
  const welcome = nextV2(socket, "welcome");
  welcome.catch(() => {}); // awaited below only once connected
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (err) => reject(new Error(`v2 connect_error over ${transport}: ${err.message ?? err}`)));
  });
  const [payload] = await welcome;
  return { socket, welcome: payload };
}

function closeV2() {
  for (const socket of v2Sockets) socket.close();
  v2Sockets.clear();
}

// The v2 client always connects to the last instance and v4 clients start at
// the first, so in the cluster every exchange between them crosses Redis.
function eio3Suite(title, start) {
describe(title, () => {
  let topo;
  const clients = new Clients(() => topo);
  const oldServer = () => topo.servers[topo.servers.length - 1];
  before(async () => {
    topo = await start();
  });
  afterEach(async () => {
    closeV2();
    await clients.closeAllAndSettle();
  });
  after(async () => {
    closeV2();
    clients.closeAll();
    await topo?.stop();
  });

  for (const transport of TRANSPORTS) {
    describe(`over ${transport}`, () => {
      it("connects and gets welcome with its id and the instance", async () => {
        const { socket, welcome } = await connectV2(oldServer(), transport);
        assert.deepEqual(welcome, { id: socket.id, instance: oldServer().id, user: null });
      });

      it("message from v2 reaches a v4 client, not the sender, and is acked", async () => {
        const { socket: old } = await connectV2(oldServer(), transport);
        const { socket: modern } = await clients.connect(transport);
        const self = recorder(old, "message");
        const data = { from: "v2", list: [1, "two"], bytes: Buffer.from([1, 2, 3]) };
        const got = nextEvent(modern, "message");
        assert.deepEqual(await ackV2(old, "message", data), { ok: true });
        assert.deepEqual(await got, [data]);
        await self.assertNone("the v2 sender");
      });

      it("message from v4 reaches the v2 client (text)", async () => {
        const { socket: old } = await connectV2(oldServer(), transport);
        const { socket: modern } = await clients.connect(transport);
        const data = { from: "v4", text: "héllo ✓", n: 42 };
        const got = nextV2(old, "message");
        assert.deepEqual(await ack(modern, "message", data), { ok: true });
        assert.deepEqual(await got, [data]);
      });

      it("join and room:message between v2 and v4", async () => {
        const room = `eio3-${transport}`;
        const { socket: old } = await connectV2(oldServer(), transport);
        const { socket: modern } = await clients.connect(transport);
        assert.deepEqual(await ackV2(old, "join", room), { ok: true, room });
        const got = nextV2(old, "room:message");
        assert.deepEqual(await ack(modern, "room:message", room, "to the room"), { ok: true });
        assert.deepEqual(await got, [room, "to the room"]);
        assert.equal((await ackV2(old, "join", 42)).ok, false);
      });

      it("latency: the v2 client answers the server's ack request", async () => {
        const { socket: old } = await connectV2(oldServer(), transport);
        old.on("latency", (info, answer) => answer());
        const reply = await ackV2(old, "latency");
        assert.equal(reply.ok, true, JSON.stringify(reply));
        assert.equal(typeof reply.rtt_ms, "number");
      });
    });
  }

  it("binary from v4 reaches the v2 client over websocket", async () => {
    const { socket: old } = await connectV2(oldServer(), "websocket");
    const { socket: modern } = await clients.connect("websocket");
    const data = { bytes: Buffer.from([4, 5, 6]) };
    const got = nextV2(old, "message");
    assert.deepEqual(await ack(modern, "message", data), { ok: true });
    assert.deepEqual(await got, [data]);
  });

  // Not run: the v2 client throws "got plaintext data when reconstructing a
  // packet" from inside its XHR callback (an uncaught exception). The cause is
  // in engineioxide 0.17.9: `Permit::emit_many` (src/socket.rs) queues binary
  // attachments as `Packet::Binary` whatever the protocol, and the v3 polling
  // encoder `v3_bin_packet_encoder` (engineioxide-core 0.2.3,
  // src/payload/encoder.rs) writes binary frames only for `Packet::BinaryV3`,
  // so the attachment goes out as the text "b<base64>". The WebSocket path
  // (`transport/ws.rs`) handles both variants, hence the test above passes.
  nodeIt.todo("binary from v4 reaches the v2 client over polling (engineioxide: Permit::emit_many sends Packet::Binary to EIO3 sessions)");
});
}

const EIO3_ENV = { ECOS_SOCKETIO__ALLOW_EIO3: "true" };
eio3Suite("Engine.IO v3 / socket.io-client@2 with socketio.allow_eio3=true (single instance)", () =>
  startSingle({ id: "js-eio3", env: EIO3_ENV }),
);
eio3Suite("Engine.IO v3 / socket.io-client@2 with socketio.allow_eio3=true (3-instance cluster)", () =>
  startCluster({ ids: ["js-eio3-a", "js-eio3-b", "js-eio3-c"], env: EIO3_ENV }),
);

describe("Engine.IO v3 refused by default (socketio.allow_eio3=false)", () => {
  let topo;
  const clients = new Clients(() => topo);
  before(async () => {
    topo = await startSingle({ id: "js-eio3-off" });
  });
  afterEach(async () => {
    closeV2();
    await clients.closeAllAndSettle();
  });
  after(async () => {
    closeV2();
    await topo?.stop();
  });

  it("an EIO=3 handshake gets 400 'Unsupported protocol version'", async () => {
    for (const transport of TRANSPORTS) {
      const res = await fetch(`${topo.servers[0].url}/socket.io/?EIO=3&transport=${transport}`);
      assert.equal(res.status, 400, transport);
      assert.deepEqual(await res.json(), { code: "5", message: "Unsupported protocol version" });
    }
  });

  for (const transport of TRANSPORTS) {
    it(`socket.io-client@2 gets connect_error (${transport})`, async () => {
      await assert.rejects(connectV2(topo.servers[0], transport), /connect_error/);
    });
  }

  it("today's client still connects", async () => {
    const { welcome } = await clients.connect("websocket");
    assert.equal(welcome.instance, "js-eio3-off");
  });
});
