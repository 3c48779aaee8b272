// Hardening as the official client sees it (docs/hardening.md): an event sent
// from the `connect` handler is never lost, even on a loaded machine; events
// over the per-socket rate limit get the documented error ack; while queues
// overflow, broadcasts are refused as `overloaded` and a listener that reads
// gets every broadcast that was accepted; a client that stops reading, after
// upgrading from polling to WebSocket, or that stops polling, is closed as a
// slow consumer, counted, and reconnects by itself.
//
// Run from the repository root (after `npm ci --prefix tests/js`):
//
//   node --test --test-reporter=spec tests/js/hardening.test.mjs

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { Worker } from "node:worker_threads";
import { io } from "socket.io-client";
import { ack, eventually, it, metricOf, sleep, startSingle } from "./harness.mjs";

/** Keeps one core busy in a worker thread until `stop()` is called. */
function busyCore() {
  const worker = new Worker("for (;;) {}", { eval: true });
  return { stop: () => worker.terminate() };
}

describe("events sent the moment the client is connected", () => {
  let topo;
  before(async () => {
    topo = await startSingle({ id: "js-early" });
  });
  after(async () => {
    await topo?.stop();
  });

  for (const transport of ["websocket", "polling"]) {
    it(`1000 clients emitting join from their connect handler are all acked (${transport})`, async () => {
      const [server] = topo.servers;
      const busy = busyCore();
      const sockets = [];
      try {
        const acks = await Promise.all(
          Array.from({ length: 1000 }, (_, n) => {
            const socket = io(server.url, { transports: [transport], forceNew: true, reconnection: false });
            sockets.push(socket);
            // The most common pattern there is: emit from the connect handler.
            return new Promise((resolve, reject) => {
              socket.on("connect", () => {
                socket.timeout(10_000).emitWithAck("join", `early-${n}`).then(resolve, reject);
              });
              socket.on("connect_error", reject);
            });
          }),
        );
        const ok = acks.filter((a) => a?.ok === true).length;
        assert.equal(ok, 1000, `every join acked ok over ${transport}`);
      } finally {
        busy.stop();
        for (const socket of sockets) socket.disconnect();
      }
    });
  }
});

describe("the per-socket rate limit", () => {
  let topo;
  before(async () => {
    topo = await startSingle({
      id: "js-rate",
      env: { ECOS_LIMITS__EVENTS_PER_SECOND: "10", ECOS_LIMITS__EVENTS_BURST: "10" },
    });
  });
  after(async () => {
    await topo?.stop();
  });

  it("events over the limit are acked { ok: false, error: 'rate limited' } and counted", async () => {
    const [server] = topo.servers;
    const socket = io(server.url, { transports: ["websocket"], forceNew: true, reconnection: false });
    try {
      await new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      });
      const replies = await Promise.all(Array.from({ length: 30 }, (_, n) => ack(socket, "join", `r${n}`)));
      const refused = replies.filter((r) => r.ok === false);
      assert.ok(replies.filter((r) => r.ok === true).length >= 10, "the burst passes");
      assert.ok(refused.length > 0, "the rest is refused");
      for (const reply of refused) assert.deepEqual(reply, { ok: false, error: "rate limited" });
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const line = metrics.split("\n").find((l) => l.startsWith('ecos_rate_limited_total{event="join"'));
      assert.ok(line && Number(line.split(" ").pop()) === refused.length, `counted: ${line}`);
    } finally {
      socket.disconnect();
    }
  });
});

describe("shedding load while queues overflow", () => {
  let topo;
  before(async () => {
    // A short queue fills quickly behind the listeners that stop reading.
    topo = await startSingle({
      id: "js-shed",
      env: { ECOS_SOCKETIO__MAX_BUFFER_PACKETS: "256", ECOS_LIMITS__OVERLOAD_SHED_SECS: "1" },
    });
  });
  after(async () => {
    await topo?.stop();
  });

  const connect = (url) =>
    new Promise((resolve, reject) => {
      const socket = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", reject);
    });

  it("senders get { ok: false, error: 'overloaded' }, counted, and a reading listener gets every accepted broadcast", async () => {
    const [server] = topo.servers;
    const room = "busy";
    const sockets = [];
    try {
      const stalled = [];
      for (let i = 0; i < 3; i++) {
        const socket = await connect(server.url);
        sockets.push(socket);
        assert.equal((await ack(socket, "join", room)).ok, true);
        stalled.push(socket);
      }
      const reader = await connect(server.url);
      sockets.push(reader);
      assert.equal((await ack(reader, "join", room)).ok, true);
      const received = [];
      reader.on("room:message", (_room, data) => received.push(`${data.s}/${data.n}`));
      // Stop reading: the kernel buffers fill, then the server's queues.
      for (const socket of stalled) socket.io.engine.transport.ws._socket.pause();

      // Eight senders, each at 50 events a second: half the rate limit.
      const padding = "x".repeat(32 * 1024);
      const accepted = [];
      let overloaded = 0;
      const until = Date.now() + 4_000;
      await Promise.all(
        Array.from({ length: 8 }, async (_, s) => {
          const sender = await connect(server.url);
          sockets.push(sender);
          for (let n = 0; Date.now() < until; n++) {
            const reply = await ack(sender, "room:message", room, { s, n, p: padding });
            if (reply.ok === true) accepted.push(`${s}/${n}`);
            else {
              assert.deepEqual(reply, { ok: false, error: "overloaded" });
              overloaded += 1;
            }
            await sleep(20);
          }
        }),
      );
      assert.ok(overloaded > 0, "some sender was told `overloaded`");
      assert.equal(await metricOf(server, "ecos_overloaded_total"), overloaded);
      // The reader may still be taking in the last ones.
      for (let waited = 0; received.length < accepted.length && waited < 10_000; waited += 100) await sleep(100);
      await sleep(300);
      assert.deepEqual(received.slice().sort(), accepted.slice().sort());
      assert.ok(reader.connected, "the reading listener is still connected");
    } finally {
      for (const socket of sockets) socket.disconnect();
    }
  });
});

