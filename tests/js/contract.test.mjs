// Contract tests for the ecos Socket.IO server, driven by the official
// socket.io-client. Run from the repository root with:
//
//   npm ci --prefix tests/js && node --test tests/js/
//
// The server binary is taken from $ECOS_BIN (default: target/release/ecos in
// the repository) and started on a random port for the whole file.

import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { io } from "socket.io-client";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, "..", "..");
const ECOS_BIN = process.env.ECOS_BIN
  ? path.resolve(process.env.ECOS_BIN)
  : path.resolve(HERE, "../../target/release/ecos");
const INSTANCE_ID = "js-test";

const STARTUP_TIMEOUT_MS = 10_000;
const ACK_TIMEOUT_MS = 5_000;
const EVENT_TIMEOUT_MS = 5_000;
// How long we listen to be reasonably sure an event is NOT delivered.
const QUIET_MS = 300;

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

/** Keeps the last `max` lines of a stream, for error messages. */
function tail(max = 40) {
  const lines = [];
  return {
    push(line) {
      lines.push(line);
      if (lines.length > max) lines.shift();
    },
    text: () => (lines.length ? lines.join("\n") : "(nothing)"),
  };
}

/** Port from an address such as "0.0.0.0:1234" or "[::]:1234". */
function portOf(addr) {
  const m = /:(\d+)$/.exec(String(addr));
  return m ? Number(m[1]) : null;
}

/**
 * Starts the ecos binary and resolves once its JSON start-up line (the one
 * carrying `fields.addr`) has been printed.
 */
function startServer() {
  return new Promise((resolve, reject) => {
    const stdout = tail();
    const stderr = tail();
    let settled = false;

    const child = spawn(ECOS_BIN, [], {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        PORT: "0",
        ECOS_LOG__FORMAT: "json",
        ECOS_INSTANCE_ID: INSTANCE_ID,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });

    const fail = (why) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(
        new Error(
          `${why}\n  binary: ${ECOS_BIN}\n--- stdout ---\n${stdout.text()}\n--- stderr ---\n${stderr.text()}`,
        ),
      );
    };

    const timer = setTimeout(
      () => fail(`ecos did not print its start-up line (fields.addr) within ${STARTUP_TIMEOUT_MS / 1000} s`),
      STARTUP_TIMEOUT_MS,
    );

    child.on("error", (err) =>
      fail(`could not start ecos (${err.message}); build it with \`cargo build --release\` or set ECOS_BIN`),
    );
    child.on("exit", (code, signal) => {
      if (!settled) return fail(`ecos exited early (code ${code}, signal ${signal})`);
      if (!child.stopping) {
        // A crash mid-run: the failing tests alone would not say why.
        console.error(
          `ecos exited unexpectedly (code ${code}, signal ${signal})\n--- stdout ---\n${stdout.text()}\n--- stderr ---\n${stderr.text()}`,
        );
      }
    });

    // Both pipes are read for the whole life of the process so the server
    // never blocks on a full pipe.
    createInterface({ input: child.stderr }).on("line", (line) => stderr.push(line));
    createInterface({ input: child.stdout }).on("line", (line) => {
      stdout.push(line);
      if (settled) return;
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        return; // not a JSON log line
      }
      const addr = entry?.fields?.addr ?? entry?.addr;
      if (addr === undefined) return;
      const port = portOf(addr);
      if (!port) return fail(`could not read a port from start-up address ${JSON.stringify(addr)}`);
      settled = true;
      clearTimeout(timer);
      resolve({ child, port, stdout, stderr });
    });
  });
}

/** SIGTERM, then SIGKILL if the server has not exited after `graceMs`. */
async function stopServer(child, graceMs = 10_000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.stopping = true;
  child.kill("SIGTERM");
  const killer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(killer);
}

// ---------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------

let baseUrl;
const openSockets = new Set();

/**
 * Connects a new client over one transport and waits for both the
 * connection and the server's `welcome` event.
 */
async function connect(transport) {
  const socket = io(baseUrl, {
    transports: [transport],
    forceNew: true,
    reconnection: false,
    timeout: EVENT_TIMEOUT_MS,
  });
  openSockets.add(socket);
  // Registered synchronously, before any packet can arrive.
  const welcome = nextEvent(socket, "welcome");
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (err) => reject(new Error(`connect_error over ${transport}: ${err.message}`)));
  });
  const [payload] = await welcome;
  return { socket, welcome: payload };
}

/** Connects `n` clients over the same transport. */
async function connectMany(transport, n) {
  const clients = [];
  for (let i = 0; i < n; i++) clients.push((await connect(transport)).socket);
  return clients;
}

/** Disconnects every socket this file has opened. */
function closeAll() {
  for (const socket of openSockets) socket.disconnect();
  openSockets.clear();
}

/** Resolves with the arguments of the next `event` on `socket`. */
function nextEvent(socket, event, ms = EVENT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, handler);
      reject(new Error(`timed out after ${ms} ms waiting for "${event}" on ${socket.id ?? "a socket"}`));
    }, ms);
    const handler = (...args) => {
      clearTimeout(timer);
      socket.off(event, handler);
      resolve(args);
    };
    socket.on(event, handler);
  });
}

