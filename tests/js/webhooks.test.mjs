// Webhooks with the official socket.io-client and a real HTTP receiver in
// this process (node:http) that checks every request's signature with its
// own code, written from docs/webhooks.md: the connect hook (allowed by a
// forwarded cookie, denied, unavailable, unusable, fail-open), forwarded
// events whose answer is the ack (binary both ways, errors, fire and forget,
// the rate limit), disconnect notifications (once, retried with the same
// delivery id, flushed on SIGTERM), and a backend that hangs while clients
// keep chatting.

import { describe, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { SignJWT } from "jose";
import { io } from "socket.io-client";
import {
  EVENT_TIMEOUT_MS,
  ack,
  eventually,
  it,
  nextEvent,
  sleep,
  startCluster,
  startSingle,
  stopServer,
  closeTracked,
  track,
  tryConnect,
} from "./harness.mjs";

const SECRET = "whsec-js-tests-0123456789abcdef";
/** The hook timeout the servers here use: short, so the slow cases stay fast. */
const TIMEOUT_MS = 400;

/** Checks `X-Ecos-Signature` as docs/webhooks.md says; returns a problem or null. */
function signatureProblem(header, rawBody) {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header ?? "");
  if (!m) return `malformed signature header ${JSON.stringify(header)}`;
  const [, t, given] = m;
  if (Math.abs(Date.now() / 1000 - Number(t)) > 300) return `timestamp ${t} outside 5 minutes`;
  const expected = createHmac("sha256", SECRET).update(`${t}.`).update(rawBody).digest();
  if (!timingSafeEqual(expected, Buffer.from(given, "hex"))) return "signature mismatch";
  return null;
}

/**
 * A backend: records every request (`{ event, delivery, body, problem }`) and
 * answers with `respond(record)` → `{ status, body }` (a function, possibly
 * async: a slow backend is a slow function). `down()` closes it.
 */
async function startBackend() {
  const backend = {
    requests: [],
    problems: [],
    respond: () => ({ status: 200, body: {} }),
    url: "",
  };
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const raw = Buffer.concat(chunks);
      const problem = signatureProblem(req.headers["x-ecos-signature"], raw);
      if (problem) backend.problems.push(problem);
      let body;
      try {
        body = JSON.parse(raw.toString("utf8"));
      } catch {
        backend.problems.push("body is not JSON");
      }
      const record = {
        event: req.headers["x-ecos-event"],
        delivery: req.headers["x-ecos-delivery"],
        contentType: req.headers["content-type"],
        body,
      };
      if (body?.type !== record.event) backend.problems.push(`type ${body?.type} != X-Ecos-Event ${record.event}`);
      backend.requests.push(record);
      let answer;
      try {
        answer = await backend.respond(record);
      } catch (e) {
        answer = { status: 500, body: { error: String(e) } };
      }
      if (answer.hang) return; // never answers
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(answer.raw ?? JSON.stringify(answer.body));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  backend.url = `http://127.0.0.1:${server.address().port}/hooks`;
  backend.of = (type) => backend.requests.filter((r) => r.event === type);
  backend.down = () =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(resolve);
    });
  return backend;
}

/** What a cookie-session app answers: alice's session lets her in, anything else is refused. */
function sessionApp(record) {
  if (record.event === "connect") {
    const cookie = record.body.headers.cookie ?? "";
    if (cookie.includes("session=alice-session")) {
      return { status: 200, body: { allow: true, user: "alice", rooms: ["team:42"] } };
    }
    return { status: 200, body: { allow: false, reason: "no session" } };
  }
  if (record.event === "event") {
    return { status: 200, body: { ok: true, order: 17, echo: record.body.args } };
  }
  return { status: 204, body: null };
}

const hookEnv = (backend, extra = {}) => ({
  ECOS_WEBHOOKS__URL: backend.url,
  ECOS_WEBHOOKS__SECRET: SECRET,
  ECOS_WEBHOOKS__CONNECT: "true",
  ECOS_WEBHOOKS__FORWARD_HEADERS: "cookie",
  ECOS_WEBHOOKS__EVENTS: "order:place,chat:read",
  ECOS_WEBHOOKS__DISCONNECT: "true",
  ECOS_WEBHOOKS__TIMEOUT_MS: String(TIMEOUT_MS),
  ...extra,
});


const alice = (server, transport = "websocket") =>
  tryConnect(server, { transport, extraHeaders: { cookie: "theme=dark; session=alice-session" } });

