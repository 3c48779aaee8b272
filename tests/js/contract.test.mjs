// The ecos event contract (README.md) against ONE ecos process, driven by the
// official socket.io-client over websocket and polling, plus graceful
// shutdown as the official client sees it. cluster.test.mjs runs the same
// contract against a three-instance Redis cluster.
//
// Run from the repository root (after `npm ci --prefix tests/js`):
//
//   node --test --test-reporter=spec tests/js/*.test.mjs
//
// The server binary is $ECOS_BIN (default: target/release/ecos), started on
// a random port (PORT=0) with JSON logs and a 1 s server-side ack timeout.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { Manager } from "socket.io-client";
import { contractSuite } from "./contract-suite.mjs";
import {
  Clients,
  assertMessageFlows,
  eventually,
  getJson,
  it,
  nextEvent,
  sleep,
  startSingle,
  withTimeout,
} from "./harness.mjs";

contractSuite({ title: "ecos contract (single instance)", clustered: false, start: () => startSingle() });

/** Waits for `promise` up to `ms`; resolves with `fallback` instead if it takes longer. */
const within = (promise, ms, fallback) => Promise.race([promise, sleep(Math.max(0, ms)).then(() => fallback)]);

/**
 * Lets a promise that is awaited only later reject without an "unhandled
 * rejection" if the test fails before awaiting it.
 */
function later(promise) {
  promise.catch(() => {});
  return promise;
}

describe("graceful shutdown (single instance, official client)", () => {
  const DELAY_MS = 1_000; // ECOS_SHUTDOWN__DELAY_SECS
  const EXIT_WITHIN_MS = 5_000;
  let topo;
  const clients = new Clients(() => topo);

  before(async () => {
    topo = await startSingle({ id: "js-drain", env: { ECOS_SHUTDOWN__DELAY_SECS: String(DELAY_MS / 1000) } });
  });

  after(async () => {
    clients.closeAll();
    await topo?.stop();
  });

  it("SIGTERM: /readyz 503 at once, sessions carry on for the delay, then close with 'transport close' and exit 0", async () => {
    const [server] = topo.servers;
    // Reconnection on, as in a real app: after "transport close" the client
    // tries again by itself (it would not after "io server disconnect").
    const options = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 };
    const { socket: ws } = await clients.connect("websocket", options);
    const { socket: poll } = await clients.connect("polling", options);
    await assertMessageFlows(ws, poll, "before SIGTERM");

    const closedAt = new Map();
    const disconnected = [ws, poll].map((socket) => {
      socket.once("disconnect", () => closedAt.set(socket, Date.now()));
      return later(nextEvent(socket, "disconnect", EXIT_WITHIN_MS));
    });
    const retried = [ws, poll].map((socket) => later(nextEvent(socket.io, "reconnect_attempt", EXIT_WITHIN_MS)));

    const sentAt = Date.now();
    server.child.stopping = true;
    server.child.kill("SIGTERM");

    // Within the delay window: not ready, new sessions refused, old ones fine.
    // (The signal is handled asynchronously, so allow a few milliseconds.)
    const ready = await eventually(() => getJson(`${server.url}/readyz`), (r) => r.status === 503, 300, "/readyz after SIGTERM");
    assert.equal(ready.body.status, "draining", JSON.stringify(ready.body));
    assert.equal(typeof ready.body.reason, "string");
    const handshake = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
    await handshake.arrayBuffer();
    assert.equal(handshake.status, 503, "a new Engine.IO session should be refused while draining");
    assert.equal(handshake.headers.get("retry-after"), "1");
    assert.equal(ws.connected, true, "websocket client still connected during the delay");
    assert.equal(poll.connected, true, "polling client still connected during the delay");
    await assertMessageFlows(ws, poll, "while draining");
    await assertMessageFlows(poll, ws, "while draining, reverse");
    const checkedWithin = Date.now() - sentAt;
    assert.ok(checkedWithin < DELAY_MS, `the drain-window checks took ${checkedWithin} ms, longer than the delay`);

    // Then every session is closed as a transport close.
    const [[wsReason], [pollReason]] = await Promise.all(disconnected);
    assert.equal(wsReason, "transport close", "websocket client's disconnect reason");
    assert.equal(pollReason, "transport close", "polling client's disconnect reason");
    for (const socket of [ws, poll]) {
      const elapsed = closedAt.get(socket) - sentAt;
      assert.ok(elapsed >= DELAY_MS - 100, `sessions should be closed after the ${DELAY_MS} ms delay, not after ${elapsed} ms`);
    }

    // And the process exits 0, within 5 s of SIGTERM.
    const exit = await within(server.exited, EXIT_WITHIN_MS - (Date.now() - sentAt), "still running");
    assert.deepEqual(exit, { code: 0, signal: null }, `exit status ${EXIT_WITHIN_MS} ms after SIGTERM\n${server.logs()}`);

    // socket.io-client reconnects by itself after a transport close.
    await Promise.all(retried);
  });
});

describe("graceful shutdown with an Engine.IO session outside any namespace (single instance)", () => {
  let topo;
  let manager;

  before(async () => {
    topo = await startSingle({ id: "js-drain-eio" });
  });

  after(async () => {
    manager?.reconnection(false);
    manager?.engine?.close();
    await topo?.stop();
  });

  // The drain's io.close() only sees sockets connected to a namespace. A
  // polling Engine.IO session with no namespace socket (the client has not
  // sent CONNECT yet, or has just left "/") holds a long-poll GET that would
  // keep the HTTP server's graceful shutdown waiting until the next ping;
  // ecos gives such requests a one-second grace and then stops.
  it(
    "SIGTERM exits promptly while a polling client has an Engine.IO session but no namespace",
    async () => {
      const [server] = topo.servers;
      // The official client's Manager opens the Engine.IO session on its own;
      // no socket (namespace) is created on it.
      manager = new Manager(server.url, { transports: ["polling"], reconnection: false, autoConnect: false });
      await withTimeout(
        new Promise((resolve, reject) => manager.open((err) => (err ? reject(err) : resolve()))),
        5_000,
        "the Manager opening its Engine.IO session",
      );
      await sleep(100); // the client is now holding a long-poll GET
      const engineClosed = later(nextEvent(manager.engine, "close", 3_000));

      server.child.stopping = true;
      server.child.kill("SIGTERM");
      try {
        const exit = await within(server.exited, 3_000, "still running");
        assert.deepEqual(exit, { code: 0, signal: null }, "exit status 3 s after SIGTERM");
        // The cut long-poll reaches the client as a transport error or close;
        // either way socket.io-client reconnects (elsewhere, behind a router).
        const [reason] = await engineClosed;
        assert.ok(["transport close", "transport error"].includes(reason), `engine closed with ${reason}`);
      } finally {
        server.child.kill("SIGKILL"); // no-op once it has exited
      }
    },
  );
});
