// deploy/compose/haproxy.cfg, run for real: Debian's `haproxy` in front of
// three ecos processes that share one Redis ($ECOS_TEST_REDIS_URL, default
// redis://127.0.0.1:6379, under a fresh key prefix; nothing is flushed), all
// on loopback. The official socket.io-client connects through HAProxy only:
//
// - with the file as it is, a polling-only client and a WebSocket-only client
//   on different instances exchange `message` and `room:message` (with acks)
//   for a few seconds, and HAProxy's own log shows every poll of the polling
//   session going to the instance named in its SERVERID cookie;
// - with a test-only copy of the file without the sticky-session lines (the
//   `cookie` directive of the backend and `cookie` on the `server` lines),
//   polling fails with 400 "Session ID unknown" while WebSocket still works.
//   Balancing is round robin over three instances, so the request after a
//   handshake always reaches another instance: the failure is deterministic;
// - Redis outages, with two ecos processes on a `redis-server` of the test's
//   own (on a free port, killed and started again): by default HAProxy keeps
//   both instances UP while Redis is down, a new client connects through it
//   and chats with a client on its instance, and cross-instance delivery
//   heals when Redis returns; with ECOS_READINESS__REQUIRE_REDIS=true both
//   go DOWN and HAProxy refuses new clients until Redis is back.
//
// Run from the repository root:
//
//   node --test --test-reporter=spec tests/js/haproxy.test.mjs
//
// Needs `haproxy` (Debian's package; installed with apt-get in `before` when
// missing and running as root, otherwise the file fails and says so), a Redis,
// `redis-server` on the PATH and the ecos binary ($ECOS_BIN, default target/release/ecos). $HAPROXY_BIN
// overrides the haproxy executable.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { io } from "socket.io-client";
import { ack, eventually, metricOf, nextEvent, sleep, startCluster } from "./harness.mjs";

const run = promisify(execFile);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, "..", "..");
const HAPROXY_CFG = path.join(REPO_ROOT, "deploy/compose/haproxy.cfg");

/** The instance ids equal the `server` names and cookie values in haproxy.cfg. */
const INSTANCES = ["ecos1", "ecos2", "ecos3"];
const CONNECT_TIMEOUT_MS = 5_000;
/** How long the polling and WebSocket clients keep talking through HAProxy. */
const TRAFFIC_MS = 3_000;
const ROUND_PAUSE_MS = 150;
/** Bound on each test and hook (each takes well under a second, the traffic test ~3 s). */
const TEST_TIMEOUT_MS = 15_000;

// ---------------------------------------------------------------------------
// HAProxy processes
// ---------------------------------------------------------------------------

const haproxies = new Set();
process.on("exit", () => {
  for (const h of haproxies) h.child.kill("SIGKILL");
});

/** The haproxy executable: $HAPROXY_BIN, then PATH, then the sbin directories (not on every user's PATH). */
function findHaproxy() {
  if (process.env.HAPROXY_BIN) return process.env.HAPROXY_BIN;
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/sbin", "/usr/local/sbin", "/sbin"];
  for (const dir of dirs) {
    if (dir && existsSync(path.join(dir, "haproxy"))) return path.join(dir, "haproxy");
  }
  return null;
}

/** Finds haproxy, installing Debian's package first if it is missing and we are root. */
async function ensureHaproxy() {
  let bin = findHaproxy();
  if (!bin) {
    if (process.getuid?.() !== 0) {
      throw new Error(
        "haproxy is not installed and this is not root, so it cannot be installed here: " +
          "run `apt-get install -y haproxy` as root (or set HAPROXY_BIN), then rerun this test",
      );
    }
    console.error("haproxy not found; installing Debian's package (apt-get update && apt-get install -y haproxy)");
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    try {
      await run("apt-get", ["update", "-qq"], { env, timeout: 120_000 });
      await run("apt-get", ["install", "-y", "-qq", "haproxy"], { env, timeout: 180_000 });
    } catch (err) {
      throw new Error(`installing haproxy with apt-get failed: ${err.message}\n${err.stderr ?? ""}`);
    }
    bin = findHaproxy();
    if (!bin) throw new Error("apt-get installed haproxy, but no haproxy executable was found afterwards");
  }
  const { stdout, stderr } = await run(bin, ["-v"], { timeout: 5_000 });
  return { bin, version: (stdout || stderr).split("\n")[0] };
}

/** A TCP port that is free on all interfaces right now (HAProxy binds `*:port`). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "0.0.0.0", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves true once something accepts TCP connections on 127.0.0.1:port. */
function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** The environment haproxy.cfg reads: its port and the three backend addresses. */
function haproxyEnv(port, servers) {
  const env = { ...process.env, HAPROXY_PORT: String(port) };
  delete env.HAPROXY_DNS; // unset = resolve the (numeric) addresses once, no resolvers section
  servers.forEach((server, i) => {
    env[`ECOS${i + 1}_ADDR`] = `127.0.0.1:${server.port}`;
  });
  return env;
}

