// Shared helpers for the JavaScript tests: starting ecos processes (one
// instance or a Redis-backed cluster, through tests/support/launcher.mjs),
// connecting official socket.io-client sockets to them, and small assertion
// helpers.
//
// Not a test file itself: `node --test tests/js/*.test.mjs` only runs the
// *.test.mjs files, which import this module.

import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { it as nodeIt } from "node:test";
import { io } from "socket.io-client";
import {
  REDIS_URL,
  clusterEnv,
  isRunning,
  killInstance,
  startInstances,
  stopInstance,
  uniquePrefix,
} from "../support/launcher.mjs";

/** Client-side bound on every ack we wait for. */
export const ACK_TIMEOUT_MS = 5_000;
/** Client-side bound on every event we wait for. */
export const EVENT_TIMEOUT_MS = 5_000;
/** How long we listen to be reasonably sure an event is NOT delivered. */
export const QUIET_MS = 300;
/**
 * The servers' own ack timeout (`socketio.ack_timeout_secs`), shortened from
 * the 5 s default so the "client never answers" tests stay fast.
 */
export const SERVER_ACK_TIMEOUT_MS = 1_000;
/** Time limit of every test, so a hang fails that test instead of stalling the run. */
const TEST_TIMEOUT_MS = 20_000;
/** Pause between closing the clients and stopping the servers at teardown. */
const SETTLE_MS = 150;

/** node:test's `it`, with a default time limit (TEST_TIMEOUT_MS). */
export function it(name, options, fn) {
  if (typeof options === "function") return nodeIt(name, { timeout: TEST_TIMEOUT_MS }, options);
  return nodeIt(name, { timeout: TEST_TIMEOUT_MS, ...options }, fn);
}

// ---------------------------------------------------------------------------
// Server processes (started by tests/support/launcher.mjs)
// ---------------------------------------------------------------------------

/**
 * Starts servers (`[id, env]` pairs) in parallel with this suite's settings
 * and waits until each one is ready; if any fails, stops the others. A
 * server is the launcher's instance handle: `{ id, port, url, child,
 * exited, logs() }`.
 */
function startAll(specs) {
  return startInstances(
    specs.map(([id, env]) => ({
      id,
      env: { ECOS_SOCKETIO__ACK_TIMEOUT_SECS: String(SERVER_ACK_TIMEOUT_MS / 1000), ...env },
    })),
  );
}

/** SIGTERM, then SIGKILL (with a warning) if the server has not exited after `graceMs`. */
export const stopServer = (server, graceMs) => stopInstance(server, graceMs);

/** Kills a server at once, like a crash (SIGKILL). */
export const killServer = killInstance;

/** Whether the server process is still running. */
export { isRunning };

/**
 * A topology is what the contract suite runs against:
 *
 * - `name`: for test titles;
 * - `clustered`: whether the instances share a Redis adapter;
 * - `servers`: the running instances;
 * - `serverFor(i)`: where the i-th client of a test connects;
 * - `stop()`: stops every instance.
 */
function topology(name, clustered, servers, extra = {}) {
  return {
    name,
    clustered,
    servers,
    serverFor: (i) => servers[i % servers.length],
    stop: () => Promise.all(servers.map((s) => stopServer(s))),
    ...extra,
  };
}

/** One instance with the in-memory adapter. */
export async function startSingle({ id = "js-single", env = {} } = {}) {
  const servers = await startAll([[id, env]]);
  return topology("single instance", false, servers);
}

/**
 * `ids.length` instances on the machine's Redis ($ECOS_TEST_REDIS_URL),
 * sharing a prefix of their own, with `env` added to each one's environment.
 * `addServer(id)` starts one more member.
 */
export async function startCluster({ ids = ["js-a", "js-b", "js-c"], env = {} } = {}) {
  const prefix = uniquePrefix("js");
  const memberEnv = () => ({ ...clusterEnv(REDIS_URL, prefix), ...env });
  const servers = await startAll(ids.map((id) => [id, memberEnv()]));
  const cluster = topology(`${ids.length}-instance cluster`, true, servers, {
    prefix,
    async addServer(id) {
      const [server] = await startAll([[id, memberEnv()]]);
      servers.push(server);
      return server;
    },
  });
  return cluster;
}

/**
 * An ecos that this suite did not start (a container, a deployed app), at
 * `url`. Its id is the `instance` its `/readyz` reports; `stop()` leaves it
 * running.
 */
export async function startExternal(url) {
  const base = url.replace(/\/+$/, "");
  const { status, body } = await getJson(`${base}/readyz`);
  assert.equal(status, 200, `${base}/readyz: ${JSON.stringify(body)}`);
  const server = { id: body.instance, url: base };
  return topology(`instance at ${base}`, false, [server], { stop: async () => {} });
}

// ---------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------

/** GET a JSON endpoint: `{ status, body }`. */
export async function getJson(url) {
  const res = await fetch(url);
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    assert.fail(`${url} should answer JSON, got ${res.status}: ${text}`);
  }
  return { status: res.status, body };
}

