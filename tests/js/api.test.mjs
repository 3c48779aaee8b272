// The HTTP server API (docs/server-api.md) driven with Node's own `fetch`,
// asserted on official socket.io-client sockets:
//
// - a three-instance cluster on the machine's Redis (a prefix of its own),
//   every call made on instance A and the clients on A, B and C: every
//   route, every selector, binary arguments, several arguments;
// - the refusals: 401 (counted), 400 naming the field, 404/405, 413, and 404
//   everywhere under /api when no key is configured;
// - each call logged once with its X-Request-ID;
// - the msgpack parser: binary arguments arrive as binary there too;
// - a Redis outage, on a redis-server of this file's own that it kills:
//   local delivery, and `cluster: "down"` with a warning in the answer.

import { describe, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import net from "node:net";
import msgpackParser from "socket.io-msgpack-parser";
import {
  Clients,
  QUIET_MS,
  eventually,
  it,
  metricValue,
  nextEvent,
  recorder,
  sleep,
  sortedIds,
  startCluster,
  startSingle,
} from "./harness.mjs";
import { startInstances, stopInstance, uniquePrefix, waitReady } from "../support/launcher.mjs";

const KEY = `js-api-key-${randomBytes(12).toString("hex")}`;
const API_ENV = { ECOS_API__KEYS: KEY };

/**
 * One API call: `{ status, body, headers }` (body parsed as JSON when it is).
 * Options: `key` (null: no Authorization header), `headers`, `raw` (a body
 * sent as is).
 */
async function call(server, method, path, body, { key = KEY, headers = {}, raw } = {}) {
  const init = { method, headers: { ...headers } };
  if (key !== null) init.headers.authorization = `Bearer ${key}`;
  if (raw !== undefined || body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = raw ?? JSON.stringify(body);
  }
  const res = await fetch(`${server.url}${path}`, init);
  const text = await res.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: kept as text for the assertion message
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** POSTs and asserts a 200 `{ ok: true, cluster: <cluster> }` answer. */
async function ok(server, path, body, cluster = "up") {
  const answer = await call(server, "POST", path, body);
  assert.equal(answer.status, 200, `${path} ${JSON.stringify(body)}: ${JSON.stringify(answer.body)}`);
  assert.equal(answer.body.ok, true);
  assert.equal(answer.body.cluster, cluster, JSON.stringify(answer.body));
  return answer.body;
}

/** The bytes of a binary argument as the Node client hands it over. */
function bytes(value) {
  assert.ok(Buffer.isBuffer(value) || value instanceof ArrayBuffer, `binary expected, got ${JSON.stringify(value)}`);
  return [...Buffer.from(value)];
}

describe("server API on a 3-instance cluster (calls on A, clients on A, B and C)", () => {
  let topo;
  const clients = new Clients(() => topo);

  before(async () => {
    topo = await startCluster({ ids: ["js-api-a", "js-api-b", "js-api-c"], env: API_ENV });
  });
  afterEach(() => clients.closeAllAndSettle());
  after(async () => {
    clients.closeAll();
    await topo?.stop();
  });

  /** A client on each instance: a on A (websocket), b on B (polling), c on C (websocket). */
  async function three() {
    const [A, B, C] = topo.servers;
    const { socket: a } = await clients.connect("websocket", { server: A });
    const { socket: b } = await clients.connect("polling", { server: B });
    const { socket: c } = await clients.connect("websocket", { server: C });
    return { A, a, b, c };
  }

  it("emit: everyone, rooms, users, sockets and except, each argument separate", async () => {
    const { A, a, b, c } = await three();
    await ok(A, "/api/v1/join", { sockets: [b.id, c.id], room: "user:alice" });
    await ok(A, "/api/v1/join", { sockets: [a.id, c.id], room: "order:17" });

    // No selector: everyone, on every instance; three separate arguments.
    let got = [a, b, c].map((s) => nextEvent(s, "hello"));
    await ok(A, "/api/v1/emit", { event: "hello", args: ["x", 2, { deep: [true, null] }] });
    for (const args of await Promise.all(got)) assert.deepEqual(args, ["x", 2, { deep: [true, null] }]);

    // users: the user:alice room (b on B, c on C).
    got = [b, c].map((s) => nextEvent(s, "for-alice"));
    let quiet = recorder(a, "for-alice");
    await ok(A, "/api/v1/emit", { event: "for-alice", users: ["alice"], args: ["hi alice"] });
    for (const args of await Promise.all(got)) assert.deepEqual(args, ["hi alice"]);
    await quiet.assertNone("a (not alice)");

    // rooms.
    got = [a, c].map((s) => nextEvent(s, "shipped"));
    quiet = recorder(b, "shipped");
    await ok(A, "/api/v1/emit", { event: "shipped", rooms: ["order:17"], args: [{ order: 17 }] });
    for (const args of await Promise.all(got)) assert.deepEqual(args, [{ order: 17 }]);
    await quiet.assertNone("b (not in order:17)");

    // except.
    const atB = nextEvent(b, "not-17");
    const quietA = recorder(a, "not-17");
    const quietC = recorder(c, "not-17");
    await ok(A, "/api/v1/emit", { event: "not-17", except: ["order:17"] });
    assert.deepEqual(await atB, []);
    await quietA.assertNone("a (in order:17)");
    await quietC.assertNone("c (in order:17)");

    // sockets: one id on another instance, and an id that is also reached through a room gets it once.
    const atC = nextEvent(c, "for-c");
    quiet = recorder(b, "for-c");
    await ok(A, "/api/v1/emit", { event: "for-c", sockets: [c.id] });
    await atC;
    await quiet.assertNone("b (not named)");
    const once = recorder(c, "once");
    await ok(A, "/api/v1/emit", { event: "once", rooms: ["order:17"], sockets: [c.id] });
    await eventually(() => once.seen.length, 1, 2_000, "c's copies of `once`");
    await sleep(QUIET_MS);
    assert.equal(once.seen.length, 1, "a socket named twice gets an emit once");

    // users and rooms together, minus except.
    got = [b].map((s) => nextEvent(s, "mix"));
    quiet = recorder(c, "mix");
    await ok(A, "/api/v1/emit", { event: "mix", users: ["alice"], rooms: ["order:17"], except: ["order:17"] });
    await Promise.all(got);
    await quiet.assertNone("c (excepted)");
  });

  it("emit: binary arguments, top-level and nested, arrive as binary on other instances", async () => {
    const { A, a, b, c } = await three();
    const got = [a, b, c].map((s) => nextEvent(s, "file"));
    await ok(A, "/api/v1/emit", {
      event: "file",
      args: [{ $base64: Buffer.from([0, 1, 2, 255]).toString("base64") }, { name: "x", data: { $base64: "AQID" } }, "t"],
    });
    for (const [blob, meta, text] of await Promise.all(got)) {
      assert.deepEqual(bytes(blob), [0, 1, 2, 255]);
      assert.equal(meta.name, "x");
      assert.deepEqual(bytes(meta.data), [1, 2, 3]);
      assert.equal(text, "t");
    }
  });

  it("join, leave, rooms and sockets listings, disconnect: cluster-wide", async () => {
    const { A, a, b, c } = await three();
    await ok(A, "/api/v1/join", { sockets: [b.id, c.id], room: "user:bob" });
    await ok(A, "/api/v1/join", { users: ["bob"], room: "team" });
    await ok(A, "/api/v1/join", { sockets: [a.id], room: "team" });

    let answer = await call(A, "GET", "/api/v1/rooms");
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body, { ok: true, cluster: "up", count: 2, rooms: ["team", "user:bob"] });
    answer = await call(A, "GET", `/api/v1/sockets?room=team`);
    assert.deepEqual(answer.body, { ok: true, cluster: "up", room: "team", count: 3, sockets: sortedIds([a, b, c]) });
    answer = await call(A, "GET", "/api/v1/sockets?user=bob");
    assert.deepEqual(answer.body, { ok: true, cluster: "up", user: "bob", count: 2, sockets: sortedIds([b, c]) });
    answer = await call(A, "GET", "/api/v1/sockets");
    assert.equal(answer.body.count, 3);

    // leave by user: b and c leave `team`, a stays.
    const left = await ok(A, "/api/v1/leave", { users: ["bob"], room: "team" });
    assert.equal(left.room, "team");
    answer = await call(A, "GET", "/api/v1/sockets?room=team");
    assert.deepEqual(answer.body.sockets, [a.id]);

    // disconnect by id (c on C), then by room (a on A); b stays.
    const cGone = nextEvent(c, "disconnect");
    await ok(A, "/api/v1/disconnect", { sockets: [c.id] });
    assert.equal((await cGone)[0], "io server disconnect");
    const aGone = nextEvent(a, "disconnect");
    await ok(A, "/api/v1/disconnect", { rooms: ["team"] });
    assert.equal((await aGone)[0], "io server disconnect");
    assert.equal(b.connected, true);
    await eventually(
      async () => (await call(A, "GET", "/api/v1/sockets")).body.sockets,
      [b.id],
      3_000,
      "the sockets left",
    );
    // users selector for disconnect: b is bob.
    const bGone = nextEvent(b, "disconnect");
    await ok(A, "/api/v1/disconnect", { users: ["bob"] });
    assert.equal((await bGone)[0], "io server disconnect");
  });

  it("openapi.json describes every route", async () => {
    const [A] = topo.servers;
    const answer = await call(A, "GET", "/api/v1/openapi.json");
    assert.equal(answer.status, 200);
    assert.match(answer.headers.get("content-type"), /application\/json/);
    assert.match(answer.body.openapi, /^3\.1\./);
    assert.deepEqual(Object.keys(answer.body.paths).sort(), [
      "/api/v1/disconnect",
      "/api/v1/emit",
      "/api/v1/join",
      "/api/v1/leave",
      "/api/v1/openapi.json",
      "/api/v1/rooms",
      "/api/v1/sockets",
    ]);
    assert.equal(answer.body.components.securitySchemes.api_key.scheme, "bearer");
  });

  it("refusals: 401 (counted), 400 naming the field, 404, 405; no CORS", async () => {
    const [A] = topo.servers;
    const metric = async () => {
      const text = await (await fetch(`${A.url}/metrics`)).text();
      const line = text.split("\n").find((l) => /^ecos_api_requests_total\{/.test(l) && l.includes('route="/api/v1/emit"') && l.includes('status="401"'));
      return line ? Number(line.split(" ").pop()) : 0;
    };
    const before401 = await metric();
    let answer = await call(A, "POST", "/api/v1/emit", { event: "x" }, { key: null });
    assert.equal(answer.status, 401);
    assert.equal(answer.body.ok, false);
    assert.match(answer.body.error, /Authorization: Bearer/);
    answer = await call(A, "POST", "/api/v1/emit", { event: "x" }, { key: `${KEY}x` });
    assert.equal(answer.status, 401);
    assert.equal(await metric(), before401 + 2);

    for (const [body, expected] of [
      [{ args: [] }, /`event` is required/],
      [{ event: "x", rooms: "lobby" }, /`rooms` must be an array of strings, not a string/],
      [{ event: "x", users: ["ok", 3] }, /`users\[1\]` must be a string, not a number/],
      [{ event: "x", sockets: ["nope"] }, /`sockets\[0\]`: a socket id is 16 characters/],
      [{ event: "x", args: [{ $base64: "%%" }] }, /`args\[0\]\.\$base64` is not standard base64/],
      [{ event: "x", target: [] }, /unknown field `target`/],
    ]) {
      answer = await call(A, "POST", "/api/v1/emit", body);
      assert.equal(answer.status, 400, JSON.stringify(body));
      assert.match(answer.body.error, expected);
    }
    answer = await call(A, "POST", "/api/v1/emit", undefined, { raw: "{not json" });
    assert.equal(answer.status, 400);
    assert.match(answer.body.error, /not valid JSON/);
    answer = await call(A, "POST", "/api/v1/join", { room: "" });
    assert.match(answer.body.error, /`room`: room must not be empty/);

    answer = await call(A, "GET", "/api/v1/unknown");
    assert.equal(answer.status, 404);
    assert.equal(answer.body.ok, false);
    answer = await call(A, "DELETE", "/api/v1/rooms");
    assert.equal(answer.status, 405);
    assert.equal(answer.body.ok, false);

    const preflight = await fetch(`${A.url}/api/v1/emit`, {
      method: "OPTIONS",
      headers: { origin: "http://localhost:3000", "access-control-request-method": "POST" },
    });
    assert.equal(preflight.headers.get("access-control-allow-origin"), null);
    assert.ok(preflight.status >= 400, `preflight answered ${preflight.status}`);
  });

  it("each call is logged once with its X-Request-ID", async () => {
    const [A] = topo.servers;
    const id = `req-${randomBytes(6).toString("hex")}`;
    await call(A, "POST", "/api/v1/emit", { event: "logged" }, { headers: { "x-request-id": id } });
    const refused = `req-${randomBytes(6).toString("hex")}`;
    await call(A, "POST", "/api/v1/emit", { event: 1 }, { headers: { "x-request-id": refused } });
    const lines = (needle) => A.logs().split("\n").filter((line) => line.includes(needle));
    await eventually(() => lines(id).length, 1, 2_000, `log lines with ${id}`);
    await eventually(() => lines(refused).length, 1, 2_000, `log lines with ${refused}`);
    const entry = JSON.parse(lines(refused)[0]);
    const text = JSON.stringify(entry);
    assert.match(text, /"status":400/);
    assert.match(text, /`event` must be a string/);
    assert.ok(!A.logs().includes(KEY), "the key never appears in the logs");
  });
});

describe("server API refusals that need settings of their own", () => {
  let servers = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  it("without api.keys every /api/ route is 404", async () => {
    const topo = await startSingle({ id: "js-api-off" });
    servers.push(topo);
    const [S] = topo.servers;
    for (const path of ["/api/v1/emit", "/api/v1/openapi.json", "/api/v1/rooms", "/api/anything"]) {
      for (const method of ["GET", "POST"]) {
        const answer = await call(S, method, path, method === "POST" ? { event: "x" } : undefined);
        assert.equal(answer.status, 404, `${method} ${path}`);
      }
    }
    const metrics = await (await fetch(`${S.url}/metrics`)).text();
    assert.equal(metricValue(metrics, "ecos_api_requests_total"), null);
  });

  it("a body over api.max_body_bytes gets 413; metrics.token guards /metrics", async () => {
    const topo = await startSingle({
      id: "js-api-limits",
      env: { ...API_ENV, ECOS_API__MAX_BODY_BYTES: "4096", ECOS_METRICS__TOKEN: "js-metrics-token" },
    });
    servers.push(topo);
    const [S] = topo.servers;
    let answer = await call(S, "POST", "/api/v1/emit", { event: "big", args: ["x".repeat(5000)] });
    assert.equal(answer.status, 413);
    assert.match(answer.body.error, /4096 bytes/);
    answer = await call(S, "POST", "/api/v1/emit", { event: "small", args: ["x".repeat(3000)] });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.cluster, "none");

    assert.equal((await fetch(`${S.url}/metrics`)).status, 401);
    const scraped = await fetch(`${S.url}/metrics`, { headers: { authorization: "Bearer js-metrics-token" } });
    assert.equal(scraped.status, 200);
    const text = await scraped.text();
    assert.equal(metricValue(text, "ecos_api_requests_total") >= 2, true);
  });
});

describe("server API with the msgpack parser (3-instance cluster)", () => {
  let topo;
  const clients = new Clients(() => topo);
  before(async () => {
    topo = await startCluster({
      ids: ["js-api-m1", "js-api-m2", "js-api-m3"],
      env: { ...API_ENV, ECOS_SOCKETIO__PARSER: "msgpack" },
    });
  });
  after(async () => {
    clients.closeAll();
    await topo?.stop();
  });

  it("binary and plain arguments arrive intact at msgpack clients on other instances", async () => {
    const [A, B, C] = topo.servers;
    const { socket: b } = await clients.connect("websocket", { server: B, parser: msgpackParser });
    const { socket: c } = await clients.connect("polling", { server: C, parser: msgpackParser });
    const got = [b, c].map((s) => nextEvent(s, "bin"));
    await ok(A, "/api/v1/emit", { event: "bin", args: [{ $base64: "AP8=" }, { n: 1.5, list: [1, "two"], d: { $base64: "AQ" } }] });
    for (const [blob, rest] of await Promise.all(got)) {
      assert.deepEqual(bytes(blob), [0, 255]);
      assert.equal(rest.n, 1.5);
      assert.deepEqual(rest.list, [1, "two"]);
      assert.deepEqual(bytes(rest.d), [1]);
    }
  });
});

// ---------------------------------------------------------------------------
// Redis outage
// ---------------------------------------------------------------------------

/** A free loopback port (another process may take it first; tests accept that). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A redis-server of this test's own on `port`; resolves once it accepts connections. */
async function startRedis(port) {
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  process.once("exit", () => child.kill("SIGKILL"));
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.end();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (up) {
      return {
        kill: async () => {
          child.kill("SIGKILL");
          await exited;
        },
      };
    }
    await sleep(50);
  }
  child.kill("SIGKILL");
  throw new Error(`redis-server did not listen on ${port} within 5 s (is it installed?)`);
}