/** One labelled sample of `ecos_webhook_requests_total` (0 when absent). */
async function requests(server, type, outcome) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text
    .split("\n")
    .find((l) => l.startsWith("ecos_webhook_requests_total{") && l.includes(`type="${type}"`) && l.includes(`outcome="${outcome}"`));
  return line ? Number(line.split(" ").pop()) : 0;
}

describe("webhooks: the connect hook and forwarded events", () => {
  let backend;
  let topo;
  let server;
  before(async () => {
    backend = await startBackend();
    topo = await startSingle({ id: "js-hooks", env: hookEnv(backend) });
    server = topo.servers[0];
  });
  after(async () => {
    closeTracked();
    await topo?.stop();
    await backend?.down();
  });
  beforeEach(() => {
    backend.respond = sessionApp;
  });
  afterEach(() => {
    closeTracked();
    assert.deepEqual(backend.problems, [], "every request is signed and well-formed");
  });

  for (const transport of ["websocket", "polling"]) {
    it(`a session cookie lets alice in as herself, in her rooms (${transport})`, async () => {
      const before = backend.of("connect").length;
      const result = await alice(server, transport);
      assert.ok(result.ok, `should connect: ${result.message}`);
      assert.equal(result.welcome.user, "alice");
      const [request] = backend.of("connect").slice(before);
      assert.equal(request.contentType, "application/json");
      assert.match(request.delivery, /^[0-9a-f]{32}$/);
      assert.deepEqual(request.body.socket, { id: result.socket.id, instance: "js-hooks", user: null });
      assert.deepEqual(request.body.headers, { cookie: "theme=dark; session=alice-session" });
      assert.equal(request.body.address, "127.0.0.1");
      const members = await ack(result.socket, "room:members", "team:42");
      assert.deepEqual(members.members, [result.socket.id]);
      assert.deepEqual(members.users, ["alice"]);
    });
  }

  it("the backend sees the CONNECT payload without its token, and the router's address", async () => {
    const before = backend.of("connect").length;
    const result = await tryConnect(server, {
      auth: { token: "not-for-the-backend", locale: "fr" },
      extraHeaders: { cookie: "session=alice-session", "x-forwarded-for": "6.6.6.6, 203.0.113.9" },
    });
    assert.ok(result.ok, result.message);
    const [request] = backend.of("connect").slice(before);
    assert.deepEqual(request.body.auth, { locale: "fr" });
    assert.equal(request.body.address, "203.0.113.9");
  });

  it("no session: the client reads the backend's reason", async () => {
    const denied = await requests(server, "connect", "denied");
    const result = await tryConnect(server);
    assert.deepEqual(result, { ok: false, message: "unauthorized: no session" });
    await eventually(() => requests(server, "connect", "denied"), denied + 1, 2_000, "denied count");
  });

  it("a 500, a timeout or an unusable answer refuse the connection, each counted", async () => {
    backend.respond = () => ({ status: 500, body: { error: "boom" } });
    assert.deepEqual(await alice(server), { ok: false, message: "unauthorized: backend unavailable" });
    backend.respond = async () => {
      await sleep(TIMEOUT_MS * 2);
      return { status: 200, body: { allow: true } };
    };
    const timeouts = await requests(server, "connect", "timeout");
    assert.deepEqual(await alice(server), { ok: false, message: "unauthorized: backend unavailable" });
    await eventually(() => requests(server, "connect", "timeout"), timeouts + 1, 2_000, "timeout count");
    backend.respond = () => ({ status: 200, raw: "<html>welcome</html>" });
    assert.deepEqual(await alice(server), { ok: false, message: "unauthorized: backend error" });
  });

  it("a forwarded event is acked with the backend's answer, binary included both ways", async () => {
    const { socket } = await alice(server);
    backend.respond = (record) =>
      record.event === "event"
        ? { status: 200, body: { ok: true, order: 17, receipt: { $base64: Buffer.from([7, 8, 9]).toString("base64") } } }
        : sessionApp(record);
    const before = backend.of("event").length;
    const answer = await ack(socket, "order:place", { item: "book", qty: 2 }, Buffer.from([1, 2, 3]));
    assert.equal(answer.ok, true);
    assert.equal(answer.order, 17);
    assert.deepEqual([...answer.receipt], [7, 8, 9]);
    const [request] = backend.of("event").slice(before);
    assert.equal(request.body.event, "order:place");
    assert.deepEqual(request.body.socket, { id: socket.id, instance: "js-hooks", user: "alice" });
    assert.deepEqual(request.body.args, [{ item: "book", qty: 2 }, { $base64: "AQID" }]);
  });

  it("without an ack the event is still delivered; unlisted events are not", async () => {
    const { socket } = await alice(server);
    const before = backend.of("event").length;
    socket.emit("chat:read", { upTo: 41 });
    socket.emit("not:forwarded", 1);
    await eventually(() => backend.of("event").length, before + 1, 2_000, "forwarded events");
    await sleep(200);
    const seen = backend.of("event").slice(before).map((r) => r.body.event);
    assert.deepEqual(seen, ["chat:read"]);
  });

  it("a 500 acks `backend error`, a slow backend `backend unavailable`", async () => {
    const { socket } = await alice(server);
    backend.respond = (record) => (record.event === "event" ? { status: 500, body: {} } : sessionApp(record));
    assert.deepEqual(await ack(socket, "order:place", 1), { ok: false, error: "backend error" });
    backend.respond = async (record) => {
      if (record.event !== "event") return sessionApp(record);
      await sleep(TIMEOUT_MS * 3);
      return { status: 200, body: { ok: true } };
    };
    const started = Date.now();
    assert.deepEqual(await ack(socket, "order:place", 2), { ok: false, error: "backend unavailable" });
    assert.ok(Date.now() - started < TIMEOUT_MS * 3, "the ack comes at the timeout, not when the backend ends");
    const errors = await requests(server, "event", "error");
    assert.ok(errors >= 1, `event errors counted: ${errors}`);
  });
});