/** The value of `name`'s series with the label `key="value"` on `server`'s /metrics (0 when absent). */
async function series(server, name, key, value) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text
    .split("\n")
    .find((l) => l.startsWith(`${name}{`) && l.includes(`${key}="${value}"`));
  return line ? Number(line.split(" ").pop()) : 0;
}

describe("slow consumers, as the official client sees them", () => {
  let topo;
  before(async () => {
    topo = await startSingle({
      id: "js-slow",
      env: {
        ECOS_SOCKETIO__SLOW_CONSUMER_TIMEOUT_SECS: "1",
        ECOS_SOCKETIO__MAX_BUFFER_PACKETS: "64",
        ECOS_LIMITS__EVENTS_PER_SECOND: "0",
      },
    });
  });
  after(async () => {
    await topo?.stop();
  });

  const DISCONNECTIONS = "ecos_disconnections_total";

  /** A client with the default transports (polling, then the upgrade to WebSocket). */
  const connectDefault = (url) =>
    new Promise((resolve, reject) => {
      const socket = io(url, { forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", reject);
    });

  /** Sends `message`s from `sender`, 10 ms apart, until `server` counted `want` slow consumers. */
  async function sendUntilSlow(server, sender, want, size) {
    const padding = "x".repeat(size);
    const deadline = Date.now() + 12_000;
    let seq = 0;
    while ((await series(server, DISCONNECTIONS, "reason", "slow_consumer")) < want) {
      assert.ok(Date.now() < deadline, `no slow consumer closed after ${seq} messages`);
      for (let i = 0; i < 10; i++) {
        sender.emit("message", { seq: seq++, p: padding });
        await sleep(10);
      }
    }
    return seq;
  }

  it("an upgraded client that stops reading is closed as slow_consumer, knows it, and reconnects", async () => {
    const [server] = topo.servers;
    const before = await series(server, DISCONNECTIONS, "reason", "slow_consumer");
    const slow = await connectDefault(server.url);
    const sender = await connectDefault(server.url);
    try {
      await eventually(() => slow.io.engine.transport.name, "websocket", 5_000, "the upgrade to WebSocket");
      const got = [];
      slow.on("message", (m) => got.push(m.seq));
      const disconnected = new Promise((resolve) => slow.once("disconnect", resolve));
      slow.io.engine.transport.ws._socket.pause();

      await sendUntilSlow(server, sender, before + 1, 64 * 1024);
      assert.equal(await series(server, DISCONNECTIONS, "reason", "transport_error"), 0);

      const reconnected = new Promise((resolve) => slow.once("connect", resolve));
      slow.io.engine.transport.ws._socket.resume();
      const reason = await disconnected;
      assert.match(reason, /transport (close|error)/);
      await reconnected;
      // What it got before the close is every message in order, none missing.
      assert.deepEqual(got, got.map((_, i) => i));
    } finally {
      slow.disconnect();
      sender.disconnect();
    }
  });

  it("a polling client that stops polling is closed as slow_consumer when its queue overflows, and reconnects", async () => {
    const [server] = topo.servers;
    const before = await series(server, DISCONNECTIONS, "reason", "slow_consumer");
    const slow = await new Promise((resolve, reject) => {
      const socket = io(server.url, {
        transports: ["polling"],
        forceNew: true,
        reconnectionDelay: 100,
        reconnectionDelayMax: 200,
      });
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", reject);
    });
    const sender = await connectDefault(server.url);
    try {
      const got = [];
      slow.on("message", (m) => got.push(m.seq));
      // Stop polling once the poll in flight is answered.
      const transport = slow.io.engine.transport;
      let resume = null;
      transport._poll = () => {
        resume = () => {
          delete transport._poll;
          transport._poll();
        };
      };
      const disconnected = new Promise((resolve) => slow.once("disconnect", resolve));

      await sendUntilSlow(server, sender, before + 1, 1024);

      const reconnected = new Promise((resolve) => slow.once("connect", resolve));
      assert.ok(resume, "the client had stopped polling");
      resume();
      assert.match(await disconnected, /transport (close|error)/);
      await reconnected;
      assert.deepEqual(got, got.map((_, i) => i));
      assert.ok((await series(server, "ecos_messages_dropped_total", "event", "message")) >= 1);
    } finally {
      slow.disconnect();
      sender.disconnect();
    }
  });
});