/** `haproxy -c` on a configuration; fails with HAProxy's own words. */
async function checkConfig(bin, cfg, servers) {
  try {
    await run(bin, ["-c", "-f", cfg], { env: haproxyEnv(18080, servers), timeout: 10_000 });
  } catch (err) {
    assert.fail(`haproxy -c -f ${cfg} failed:\n${err.stdout ?? ""}${err.stderr ?? ""}`);
  }
}

/**
 * Starts `haproxy -db -f cfg` on a free port in front of `servers` and waits
 * until it accepts connections. Its stdout is HAProxy's request log
 * (`log stdout` in the cfg), kept whole for `requests()`.
 */
async function startHaproxy(name, bin, cfg, servers) {
  let lastError;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const out = [];
    const err = [];
    const child = spawn(bin, ["-db", "-f", cfg], {
      cwd: REPO_ROOT,
      env: haproxyEnv(port, servers),
      stdio: ["ignore", "pipe", "pipe"],
    });
    const handle = {
      name,
      port,
      url: `http://127.0.0.1:${port}`,
      child,
      out,
      err,
      exited: new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal }))),
      logs: (n = 25) =>
        `--- ${name} (haproxy) log ---\n${out.slice(-n).join("\n") || "(nothing)"}\n` +
        `--- ${name} (haproxy) stderr ---\n${err.slice(-n).join("\n") || "(nothing)"}`,
    };
    haproxies.add(handle);
    handle.exited.then(() => haproxies.delete(handle));
    createInterface({ input: child.stdout }).on("line", (line) => out.push(line));
    createInterface({ input: child.stderr }).on("line", (line) => err.push(line));
    child.on("error", (e) => err.push(`spawn error: ${e.message}`));

    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
      if (await canConnect(port)) return handle;
      await sleep(50);
    }
    child.kill("SIGKILL");
    await handle.exited;
    lastError = `${name}: haproxy did not listen on port ${port} within 5 s (exit code ${child.exitCode})\n${handle.logs()}`;
    // Another process may have taken the port between freePort() and the bind: try another one.
    if (!/cannot bind|Address already in use/i.test(err.join("\n"))) break;
  }
  throw new Error(lastError);
}

async function stopHaproxy(handle) {
  if (!handle || handle.child.exitCode !== null || handle.child.signalCode !== null) return;
  handle.child.kill("SIGTERM");
  const killer = setTimeout(() => handle.child.kill("SIGKILL"), 3_000);
  await handle.exited;
  clearTimeout(killer);
}

/**
 * HAProxy's log lines (`option httplog`, raw format) for the requests of one
 * Engine.IO session: `{ method, server, status }` in log order. A request is
 * logged when it ends, so a long-poll still held open is not in it yet.
 */
function requestsOf(handle, engineId) {
  const requests = [];
  for (const line of handle.out) {
    const m = / ecos_back\/(\S+) \S+ (-?\d+) .*"(\w+) (\S+) HTTP\/[\d.]+"/.exec(line);
    if (!m) continue;
    const [, server, status, method, uri] = m;
    const params = new URL(uri, "http://x").searchParams;
    if (params.get("sid") !== engineId) continue;
    requests.push({ method, server, status: Number(status) });
  }
  return requests;
}

/**
 * `requestsOf`, polled until `enough(requests)` holds (HAProxy writes a log
 * line just after the response, so it can trail the client by a moment) or
 * 2 s pass; then the last list is returned for the caller's assertions.
 */
async function loggedRequests(handle, engineId, enough) {
  const deadline = Date.now() + 2_000;
  for (;;) {
    const requests = requestsOf(handle, engineId);
    if (enough(requests) || Date.now() >= deadline) return requests;
    await sleep(25);
  }
}

// ---------------------------------------------------------------------------
// Clients and raw Engine.IO requests
// ---------------------------------------------------------------------------

const sockets = new Set();

/**
 * Opens an official client through `front` and settles on the first of
 * `connect` (then also waits for `welcome`), `connect_error`, `disconnect`
 * or a timeout. Never rejects: the result says what happened.
 */
async function tryConnect(front, transport, options = {}) {
  const socket = io(front.url, {
    transports: [transport],
    forceNew: true,
    reconnection: false,
    timeout: CONNECT_TIMEOUT_MS,
    ...options,
  });
  sockets.add(socket);
  const result = { socket, engineId: null, connected: false, error: null, disconnect: null, welcome: null };
  socket.io.on("open", () => {
    result.engineId = socket.io.engine.id;
  });
  // Listened to from the start (it may come with the CONNECT answer), but
  // only waited for (with a timeout) once connected.
  const welcome = new Promise((resolve) => socket.once("welcome", resolve));
  const outcome = await new Promise((resolve) => {
    const timer = setTimeout(() => resolve("timeout"), CONNECT_TIMEOUT_MS + 1_000);
    const finish = (what) => () => {
      clearTimeout(timer);
      resolve(what);
    };
    socket.once("connect", finish("connect"));
    socket.once("connect_error", (err) => {
      result.error = err;
      finish("connect_error")();
    });
    socket.once("disconnect", (reason) => {
      result.disconnect = reason;
      finish("disconnect")();
    });
  });
  if (outcome === "connect") {
    result.connected = true;
    let timer;
    result.welcome = await Promise.race([
      welcome,
      new Promise((resolve) => {
        timer = setTimeout(resolve, CONNECT_TIMEOUT_MS, null);
      }),
    ]);
    clearTimeout(timer);
    assert.ok(result.welcome, `no welcome within ${CONNECT_TIMEOUT_MS} ms of connecting through ${front.name}`);
  }
  result.outcome = outcome;
  return result;
}