describe("webhooks: a backend that hangs", () => {
  let backend;
  let topo;
  let server;
  before(async () => {
    backend = await startBackend();
    backend.respond = (record) => (record.event === "event" ? { hang: true } : { status: 200, body: { allow: true } });
    topo = await startSingle({
      id: "js-hooks-hang",
      env: hookEnv(backend, {
        ECOS_WEBHOOKS__CONNECT: "false",
        ECOS_WEBHOOKS__TIMEOUT_MS: "3000",
        ECOS_WEBHOOKS__MAX_CONCURRENCY: "4",
      }),
    });
    server = topo.servers[0];
  });
  after(async () => {
    closeTracked();
    await topo?.stop();
    await backend?.down();
  });

  it("does not slow down `message` among connected clients", async () => {
    const a = (await tryConnect(server)).socket;
    const b = (await tryConnect(server)).socket;
    // Fill every slot and the waiting line with events the backend never answers.
    const pending = [];
    for (let i = 0; i < 20; i += 1) pending.push(a.timeout(10_000).emitWithAck("order:place", i).catch(() => null));
    await sleep(100);
    for (let i = 0; i < 5; i += 1) {
      const started = Date.now();
      const got = nextEvent(b, "message", 1_000);
      assert.deepEqual(await ack(a, "message", { n: i }), { ok: true });
      const [data] = await got;
      assert.deepEqual(data, { n: i });
      assert.ok(Date.now() - started < 1_000);
    }
    const acks = await Promise.all(pending);
    assert.ok(
      acks.every((reply) => reply && reply.ok === false && reply.error === "backend unavailable"),
      JSON.stringify(acks),
    );
  });
});

describe("webhooks: forwarded events and the rate limit", () => {
  let backend;
  let topo;
  before(async () => {
    backend = await startBackend();
    backend.respond = () => ({ status: 200, body: { ok: true } });
    topo = await startSingle({
      id: "js-hooks-limit",
      env: hookEnv(backend, {
        ECOS_WEBHOOKS__CONNECT: "false",
        ECOS_LIMITS__EVENTS_PER_SECOND: "5",
        ECOS_LIMITS__EVENTS_BURST: "10",
      }),
    });
  });
  after(async () => {
    closeTracked();
    await topo?.stop();
    await backend?.down();
  });

  it("an event over the limit is refused before it reaches the backend", async () => {
    const { socket } = await tryConnect(topo.servers[0]);
    const before = backend.of("event").length;
    const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => ack(socket, "order:place", i)));
    const limited = replies.filter((r) => r.error === "rate limited").length;
    const answered = replies.filter((r) => r.ok === true).length;
    assert.ok(limited >= 15, `rate limited: ${limited}`);
    assert.equal(limited + answered, 30);
    assert.equal(backend.of("event").length - before, answered);
  });
});