describe("server API during a Redis outage (a redis-server of its own)", () => {
  let servers = [];
  let redis;
  let port;
  const clients = new Clients(() => ({ serverFor: (i) => servers[i % servers.length] }));

  before(async () => {
    port = await freePort();
    redis = await startRedis(port);
    const env = {
      REDIS_URL: `redis://127.0.0.1:${port}`,
      ECOS_REDIS__PREFIX: uniquePrefix("js-api-outage"),
      ECOS_REDIS__STATS_INTERVAL_SECS: "0.2",
      ...API_ENV,
    };
    servers = await startInstances([
      { id: "js-api-o1", env },
      { id: "js-api-o2", env },
    ]);
  });
  after(async () => {
    clients.closeAll();
    await Promise.all(servers.map((s) => stopInstance(s)));
    await redis?.kill();
  });

  it("calls deliver to local clients and answer cluster: down with a warning; remote delivery resumes after", async () => {
    const [A, B] = servers;
    const { socket: local } = await clients.connect("websocket", { server: A });
    const { socket: remote } = await clients.connect("websocket", { server: B });
    await ok(A, "/api/v1/join", { sockets: [remote.id], room: "user:zoe" });

    await redis.kill();
    await eventually(
      async () => (await call(A, "GET", "/api/v1/rooms")).body.cluster,
      "down",
      10_000,
      "A's answers to say the cluster is down",
    );
    const atLocal = nextEvent(local, "during");
    const quiet = recorder(remote, "during");
    const answer = await ok(A, "/api/v1/emit", { event: "during", args: [1] }, "down");
    assert.match(answer.warning, /this instance only/);
    assert.deepEqual(await atLocal, [1]);
    await quiet.assertNone("a client on B during the outage");
    const listing = await call(A, "GET", "/api/v1/sockets");
    assert.equal(listing.body.cluster, "down");
    assert.deepEqual(listing.body.sockets, [local.id]);
    assert.match(listing.body.warning, /this instance only/);
    // Nobody was disconnected.
    assert.equal(local.connected && remote.connected, true);

    redis = await startRedis(port);
    for (const s of servers) await waitReady(s, { timeoutMs: 15_000 });
    await eventually(
      async () => (await call(A, "POST", "/api/v1/emit", { event: "ping-up" })).body.cluster,
      "up",
      10_000,
      "A's answers to say the cluster is up again",
    );
    // /readyz stays 200 through an outage, so it says nothing of B's link;
    // B retries with backoff and may come back seconds after A. Until it
    // does, what A publishes cannot reach it (Redis pub/sub keeps nothing).
    await eventually(
      async () => (await call(B, "GET", "/api/v1/rooms")).body.cluster,
      "up",
      15_000,
      "B's answers to say the cluster is up again",
    );
    const atRemote = nextEvent(remote, "after");
    await ok(A, "/api/v1/emit", { event: "after", users: ["zoe"] });
    assert.deepEqual(await atRemote, []);
  });
});
