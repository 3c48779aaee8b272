// Shared helpers for the JavaScript tests: starting ecos processes (one
// instance or a Redis-backed cluster), connecting official socket.io-client
// sockets to them, and small assertion helpers.
//
// Not a test file itself: `node --test tests/js/*.test.mjs` only runs the
// *.test.mjs files, which import this module.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { it as nodeIt } from "node:test";
import { io } from "socket.io-client";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, "..", "..");
export const ECOS_BIN = process.env.ECOS_BIN
  ? path.resolve(process.env.ECOS_BIN)
  : path.resolve(REPO_ROOT, "target/release/ecos");
export const REDIS_URL = process.env.ECOS_TEST_REDIS_URL || "redis://127.0.0.1:6379";

const STARTUP_TIMEOUT_MS = 10_000;
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
// Server processes
// ---------------------------------------------------------------------------

/** Every child process still running, killed hard if this file exits early. */
const running = new Set();
const killAll = () => {
  for (const child of running) child.kill("SIGKILL");
};
process.on("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    killAll();
    process.exit(128 + (signal === "SIGINT" ? 2 : 15));
  });
}

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
 * The environment for a server: ours minus anything that would change what
 * ecos does behind the test's back (a stray REDIS_URL would turn the single
 * instance into a cluster member, and $DYNO wins over ECOS_INSTANCE_ID).
 */
function serverEnv(extra) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith("ECOS_") || ["REDIS_URL", "DYNO", "PORT"].includes(key)) continue;
    env[key] = value;
  }
  return {
    ...env,
    PORT: "0",
    ECOS_LOG__FORMAT: "json",
    ECOS_SOCKETIO__ACK_TIMEOUT_SECS: String(SERVER_ACK_TIMEOUT_MS / 1000),
    ...extra,
  };
}

/**
 * Starts the ecos binary and resolves once its JSON start-up line (the one
 * carrying `fields.addr`) has been printed.
 *
 * Resolves with a server handle: `{ id, port, url, child, exited, logs() }`,
 * where `exited` resolves with `{ code, signal }` and `logs()` is the tail of
 * stdout and stderr.
 */
export function startServer(id, env = {}) {
  return new Promise((resolve, reject) => {
    const stdout = tail();
    const stderr = tail();
    const logs = () => `--- ${id} stdout ---\n${stdout.text()}\n--- ${id} stderr ---\n${stderr.text()}`;
    let settled = false;

    const child = spawn(ECOS_BIN, [], {
      cwd: REPO_ROOT,
      env: serverEnv({ ECOS_INSTANCE_ID: id, ...env }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    running.add(child);
    const exited = new Promise((resolveExit) =>
      child.on("exit", (code, signal) => {
        running.delete(child);
        resolveExit({ code, signal });
      }),
    );

    const fail = (why) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${id}: ${why}\n  binary: ${ECOS_BIN}\n${logs()}`));
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
        console.error(`${id}: ecos exited unexpectedly (code ${code}, signal ${signal})\n${logs()}`);
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
      resolve({ id, port, url: `http://127.0.0.1:${port}`, child, exited, logs });
    });
  });
}

/**
 * Polls `/readyz` until it answers 200 and, on the Redis adapter, reports
 * `"redis": "up"` (readiness alone stays 200 while Redis is unreachable);
 * fails with the server's log tail.
 */
export async function waitReady(server, ms = STARTUP_TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  let last = "no answer yet";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${server.url}/readyz`);
      const body = await res.text();
      if (res.status === 200) {
        const parsed = JSON.parse(body);
        if (parsed.adapter !== "redis" || parsed.redis === "up") return parsed;
      }
      last = `${res.status} ${body}`;
    } catch (err) {
      last = err.message;
    }
    await sleep(50);
  }
  throw new Error(`${server.id}: /readyz did not answer 200 (with Redis up) within ${ms / 1000} s (last: ${last})\n${server.logs()}`);
}

/** Whether the server process is still running. */
export const isRunning = (server) => server.child.exitCode === null && server.child.signalCode === null;

/** SIGTERM, then SIGKILL (with a warning) if the server has not exited after `graceMs`. */
export async function stopServer(server, graceMs = 10_000) {
  const child = server?.child;
  if (!child || !isRunning(server)) return;
  child.stopping = true;
  child.kill("SIGTERM");
  const killer = setTimeout(() => {
    console.error(`${server.id}: still running ${graceMs / 1000} s after SIGTERM; sending SIGKILL\n${server.logs()}`);
    child.kill("SIGKILL");
  }, graceMs);
  await server.exited;
  clearTimeout(killer);
}

/** Kills a server at once, like a crash (SIGKILL). */
export async function killServer(server) {
  const child = server.child;
  if (!isRunning(server)) return;
  child.stopping = true;
  child.kill("SIGKILL");
  await server.exited;
}

/** Starts servers in parallel; if any fails, stops the others and rethrows. */
async function startAll(specs) {
  const results = await Promise.allSettled(
    specs.map(async ([id, env]) => {
      const server = await startServer(id, env);
      try {
        await waitReady(server);
      } catch (err) {
        await killServer(server);
        throw err;
      }
      return server;
    }),
  );
  const failures = results.filter((r) => r.status === "rejected");
  if (failures.length) {
    await Promise.all(results.filter((r) => r.status === "fulfilled").map((r) => stopServer(r.value)));
    throw new Error(failures.map((f) => f.reason?.message ?? String(f.reason)).join("\n\n"));
  }
  return results.map((r) => r.value);
}

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

/** A fresh Redis prefix, so parallel runs (and clusters) never see each other. */
export function uniquePrefix() {
  return `ecos-js-${process.pid}-${randomBytes(4).toString("hex")}`;
}

/** Environment of a cluster member sharing `prefix`. */
function clusterEnv(prefix) {
  return {
    REDIS_URL,
    ECOS_REDIS__PREFIX: prefix,
    ECOS_REDIS__STATS_INTERVAL_SECS: "0.2",
  };
}

/**
 * `ids.length` instances on the machine's Redis ($ECOS_TEST_REDIS_URL),
 * sharing a prefix of their own, with `env` added to each one's environment.
 * `addServer(id)` starts one more member.
 */
export async function startCluster({ ids = ["js-a", "js-b", "js-c"], env = {} } = {}) {
  const prefix = uniquePrefix();
  const memberEnv = () => ({ ...clusterEnv(prefix), ...env });
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