describe("webhooks: disconnect notifications", () => {
  let backend;
  let topo;
  let server;
  before(async () => {
    backend = await startBackend();
    topo = await startSingle({
      id: "js-hooks-bye",
      env: hookEnv(backend, { ECOS_WEBHOOKS__CONNECT: "false", ECOS_WEBHOOKS__RETRY_FOR_SECS: "5" }),
    });
    server = topo.servers[0];
  });
  after(async () => {
    closeTracked();
    await topo?.stop();
    await backend?.down();
  });
  afterEach(() => assert.deepEqual(backend.problems, []));

  it("arrive once per disconnect, with the reason and how long it lasted", async () => {
    backend.respond = () => ({ status: 204, body: null });
    const { socket } = await tryConnect(server);
    const id = socket.id;
    await sleep(300);
    socket.disconnect();
    await eventually(() => backend.of("disconnect").filter((r) => r.body.socket.id === id).length, 1, 3_000, "notifications");
    await sleep(300);
    const mine = backend.of("disconnect").filter((r) => r.body.socket.id === id);
    assert.equal(mine.length, 1);
    assert.equal(mine[0].body.reason, "client_disconnect");
    assert.ok(mine[0].body.connected_seconds >= 0.25 && mine[0].body.connected_seconds < 5, String(mine[0].body.connected_seconds));
    assert.deepEqual(mine[0].body.socket, { id, instance: "js-hooks-bye", user: null });
  });

  it("are retried with the same delivery id after the receiver fails", async () => {
    let failures = 1;
    backend.respond = () => (failures-- > 0 ? { status: 503, body: {} } : { status: 200, body: {} });
    const { socket } = await tryConnect(server);
    const id = socket.id;
    socket.disconnect();
    await eventually(() => backend.of("disconnect").filter((r) => r.body.socket.id === id).length, 2, 4_000, "attempts");
    const [first, second] = backend.of("disconnect").filter((r) => r.body.socket.id === id);
    assert.equal(first.delivery, second.delivery);
    assert.deepEqual(first.body, second.body);
    const text = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(text, /^ecos_webhook_retries_total(\{[^}]*\})? [1-9]/m);
  });

  it("are delivered before ecos exits on SIGTERM", async () => {
    backend.respond = () => ({ status: 200, body: {} });
    const own = await startSingle({
      id: "js-hooks-drain",
      env: hookEnv(backend, { ECOS_WEBHOOKS__CONNECT: "false", ECOS_SHUTDOWN__DELAY_SECS: "0" }),
    });
    const { socket } = await tryConnect(own.servers[0]);
    const id = socket.id;
    await stopServer(own.servers[0], 10_000);
    const mine = backend.of("disconnect").filter((r) => r.body.socket.id === id);
    assert.equal(mine.length, 1, "delivered before exit");
    assert.equal(mine[0].body.reason, "server_shutdown");
  });
});

describe("webhooks: a full disconnect queue", () => {
  let backend;
  let topo;
  before(async () => {
    backend = await startBackend();
    backend.respond = () => ({ hang: true });
    topo = await startSingle({
      id: "js-hooks-queue",
      env: hookEnv(backend, {
        ECOS_WEBHOOKS__CONNECT: "false",
        ECOS_WEBHOOKS__DISCONNECT_QUEUE: "2",
        ECOS_WEBHOOKS__TIMEOUT_MS: "1000",
      }),
    });
  });
  after(async () => {
    closeTracked();
    // The two queued notifications get two timeouts at shutdown, then are given up.
    const started = Date.now();
    await topo?.stop();
    assert.ok(Date.now() - started < 5_000, "a dead backend does not hold the drain");
    await backend?.down();
  });

  it("drops what does not fit, counted, and shows the depth", async () => {
    const server = topo.servers[0];
    const sockets = [];
    for (let i = 0; i < 5; i += 1) sockets.push((await tryConnect(server)).socket);
    for (const socket of sockets) socket.disconnect();
    const sample = async (name, label) => {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      const line = text.split("\n").find((l) => l.startsWith(name) && (!label || l.includes(label)));
      return line ? Number(line.split(" ").pop()) : null;
    };
    await eventually(() => sample("ecos_webhook_dropped_total", 'reason="queue_full"'), 3, 3_000, "dropped");
    assert.equal(await sample("ecos_webhook_queue_depth"), 2);
  });
});