/** Sum of all samples of a Prometheus metric (any labels), or null. */
export function metricValue(text, name) {
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

/** One metric of one instance (sum over labels), or null if absent. */
export async function metricOf(server, name) {
  const res = await fetch(`${server.url}/metrics`);
  return metricValue(await res.text(), name);
}

/**
 * Polls `probe` until `accept(value)` holds or `ms` elapse, then asserts on
 * the last value. `expected` may be a value (compared with deepEqual) or a
 * predicate.
 */
export async function eventually(probe, expected, ms = EVENT_TIMEOUT_MS, what = "value") {
  const accept = typeof expected === "function" ? expected : (v) => isDeepStrictEqual(v, expected);
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (accept(last)) return last;
    if (Date.now() >= deadline) break;
    await sleep(50);
  }
  if (typeof expected === "function") {
    assert.fail(`${what} did not reach the expected state within ${ms} ms; last: ${JSON.stringify(last)}`);
  }
  assert.deepEqual(last, expected, `${what} after ${ms} ms`);
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/**
 * The sockets of one test file. The k-th socket a test opens (counting from
 * 0, reset by `closeAll`) connects to `topology.serverFor(k)`, so in a
 * cluster the clients of every test are spread over the instances and every
 * broadcast crosses instances.
 */
export class Clients {
  constructor(getTopology) {
    this.getTopology = getTopology;
    this.open = new Set();
    this.opened = 0;
    this.servers = new WeakMap();
  }

  /**
   * Connects a new client over one transport and waits for both the
   * connection and the server's `welcome` event.
   * Options: `server` (default: the next one in turn) and socket.io options.
   */
  async connect(transport, { server, ...options } = {}) {
    const target = server ?? this.getTopology().serverFor(this.opened);
    this.opened += 1;
    const socket = io(target.url, {
      transports: [transport],
      forceNew: true,
      reconnection: false,
      timeout: EVENT_TIMEOUT_MS,
      ...options,
    });
    this.open.add(socket);
    this.servers.set(socket, target);
    // Registered synchronously, before any packet can arrive.
    const welcome = nextEvent(socket, "welcome");
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", (err) =>
        reject(new Error(`connect_error over ${transport} to ${target.id}: ${err.message}`)),
      );
    });
    const [payload] = await welcome;
    return { socket, welcome: payload, server: target };
  }

  /** Connects `n` clients over the same transport. */
  async connectMany(transport, n) {
    const sockets = [];
    for (let i = 0; i < n; i++) sockets.push((await this.connect(transport)).socket);
    return sockets;
  }

  /** The instance a socket was connected to. */
  serverOf(socket) {
    return this.servers.get(socket);
  }

  /** Disconnects every socket opened so far and restarts the rotation. */
  closeAll() {
    for (const socket of this.open) {
      socket.io.reconnection(false);
      socket.disconnect();
    }
    this.open.clear();
    this.opened = 0;
  }

  /**
   * Closes every socket and gives the servers a moment to see the clients'
   * Engine.IO close packets, before the servers are stopped. (A polling
   * session whose client leaves the namespace just as SIGTERM arrives holds
   * up ecos's exit until its next ping; see the "todo" test in
   * contract.test.mjs. Teardown should not depend on that.)
   */
  async closeAllAndSettle() {
    const hadSockets = this.open.size > 0;
    this.closeAll();
    if (hadSockets) await sleep(SETTLE_MS);
  }
}

/** Resolves with the arguments of the next `event` on `socket`. */
export function nextEvent(socket, event, ms = EVENT_TIMEOUT_MS) {
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
export function recorder(socket, event) {
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

/** Resolves or rejects like `promise`, or rejects after `ms` naming `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Sockets opened with `tryConnect` (or handed to `track`), closed by `closeTracked`. */
const tracked = new Set();

/** Keeps `socket` for `closeTracked`. */
export function track(socket) {
  tracked.add(socket);
  return socket;
}

/** Closes every tracked socket, without reconnecting. */
export function closeTracked() {
  for (const s of tracked) {
    s.io.reconnection(false);
    s.disconnect();
  }
  tracked.clear();
}

/**
 * Connects to `server` (tracked) and resolves `{ ok: true, socket, welcome }`,
 * or `{ ok: false, message }` with the connect_error the client saw.
 */
export function tryConnect(server, { transport = "websocket", ...options } = {}) {
  const socket = track(
    io(server.url, {
      transports: [transport],
      forceNew: true,
      reconnection: false,
      timeout: EVENT_TIMEOUT_MS,
      ...options,
    }),
  );
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("neither welcome nor connect_error")), EVENT_TIMEOUT_MS);
    socket.once("welcome", (welcome) => {
      clearTimeout(timer);
      resolve({ ok: true, socket, welcome });
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      socket.close();
      resolve({ ok: false, message: err.message });
    });
  });
}

/** Emits with an ack request and waits (bounded) for the ack. */
export const ack = (socket, ...args) => socket.timeout(ACK_TIMEOUT_MS).emitWithAck(...args);

/** A message round trip from `from` to `to`; proves both are still usable. */
export async function assertMessageFlows(from, to, label) {
  const data = { check: label, at: Date.now() };
  const received = nextEvent(to, "message");
  assert.deepEqual(await ack(from, "message", data), { ok: true });
  assert.deepEqual(await received, [data]);
}

/** Asserts the shape of a refusal ack: ok false and a non-empty error. */
export function assertRefused(reply, what) {
  assert.equal(typeof reply, "object", `${what}: ack should be an object, got ${JSON.stringify(reply)}`);
  assert.equal(reply?.ok, false, `${what}: ack.ok should be false, got ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.error, "string", `${what}: ack.error should be a string`);
  assert.ok(reply.error.length > 0, `${what}: ack.error should not be empty`);
}

/** Socket ids sorted the way the server sorts them (byte order; ids are ASCII). */
export const sortedIds = (sockets) =>
  sockets.map((s) => s.id).sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));

export { sleep };