/** Like tryConnect, but the connection must succeed; returns `{ socket, welcome, engineId }`. */
async function connectOk(front, transport, options) {
  const r = await tryConnect(front, transport, options);
  assert.equal(
    r.outcome,
    "connect",
    `${transport} client through ${front.name} should connect; got ${r.outcome}: ${r.error?.message ?? r.disconnect ?? ""}`,
  );
  assert.equal(r.welcome.id, r.socket.id, "welcome.id is the client's socket id");
  assert.ok(INSTANCES.includes(r.welcome.instance), `welcome.instance ${JSON.stringify(r.welcome.instance)}`);
  assert.equal(r.socket.io.engine.transport.name, transport);
  return r;
}

async function closeSockets() {
  const had = sockets.size > 0;
  for (const socket of sockets) socket.disconnect();
  sockets.clear();
  // Let the close packets reach the servers before anything is stopped.
  if (had) await sleep(200);
}

const EIO = "/socket.io/?EIO=4&transport=polling";
const SEP = "\x1e"; // Engine.IO v4 packet separator in a polling payload

/** One raw Engine.IO polling request through HAProxy: `{ status, body, setCookie }`. */
async function poll(front, { sid, cookie, body } = {}) {
  const headers = {};
  if (cookie) headers.cookie = cookie;
  if (body !== undefined) headers["content-type"] = "text/plain;charset=UTF-8";
  const res = await fetch(`${front.url}${EIO}${sid ? `&sid=${encodeURIComponent(sid)}` : ""}`, {
    method: body === undefined ? "GET" : "POST",
    headers,
    body,
    signal: AbortSignal.timeout(3_000),
  });
  return { status: res.status, body: await res.text(), setCookie: res.headers.getSetCookie() };
}

/** A raw handshake: the session id and the SERVERID cookie HAProxy set (or null). */
async function handshake(front) {
  const res = await poll(front);
  assert.equal(res.status, 200, `handshake through ${front.name}: ${res.body}`);
  assert.equal(res.body[0], "0", `handshake is an Engine.IO open packet: ${res.body}`);
  const open = JSON.parse(res.body.slice(1));
  assert.equal(typeof open.sid, "string");
  const serverCookie = res.setCookie.map((c) => /^SERVERID=([^;]*)/.exec(c)?.[1]).find(Boolean) ?? null;
  return { sid: open.sid, serverCookie, setCookie: res.setCookie };
}

/** Polls (with `cookie`) until a packet starting with `prefix` arrives; returns its payloads. */
async function pollFor(front, sid, cookie, prefix) {
  const seen = [];
  for (let i = 0; i < 4; i++) {
    const res = await poll(front, { sid, cookie });
    assert.equal(res.status, 200, `poll ${i + 1} with ${cookie}: ${res.body}`);
    const packets = res.body.split(SEP);
    seen.push(...packets);
    const hit = packets.find((p) => p.startsWith(prefix));
    if (hit) return hit.slice(prefix.length);
  }
  assert.fail(`no packet starting with ${JSON.stringify(prefix)} in ${JSON.stringify(seen)}`);
}

const SESSION_UNKNOWN = { code: "1", message: "Session ID unknown" };

const twoRefused = (routed) => routed.filter((r) => r.status === 400).length >= 2;

/**
 * HAProxy's log of a polling client that failed for lack of stickiness. The
 * handshake went to one instance; round robin sent the Socket.IO CONNECT
 * (POST) and the first poll (GET), issued together, to the two others, which
 * answered 400. The client's farewell close packet, if any, comes round to
 * the holder (200). Nothing else is allowed.
 */