/**
 * Starts recording `event` on `socket`; `assertNone()` then waits QUIET_MS
 * and fails if anything was recorded.
 */
function recorder(socket, event) {
  const seen = [];
  const handler = (...args) => seen.push(args);
  socket.on(event, handler);
  return {
    seen,
    async assertNone(what) {
      await sleep(QUIET_MS);
      socket.off(event, handler);
      assert.deepEqual(seen, [], `${what} should not have received "${event}"`);
    },
  };
}

const ack = (socket, ...args) => socket.timeout(ACK_TIMEOUT_MS).emitWithAck(...args);

/** A message round trip from `from` to `to`; proves both are still usable. */
async function assertMessageFlows(from, to, label) {
  const data = { check: label, at: Date.now() };
  const received = nextEvent(to, "message");
  assert.deepEqual(await ack(from, "message", data), { ok: true });
  assert.deepEqual(await received, [data]);
}

/** Asserts the shape of a refusal ack: ok false and a non-empty error. */
function assertRefused(reply, what) {
  assert.equal(typeof reply, "object", `${what}: ack should be an object`);
  assert.equal(reply.ok, false, `${what}: ack.ok should be false`);
  assert.equal(typeof reply.error, "string", `${what}: ack.error should be a string`);
  assert.ok(reply.error.length > 0, `${what}: ack.error should not be empty`);
}

/** Sum of all samples of a Prometheus metric (any labels), or null. */
function metricValue(text, name) {
  let found = false;
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name) {
      found = true;
      sum += Number(m[3]);
    }
  }
  return found ? sum : null;
}

async function connectedSockets() {
  const res = await fetch(`${baseUrl}/metrics`);
  return metricValue(await res.text(), "ecos_connected_sockets");
}

/** Polls `probe` until it returns `expected` or `ms` elapse. */
async function eventually(probe, expected, ms = EVENT_TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last === expected) return last;
    await sleep(50);
  }
  assert.equal(last, expected);
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

const BAD_ROOMS = [
  ["a number", 42],
  ["an empty string", ""],
  ["a 129-character string", "r".repeat(129)],
];

describe("ecos contract", () => {
  let server;

  before(async () => {
    server = await startServer();
    baseUrl = `http://127.0.0.1:${server.port}`;
  });

  after(async () => {
    closeAll();
    await stopServer(server?.child);
  });

  afterEach(() => closeAll());

  describe("HTTP endpoints", () => {
    it("GET /healthz answers 200", async () => {
      const res = await fetch(`${baseUrl}/healthz`);
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    });

    it("GET /readyz answers 200 with JSON", async () => {
      const res = await fetch(`${baseUrl}/readyz`);
      assert.equal(res.status, 200);
      const body = await res.text();
      assert.doesNotThrow(() => JSON.parse(body), `readyz body should be JSON, got: ${body}`);
    });

    it("GET /metrics is Prometheus text with ecos_connected_sockets", async () => {
      const res = await fetch(`${baseUrl}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
      const body = await res.text();
      assert.match(body, /ecos_connected_sockets/);
      assert.equal(typeof metricValue(body, "ecos_connected_sockets"), "number");
    });

    it("GET / serves the demo page with the client script filled in", async () => {
      const res = await fetch(`${baseUrl}/`);
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
      it("greets each connection with welcome { id, instance }", async () => {
        const { socket, welcome } = await connect(transport);
        assert.equal(socket.io.engine.transport.name, transport);
        assert.equal(typeof welcome, "object");
        assert.equal(typeof welcome.id, "string");
        assert.ok(welcome.id.length > 0);
        assert.equal(welcome.id, socket.id);
        assert.equal(welcome.instance, INSTANCE_ID);

        const other = await connect(transport);
        assert.notEqual(other.welcome.id, welcome.id, "each socket gets its own id");
        assert.equal(other.welcome.instance, INSTANCE_ID);
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

      for (const [label, room] of BAD_ROOMS) {
        it(`a bad room (${label}) is refused with ok:false and the socket stays up`, async () => {
          const [a, b] = await connectMany(transport, 2);
          assertRefused(await ack(a, "join", room), "join");
          assertRefused(await ack(a, "leave", room), "leave");
          assertRefused(await ack(a, "room:message", room, { x: 1 }), "room:message");
          assert.equal(a.connected, true, "socket should still be connected");
          await assertMessageFlows(a, b, `after bad room ${label}`);
        });
      }

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
        await atA.assertNone("the sender");
        await atOutsider.assertNone("a socket outside the room");
        await plainAtB.assertNone("a room member (as a plain message)");
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

      it("the server notices disconnects (ecos_connected_sockets goes back down)", async () => {
        // Every socket of earlier tests has been closed, and this file is the
        // server's only client: once those closes are noticed the gauge is 0.
        await eventually(connectedSockets, 0);

        const [a, b] = await connectMany(transport, 2);
        await eventually(connectedSockets, 2);

        a.disconnect();
        await eventually(connectedSockets, 1);
        const { socket: late } = await connect(transport);
        await eventually(connectedSockets, 2);
        await assertMessageFlows(b, late, "after the server saw a disconnect");

        closeAll();
        await eventually(connectedSockets, 0);
      });
    });
  }
});
