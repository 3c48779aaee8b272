// Hardening as the official client sees it (docs/hardening.md): an event sent
// from the `connect` handler is never lost, even on a loaded machine; events
// over the per-socket rate limit get the documented error ack.
//
// Run from the repository root (after `npm ci --prefix tests/js`):
//
//   node --test --test-reporter=spec tests/js/hardening.test.mjs

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { Worker } from "node:worker_threads";
import { io } from "socket.io-client";
import { ack, it, startSingle } from "./harness.mjs";

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