function assertRefusedElsewhere(routed) {
  const what = JSON.stringify(routed);
  const refused = routed.filter((r) => r.status === 400);
  assert.ok(refused.length >= 2, `at least the CONNECT and the first poll were refused: ${what}`);
  const refusing = new Set(refused.map((r) => r.server));
  assert.equal(refusing.size, 2, `the two instances that do not hold the session refused: ${what}`);
  const answered = routed.filter((r) => r.status !== 400);
  for (const r of answered) {
    assert.equal(r.status, 200, what);
    assert.ok(!refusing.has(r.server), `only the holder answers 200: ${what}`);
  }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/** Runs `fn`; on failure prints the tails of every process's log first. */
const withLogs = (fn) => async (t) => {
  try {
    await fn(t);
  } catch (err) {
    console.error(
      [...haproxies].map((h) => h.logs()).join("\n") +
        "\n" +
        (cluster?.servers ?? []).map((s) => s.logs()).join("\n"),
    );
    throw err;
  }
};

let cluster;
let haproxyBin;

describe("deploy/compose/haproxy.cfg, live: haproxy in front of 3 ecos instances on one Redis", () => {
  let sticky;

  before(
    withLogs(async () => {
      const found = await ensureHaproxy();
      haproxyBin = found.bin;
      console.error(`# using ${found.bin}: ${found.version}`);
      cluster = await startCluster({ ids: INSTANCES });
      for (const server of cluster.servers) {
        // The harness read the port from the JSON start-up line; check it was "ecos started".
        const started = server
          .logs()
          .split("\n")
          .map((line) => {
            try {
              return JSON.parse(line);
            } catch {
              return null;
            }
          })
          .find((entry) => entry?.fields?.message === "ecos started");
        assert.ok(started, `${server.id}: no "ecos started" line\n${server.logs()}`);
        assert.match(started.fields.addr, new RegExp(`:${server.port}$`), `${server.id}'s start-up addr`);
        const ready = await fetch(`${server.url}/readyz`);
        const body = await ready.json();
        assert.equal(ready.status, 200, JSON.stringify(body));
        assert.equal(body.instance, server.id);
        assert.equal(body.adapter, "redis", `${server.id} runs on Redis: ${JSON.stringify(body)}`);
      }
      await checkConfig(haproxyBin, HAPROXY_CFG, cluster.servers);
      sticky = await startHaproxy("sticky", haproxyBin, HAPROXY_CFG, cluster.servers);
    }),
    { timeout: 400_000 }, // apt-get on a machine without haproxy; 2-3 s otherwise
  );

  after(
    async () => {
      await closeSockets();
      await Promise.all([...haproxies].map(stopHaproxy));
      await cluster?.stop();
    },
    { timeout: TEST_TIMEOUT_MS },
  );

  it(
    "a raw Engine.IO session stays on the instance named in its SERVERID cookie; without the cookie the next poll gets 400",
    { timeout: TEST_TIMEOUT_MS },
    withLogs(async () => {
      const { sid, serverCookie, setCookie } = await handshake(sticky);
      assert.ok(INSTANCES.includes(serverCookie), `handshake should set SERVERID=ecosN, got ${JSON.stringify(setCookie)}`);
      assert.match(setCookie.join("\n"), /SERVERID=ecos\d; path=\/; HttpOnly/);
      const cookie = `SERVERID=${serverCookie}`;

      // Socket.IO CONNECT, then the welcome names the instance that holds the session.
      const posted = await poll(sticky, { sid, cookie, body: "40" });
      assert.deepEqual([posted.status, posted.body], [200, "ok"]);
      const welcome = JSON.parse(await pollFor(sticky, sid, cookie, "42"));
      assert.equal(welcome[0], "welcome");
      assert.equal(welcome[1].instance, serverCookie, "the cookie names the instance holding the session");

      // Several more request/response pairs on the same session, all answered.
      for (let i = 0; i < 3; i++) {
        const sent = await poll(sticky, { sid, cookie, body: `42${i}["join","raw-${i}"]` });
        assert.equal(sent.status, 200, sent.body);
        const reply = JSON.parse(await pollFor(sticky, sid, cookie, `43${i}`));
        assert.deepEqual(reply, [{ ok: true, room: `raw-${i}` }]);
      }
      const routed = await loggedRequests(sticky, sid, (r) => r.length >= 8);
      assert.ok(routed.length >= 8, `HAProxy logged ${routed.length} requests for the session`);
      assert.deepEqual(new Set(routed.map((r) => r.server)), new Set([serverCookie]), JSON.stringify(routed));
      assert.deepEqual(new Set(routed.map((r) => r.status)), new Set([200]));
      assert.equal((await poll(sticky, { sid, cookie, body: "1" })).status, 200); // Engine.IO close

      // A new session, polled without its cookie: round robin sends the poll
      // to the next instance, which does not know the session.
      const other = await handshake(sticky);
      const lost = await poll(sticky, { sid: other.sid });
      assert.equal(lost.status, 400, lost.body);
      assert.deepEqual(JSON.parse(lost.body), SESSION_UNKNOWN);
      const landed = lost.setCookie.map((c) => /^SERVERID=([^;]*)/.exec(c)?.[1]).find(Boolean);
      assert.ok(INSTANCES.includes(landed), `HAProxy names the instance that answered: ${JSON.stringify(lost.setCookie)}`);
      assert.notEqual(landed, other.serverCookie, "the cookie-less poll reached another instance");
      const closed = await poll(sticky, { sid: other.sid, cookie: `SERVERID=${other.serverCookie}`, body: "1" });
      assert.equal(closed.status, 200, `with its cookie the session is found again: ${closed.body}`);
    }),
  );

  it(
    `a polling-only client (withCredentials: true) and a WebSocket-only client exchange messages for ${TRAFFIC_MS / 1000} s`,
    { timeout: TEST_TIMEOUT_MS + TRAFFIC_MS },
    withLogs(async () => {
      // In Node, engine.io-client keeps cookies (its own cookie jar) only with
      // withCredentials: true; without it the SERVERID cookie is dropped.
      const p = await connectOk(sticky, "polling", { withCredentials: true });
      const w = await connectOk(sticky, "websocket");
      const P = p.socket;
      const W = w.socket;
      console.error(`# polling client on ${p.welcome.instance}, WebSocket client on ${w.welcome.instance}`);
      assert.notEqual(
        p.welcome.instance,
        w.welcome.instance,
        "round robin puts the two clients on different instances, so every delivery crosses Redis",
      );

      const pDisconnects = [];
      P.on("disconnect", (reason) => pDisconnects.push(reason));
      const got = { P: { message: [], room: [] }, W: { message: [], room: [] } };
      P.on("message", (data) => got.P.message.push(data));
      W.on("message", (data) => got.W.message.push(data));
      P.on("room:message", (room, data) => got.P.room.push([room, data]));
      W.on("room:message", (room, data) => got.W.room.push([room, data]));

      const ROOM = "hp-room";
      assert.deepEqual(await ack(P, "join", ROOM), { ok: true, room: ROOM });
      assert.deepEqual(await ack(W, "join", ROOM), { ok: true, room: ROOM });
      const members = await ack(P, "room:members", ROOM);
      assert.equal(members.ok, true, JSON.stringify(members));
      assert.equal(members.count, 2, `room:members sees both instances' members: ${JSON.stringify(members)}`);

      const sent = { P: { message: [], room: [] }, W: { message: [], room: [] } };
      const started = Date.now();
      let rounds = 0;
      while (Date.now() - started < TRAFFIC_MS) {
        const fromP = { from: "polling", round: rounds };
        const fromW = { from: "websocket", round: rounds };
        const acks = await Promise.all([
          ack(P, "message", fromP),
          ack(W, "message", fromW),
          ack(P, "room:message", ROOM, fromP),
          ack(W, "room:message", ROOM, fromW),
        ]);
        assert.deepEqual(acks, [{ ok: true }, { ok: true }, { ok: true }, { ok: true }], `acks of round ${rounds}`);
        sent.P.message.push(fromP);
        sent.W.message.push(fromW);
        sent.P.room.push([ROOM, fromP]);
        sent.W.room.push([ROOM, fromW]);
        rounds += 1;
        await sleep(ROUND_PAUSE_MS);
      }
      assert.ok(rounds >= 5, `only ${rounds} rounds in ${TRAFFIC_MS} ms`);

      // Each receives everything the other sent, in order, and nothing else.
      await eventually(() => got.P.message.length + got.W.message.length, 2 * rounds, 3_000, "messages delivered");
      await eventually(() => got.P.room.length + got.W.room.length, 2 * rounds, 3_000, "room messages delivered");
      assert.deepEqual(got.W.message, sent.P.message, "WebSocket client got the polling client's messages");
      assert.deepEqual(got.P.message, sent.W.message, "polling client got the WebSocket client's messages");
      assert.deepEqual(got.W.room, sent.P.room, "WebSocket client got the polling client's room messages");
      assert.deepEqual(got.P.room, sent.W.room, "polling client got the WebSocket client's room messages");

      // The polling session lasted the whole time, on polling, on one instance.
      assert.deepEqual(pDisconnects, [], "the polling client never disconnected");
      assert.ok(P.connected && W.connected);
      assert.equal(P.io.engine.id, p.engineId, "same Engine.IO session throughout");
      assert.equal(P.io.engine.transport.name, "polling");
      const routed = await loggedRequests(sticky, p.engineId, (r) => r.length >= 2 * rounds);
      assert.ok(routed.length >= 2 * rounds, `HAProxy logged only ${routed.length} polls for ${rounds} rounds`);
      assert.deepEqual(
        new Set(routed.map((r) => r.server)),
        new Set([p.welcome.instance]),
        `every poll went to the instance in the cookie: ${JSON.stringify(routed)}`,
      );
      assert.deepEqual(new Set(routed.map((r) => r.status)), new Set([200]), JSON.stringify(routed));
    }),
  );

  it(
    "a polling-only client WITHOUT withCredentials drops the cookie and fails, even through the sticky config",
    { timeout: TEST_TIMEOUT_MS },
    withLogs(async () => {
      const r = await tryConnect(sticky, "polling");
      assert.equal(r.outcome, "connect_error", `expected connect_error, got ${r.outcome} ${r.disconnect ?? ""}`);
      assert.match(r.error.message, /^xhr (poll|post) error$/);
      assert.ok(r.engineId, "the handshake itself succeeded");
      assertRefusedElsewhere(await loggedRequests(sticky, r.engineId, twoRefused));
    }),
  );

  describe("without the sticky-session lines (a test-only copy of haproxy.cfg)", () => {
    let tmp;
    let loose;
    const removed = [];

    before(
      withLogs(async () => {
        const original = await readFile(HAPROXY_CFG, "utf8");
        const lines = [];
        let balance = 0;
        for (const line of original.split("\n")) {
          const code = line.replace(/#.*/, "");
          if (/^\s*cookie\s/.test(code)) {
            removed.push(line.trim());
            continue;
          }
          if (/^\s*server\s/.test(code) && /\scookie\s+\S+/.test(code)) {
            removed.push(line.trim().match(/cookie\s+\S+/)[0]);
            lines.push(line.replace(/\s+cookie\s+\S+/, ""));
            continue;
          }
          if (/^\s*balance\s/.test(code)) {
            // Round robin makes the failure deterministic: the request after
            // a handshake always goes to another of the three instances.
            balance += 1;
            lines.push(line.replace(/balance\s+.*/, "balance roundrobin"));
            continue;
          }
          lines.push(line);
        }
        assert.equal(balance, 1, "haproxy.cfg has one balance line");
        assert.match(original, /^\s*balance\s+roundrobin\s*$/m, "haproxy.cfg itself balances round robin");
        tmp = await mkdtemp(path.join(os.tmpdir(), "ecos-haproxy-"));
        const cfg = path.join(tmp, "haproxy-no-sticky.cfg");
        await writeFile(cfg, lines.join("\n"));
        loose = await startHaproxy("no-sticky", haproxyBin, cfg, cluster.servers);
      }),
      { timeout: TEST_TIMEOUT_MS },
    );

    after(
      async () => {
        await closeSockets();
        await stopHaproxy(loose);
        if (tmp) await rm(tmp, { recursive: true, force: true });
      },
      { timeout: TEST_TIMEOUT_MS },
    );

    it(
      "the copy lacks exactly the backend's cookie directive and the three servers' cookies, and is valid",
      { timeout: TEST_TIMEOUT_MS },
      withLogs(async () => {
        assert.equal(removed.length, 4, JSON.stringify(removed));
        assert.match(removed[0], /^cookie SERVERID insert\b/);
        assert.deepEqual(removed.slice(1), ["cookie ecos1", "cookie ecos2", "cookie ecos3"]);
        const copy = await readFile(path.join(tmp, "haproxy-no-sticky.cfg"), "utf8");
        const code = copy.split("\n").map((l) => l.replace(/#.*/, ""));
        assert.equal(code.filter((l) => /\bcookie\b/.test(l)).length, 0, "no cookie left outside comments");
        await checkConfig(haproxyBin, path.join(tmp, "haproxy-no-sticky.cfg"), cluster.servers);
      }),
    );

    it(
      "a raw poll after the handshake reaches another instance: 400 Session ID unknown",
      { timeout: TEST_TIMEOUT_MS },
      withLogs(async () => {
        const { sid, serverCookie } = await handshake(loose);
        assert.equal(serverCookie, null, "no SERVERID cookie without the sticky lines");
        const res = await poll(loose, { sid });
        assert.equal(res.status, 400, res.body);
        assert.deepEqual(JSON.parse(res.body), SESSION_UNKNOWN);
      }),
    );

    it(
      "a polling-only client, cookie jar on, cannot connect",
      { timeout: TEST_TIMEOUT_MS },
      withLogs(async () => {
        const r = await tryConnect(loose, "polling", { withCredentials: true });
        assert.equal(r.outcome, "connect_error", `expected connect_error, got ${r.outcome} ${r.disconnect ?? ""}`);
        assert.match(r.error.message, /^xhr (poll|post) error$/);
        assert.equal(r.connected, false);
        assert.ok(r.engineId, "the handshake itself succeeded");
        assertRefusedElsewhere(await loggedRequests(loose, r.engineId, twoRefused));
      }),
    );

    it(
      "WebSocket-only clients still work: messages, room messages and acks across instances",
      { timeout: TEST_TIMEOUT_MS },
      withLogs(async () => {
        const a = await connectOk(loose, "websocket");
        const b = await connectOk(loose, "websocket");
        console.error(`# WebSocket clients (no stickiness) on ${a.welcome.instance} and ${b.welcome.instance}`);
        assert.notEqual(a.welcome.instance, b.welcome.instance, "round robin spreads the two clients");
        const A = a.socket;
        const B = b.socket;
        for (let i = 0; i < 3; i++) {
          const atB = nextEvent(B, "message");
          assert.deepEqual(await ack(A, "message", { n: i }), { ok: true });
          assert.deepEqual(await atB, [{ n: i }]);
          const atA = nextEvent(A, "message");
          assert.deepEqual(await ack(B, "message", { n: 100 + i }), { ok: true });
          assert.deepEqual(await atA, [{ n: 100 + i }]);
        }
        assert.deepEqual(await ack(A, "join", "ws-room"), { ok: true, room: "ws-room" });
        assert.deepEqual(await ack(B, "join", "ws-room"), { ok: true, room: "ws-room" });
        const atA = nextEvent(A, "room:message");
        assert.deepEqual(await ack(B, "room:message", "ws-room", "hello"), { ok: true });
        assert.deepEqual(await atA, ["ws-room", "hello"]);
        assert.ok(A.connected && B.connected);
      }),
    );
  });
});

// ---------------------------------------------------------------------------
// Redis outages behind HAProxy
// ---------------------------------------------------------------------------

const redises = new Set();
process.on("exit", () => {
  for (const r of redises) r.child?.kill("SIGKILL");
});

/**
 * A `redis-server` of this test's own on a free port, which the test kills
 * and starts again on the same port. `start()` resolves once it accepts
 * connections; `kill()` is SIGKILL, an outage without goodbye.
 */
function redisServer(port) {
  const handle = {
    port,
    url: `redis://127.0.0.1:${port}`,
    child: null,
    err: [],
    async start() {
      const child = spawn(
        "redis-server",
        ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      handle.child = child;
      handle.exited = new Promise((resolve) => child.on("exit", resolve));
      redises.add(handle);
      createInterface({ input: child.stderr }).on("line", (line) => handle.err.push(line));
      child.on("error", (e) => handle.err.push(`spawn error: ${e.message} (is redis-server installed?)`));
      const deadline = Date.now() + 5_000;
      while (Date.now() < deadline && child.exitCode === null) {
        if (await canConnect(port)) return;
        await sleep(50);
      }
      throw new Error(`redis-server did not listen on ${port} within 5 s: ${handle.err.join("\n")}`);
    },
    async kill() {
      const child = handle.child;
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGKILL");
      await handle.exited;
      redises.delete(handle);
    },
  };
  return handle;
}

/** GET /readyz of one instance directly (not through HAProxy): `{ status, body }`. */
async function readyz(server) {
  const res = await fetch(`${server.url}/readyz`, { signal: AbortSignal.timeout(2_000) });
  return { status: res.status, body: await res.json() };
}

/** Waits until every one of `servers` reports `"redis": state` in /readyz; returns the last answers. */
async function waitRedis(servers, state, ms = 10_000) {
  let answers = [];
  await eventually(
    async () => {
      answers = await Promise.all(servers.map(readyz));
      return answers.map((a) => a.body.redis);
    },
    servers.map(() => state),
    ms,
    `"redis": "${state}" on ${servers.map((s) => s.id).join(", ")}`,
  );
  return answers;
}

/** HAProxy's own log says that `server` of the backend went DOWN (`up` false) or UP. */
const sawState = (front, server, up) =>
  [...front.out, ...front.err].some((line) =>
    new RegExp(`Server ecos_back/${server} is ${up ? "UP" : "DOWN"}`).test(line),
  );

/**
 * WebSocket clients through `front` until one lands on each of `instances`
 * (round robin alternates, so two or three tries do); returns them by instance.
 */
async function oneClientOn(front, instances) {
  const byInstance = {};
  for (let i = 0; i < 6 && Object.keys(byInstance).length < instances.length; i++) {
    const r = await connectOk(front, "websocket");
    if (byInstance[r.welcome.instance]) r.socket.disconnect();
    else byInstance[r.welcome.instance] = r.socket;
  }
  assert.deepEqual(Object.keys(byInstance).sort(), [...instances].sort(), "a client on every instance");
  return byInstance;
}

/** `from` sends a `message`; `to` receives it, and every socket in `not` stays silent. */
async function assertDelivered(from, to, not, label) {
  const data = { label, at: Date.now() };
  const got = nextEvent(to, "message");
  const stray = [];
  const listeners = not.map((s) => {
    const handler = (d) => stray.push(d);
    s.on("message", handler);
    return () => s.off("message", handler);
  });
  assert.deepEqual(await ack(from, "message", data), { ok: true }, label);
  assert.deepEqual(await got, [data], label);
  await sleep(300);
  for (const off of listeners) off();
  assert.deepEqual(stray, [], `${label}: nobody else should receive it`);
}

/**
 * Two ecos instances (ecos1, ecos2) on a Redis of their own, with `env`
 * added, and the shipped haproxy.cfg in front. Its third server points at a
 * port where nothing listens, and the setup waits until HAProxy has marked
 * that one DOWN, so new clients reach the two instances only.
 */
async function outageSetup(name, env = {}) {
  const redis = redisServer(await freePort());
  await redis.start();
  const topo = await startCluster({ ids: ["ecos1", "ecos2"], env: { REDIS_URL: redis.url, ...env } });
  const nowhere = { port: await freePort() };
  const front = await startHaproxy(name, haproxyBin, HAPROXY_CFG, [...topo.servers, nowhere]);
  await eventually(() => sawState(front, "ecos3", false), true, 5_000, "HAProxy marks the empty ecos3 DOWN");
  return { redis, topo, front };
}

async function outageTeardown(setup) {
  await closeSockets();
  await stopHaproxy(setup?.front);
  await setup?.topo.stop();
  await setup?.redis.kill();
}

/** Like withLogs, for a setup of this section: HAProxy's, both instances' and Redis's log tails on failure. */
const withOutageLogs = (get, fn) => async (t) => {
  try {
    await fn(t);
  } catch (err) {
    const setup = get();
    console.error(
      [
        setup?.front?.logs(40),
        ...(setup?.topo.servers ?? []).map((s) => s.logs()),
        `--- redis-server stderr ---\n${setup?.redis.err.slice(-20).join("\n") ?? ""}`,
      ].join("\n"),
    );
    throw err;
  }
};

/** Two HAProxy check intervals (`inter 1s fall 2`) and some: enough to mark a failing server DOWN. */
const CHECKS_MS = 3_000;

describe("Redis outage behind haproxy.cfg: 2 ecos instances on a Redis of the test's own", () => {
  let setup;

  before(
    withOutageLogs(
      () => setup,
      async () => {
        if (!haproxyBin) haproxyBin = (await ensureHaproxy()).bin;
        setup = await outageSetup("outage");
      },
    ),
    { timeout: 400_000 }, // apt-get when haproxy is missing; a few seconds otherwise
  );

  after(() => outageTeardown(setup), { timeout: TEST_TIMEOUT_MS });

  it(
    "Redis killed: both instances stay in rotation, a NEW client connects through HAProxy and chats on its instance; Redis back: cross-instance delivery heals",
    { timeout: 45_000 },
    withOutageLogs(
      () => setup,
      async () => {
        const { redis, topo, front } = setup;
        const [s1, s2] = topo.servers;
        const before = await oneClientOn(front, ["ecos1", "ecos2"]);
        const [a, b] = [before.ecos1, before.ecos2];
        await assertDelivered(a, b, [], "across instances, Redis up");

        await redis.kill();
        const answers = await waitRedis([s1, s2], "down", 5_000);
        for (const { status, body } of answers) {
          assert.equal(status, 200, `readiness stays 200 while Redis is down: ${JSON.stringify(body)}`);
          assert.equal(body.status, "ready", JSON.stringify(body));
          assert.match(body.reason, /redis/i, JSON.stringify(body));
        }
        // Long enough for HAProxy to have marked a failing server DOWN.
        await sleep(CHECKS_MS);
        for (const server of ["ecos1", "ecos2"]) {
          assert.ok(!sawState(front, server, false), `HAProxy kept ${server} UP\n${front.logs(40)}`);
        }
        assert.equal(await metricOf(s1, "ecos_redis_up"), 0);

        // New clients connect through HAProxy, on both instances, and chat
        // with the client already there; nothing crosses instances.
        const during = await oneClientOn(front, ["ecos1", "ecos2"]);
        const [c, d] = [during.ecos1, during.ecos2];
        await assertDelivered(c, a, [b, d], "new client on ecos1 to its neighbour, Redis down");
        await assertDelivered(a, c, [b, d], "neighbour to the new client on ecos1, Redis down");
        await assertDelivered(d, b, [a, c], "new client on ecos2 to its neighbour, Redis down");

        // Redis returns on the same port: every client hears the others again.
        await redis.start();
        await waitRedis([s1, s2], "up", 15_000);
        const heard = [b, c, d].map((s) => nextEvent(s, "message"));
        assert.deepEqual(await ack(a, "message", "healed"), { ok: true });
        assert.deepEqual(await Promise.all(heard), [["healed"], ["healed"], ["healed"]]);
        await assertDelivered(d, c, [], "new clients across instances after the outage");
        assert.ok(a.connected && b.connected && c.connected && d.connected, "nobody was disconnected");
      },
    ),
  );
});

describe("Redis outage behind haproxy.cfg with ECOS_READINESS__REQUIRE_REDIS=true", () => {
  let setup;

  before(
    withOutageLogs(
      () => setup,
      async () => {
        if (!haproxyBin) haproxyBin = (await ensureHaproxy()).bin;
        setup = await outageSetup("strict", { ECOS_READINESS__REQUIRE_REDIS: "true" });
      },
    ),
    { timeout: 400_000 },
  );

  after(() => outageTeardown(setup), { timeout: TEST_TIMEOUT_MS });

  it(
    "Redis killed: /readyz 503 degraded, HAProxy marks both instances DOWN and refuses new clients; Redis back: they return",
    { timeout: 45_000 },
    withOutageLogs(
      () => setup,
      async () => {
        const { redis, topo, front } = setup;
        const [s1, s2] = topo.servers;
        await redis.kill();
        await eventually(
          async () => (await Promise.all([s1, s2].map(readyz))).map((a) => [a.status, a.body.status, a.body.redis]),
          [
            [503, "degraded", "down"],
            [503, "degraded", "down"],
          ],
          5_000,
          "/readyz of both instances",
        );
        await eventually(
          () => sawState(front, "ecos1", false) && sawState(front, "ecos2", false),
          true,
          CHECKS_MS + 2_000,
          "HAProxy marks both instances DOWN",
        );
        const refused = await fetch(`${front.url}${EIO}`, { signal: AbortSignal.timeout(3_000) });
        assert.equal(refused.status, 503, "HAProxy has no server left for a new client");
        await refused.text();

        await redis.start();
        await waitRedis([s1, s2], "up", 15_000);
        await eventually(
          () => sawState(front, "ecos1", true) && sawState(front, "ecos2", true),
          true,
          CHECKS_MS + 2_000,
          "HAProxy marks both instances UP again",
        );
        const back = await oneClientOn(front, ["ecos1", "ecos2"]);
        await assertDelivered(back.ecos1, back.ecos2, [], "across instances once Redis is back");
      },
    ),
  );
});