describe("webhooks: the connect hook after a JWT", () => {
  const JWT_SECRET = "jwt-secret-for-the-hook-tests-0123456789";
  let backend;
  let topo;
  before(async () => {
    backend = await startBackend();
    // The backend tries to name someone else; the verified token wins.
    backend.respond = (record) =>
      record.event === "connect" ? { status: 200, body: { allow: true, user: "mallory", rooms: ["team:7"] } } : { status: 200, body: {} };
    topo = await startSingle({
      id: "js-hooks-jwt",
      env: hookEnv(backend, {
        ECOS_AUTH__MODE: "jwt",
        ECOS_AUTH__JWT__SECRETS: JWT_SECRET,
        ECOS_WEBHOOKS__DISCONNECT: "false",
      }),
    });
  });
  after(async () => {
    closeTracked();
    await topo?.stop();
    await backend?.down();
  });

  it("keeps the token's user, tells the backend who it is, and never shows it the token", async () => {
    const token = await new SignJWT({ sub: "bob", rooms: ["team:*"] })
      .setProtectedHeader({ alg: "HS256" })
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode(JWT_SECRET));
    const before = backend.of("connect").length;
    const result = await tryConnect(topo.servers[0], { auth: { token, device: "phone" } });
    assert.ok(result.ok, result.message);
    assert.equal(result.welcome.user, "bob");
    const [request] = backend.of("connect").slice(before);
    assert.equal(request.body.socket.user, "bob");
    assert.deepEqual(request.body.auth, { device: "phone" });
    const members = await ack(result.socket, "room:members", "team:7");
    assert.deepEqual(members.users, ["bob"]);
    // A refused token never reaches the backend.
    const refused = await tryConnect(topo.servers[0], { auth: { token: "nope" } });
    assert.deepEqual(refused, { ok: false, message: "unauthorized: malformed token" });
    assert.equal(backend.of("connect").length, before + 1);
    assert.deepEqual(backend.problems, []);
  });
});

describe("webhooks: fail open", () => {
  let topo;
  before(async () => {
    // A backend URL where nothing listens.
    const backend = await startBackend();
    const url = backend.url;
    await backend.down();
    topo = await startSingle({
      id: "js-hooks-open",
      env: hookEnv({ url }, { ECOS_WEBHOOKS__FAIL_OPEN: "true", ECOS_WEBHOOKS__DISCONNECT: "false" }),
    });
  });
  after(async () => {
    closeTracked();
    await topo?.stop();
  });

  it("lets clients in anonymously while the connect hook is down", async () => {
    const result = await tryConnect(topo.servers[0]);
    assert.ok(result.ok, result.message);
    assert.equal(result.welcome.user, null);
    assert.deepEqual(await ack(result.socket, "order:place", 1), { ok: false, error: "backend unavailable" });
  });
});

describe("webhooks: in a cluster", () => {
  let backend;
  let topo;
  before(async () => {
    backend = await startBackend();
    backend.respond = sessionApp;
    topo = await startCluster({ ids: ["js-hooks-a", "js-hooks-b"], env: hookEnv(backend) });
  });
  after(async () => {
    closeTracked();
    await topo?.stop();
    await backend?.down();
  });
  afterEach(() => assert.deepEqual(backend.problems, []));

  it("each instance calls the backend for its own sockets, and the hook's rooms span the cluster", async () => {
    const [a, b] = topo.servers;
    const onA = await alice(a);
    const onB = await alice(b);
    assert.ok(onA.ok && onB.ok);
    const calls = backend.of("connect").filter((r) => [onA.socket.id, onB.socket.id].includes(r.body.socket.id));
    assert.deepEqual(
      calls.map((r) => [r.body.socket.id, r.body.socket.instance]).sort(),
      [
        [onA.socket.id, "js-hooks-a"],
        [onB.socket.id, "js-hooks-b"],
      ].sort(),
    );
    const before = backend.of("event").length;
    const answer = await ack(onB.socket, "order:place", "from b");
    assert.equal(answer.order, 17);
    const [request] = backend.of("event").slice(before);
    assert.deepEqual(request.body.socket, { id: onB.socket.id, instance: "js-hooks-b", user: "alice" });
    await eventually(
      async () => (await ack(onA.socket, "room:members", "team:42")).members.sort(),
      [onA.socket.id, onB.socket.id].sort(),
      3_000,
      "team:42 across the cluster",
    );
    const got = nextEvent(onB.socket, "room:message");
    assert.deepEqual(await ack(onA.socket, "room:message", "team:42", "hello b"), { ok: true });
    assert.deepEqual(await got, ["team:42", "hello b"]);
  });
});
