// The official `@socket.io/redis-emitter` (5.1, unchanged) publishing through
// the machine's Redis ($ECOS_TEST_REDIS_URL) to a three-instance ecos cluster,
// asserted on socket.io-client connected to every instance, with the default
// parser and with socket.io-msgpack-parser (`socketio.parser = msgpack`).
//
// Where what clients see could differ (dates, undefined, binary), the same
// emitter call also reaches the Node reference server (bench/node-reference,
// socket.io 4.8 with @socket.io/redis-adapter on the emitter's prefix), and
// ecos's clients must see what its client sees.
//
// Every suite uses its own key prefix and its own emitter prefix.

import { describe, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";
import { REDIS_URL, REPO_ROOT, uniquePrefix } from "../support/launcher.mjs";
import {
  Clients,
  EVENT_TIMEOUT_MS,
  ack,
  it,
  metricValue,
  nextEvent,
  recorder,
  sleep,
  startCluster,
  withTimeout,
} from "./harness.mjs";

const REFERENCE_SERVER = path.join(REPO_ROOT, "bench/node-reference/server.mjs");

/** A date with milliseconds, so a lost fraction would show. */
const WHEN = new Date(Date.UTC(2024, 4, 1, 12, 0, 0, 123));

/** The arguments of the rich emit: every value whose delivery could differ. */
const RICH_ARGS = () => [
  "plain",
  42,
  Buffer.from([1, 2, 3]),
  { nested: { bin: Buffer.from([4, 5]) }, list: [Buffer.from([6])], gone: undefined, kept: null },
  undefined,
  WHEN,
  [undefined, 1.5],
];

/** What a client of `parser` must receive for RICH_ARGS, written out by hand. */
function richExpected(parser) {
  // socket.io-msgpack-parser (notepack.io 2) carries a Date as a Date; JSON as its ISO string.
  const date = parser === "msgpack" ? WHEN : WHEN.toISOString();
  return [
    "plain",
    42,
    Buffer.from([1, 2, 3]),
    { nested: { bin: Buffer.from([4, 5]) }, list: [Buffer.from([6])], kept: null },
    null,
    date,
    [null, 1.5],
  ];
}

/**
 * Starts the Node reference server on the emitter's prefix; resolves to
 * `{ url, stop() }` once it listens.
 */
async function startReference(prefix, parser) {
  const child = spawn(process.execPath, [REFERENCE_SERVER], {
    env: {
      ...process.env,
      PORT: "0",
      REDIS_URL,
      REDIS_PREFIX: prefix,
      INSTANCE_ID: "node-reference",
      ...(parser === "msgpack" ? { PARSER: "msgpack" } : {}),
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const port = await withTimeout(
    new Promise((resolve, reject) => {
      lines.on("line", (line) => {
        const m = /^listening (\d+)$/.exec(line);
        if (m) resolve(Number(m[1]));
      });
      child.once("exit", (code) => reject(new Error(`the Node reference server exited with ${code}`)));
    }),
    10_000,
    "the Node reference server to listen",
  );
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      child.kill("SIGTERM");
      await withTimeout(exited, 5_000, "the Node reference server to exit").catch(() => child.kill("SIGKILL"));
    },
  };
}

/** Connects a socket.io-client to `url` with `parser` and waits for the connection. */
async function connectTo(url, parser, opened) {
  const socket = io(url, {
    transports: ["websocket"],
    forceNew: true,
    reconnection: false,
    timeout: EVENT_TIMEOUT_MS,
    ...(parser === "msgpack" ? { parser: msgpackParser } : {}),
  });
  opened.add(socket);
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  return socket;
}

/**
 * Emits `warmup` until every socket has received one: each server has then
 * subscribed to the emitter's channels (ecos subscribes in the background at
 * start-up, the Node adapter without waiting), so no later message is lost.
 */
async function warmUp(emitter, sockets) {
  const pending = new Set(sockets);
  const handlers = sockets.map((s) => {
    const handler = () => pending.delete(s);
    s.on("warmup", handler);
    return [s, handler];
  });
  const deadline = Date.now() + 10_000;
  while (pending.size > 0 && Date.now() < deadline) {
    emitter.emit("warmup");
    await sleep(100);
  }
  for (const [s, handler] of handlers) s.off("warmup", handler);
  assert.equal(pending.size, 0, "every server should receive the emitter's messages within 10 s");
}

for (const parser of ["default", "msgpack"]) {
  describe(`@socket.io/redis-emitter against a 3-instance ecos cluster (${parser} parser)`, () => {
    const emitterPrefix = uniquePrefix(`emitter-${parser}`);
    let topo;
    let reference;
    let redis;
    let emitter;
    const others = new Set();
    const clients = new Clients(() => topo);
    const connect = (transport = "websocket") =>
      clients.connect(transport, parser === "msgpack" ? { parser: msgpackParser } : {});
    /** One client on each ecos instance (the k-th goes to instance k % 3). */
    const oneOnEach = async () => [(await connect()).socket, (await connect()).socket, (await connect("polling")).socket];

    before(async () => {
      const env = { ECOS_EMITTER__PREFIX: emitterPrefix };
      if (parser === "msgpack") env.ECOS_SOCKETIO__PARSER = "msgpack";
      [topo, reference] = await Promise.all([startCluster({ env }), startReference(emitterPrefix, parser)]);
      redis = createClient({ url: REDIS_URL });
      redis.on("error", () => {});
      await redis.connect();
      emitter = new Emitter(redis, { key: emitterPrefix });
      const probe = await oneOnEach();
      await warmUp(emitter, [...probe, await connectTo(reference.url, parser, others)]);
      clients.closeAll();
      for (const s of others) s.disconnect();
      others.clear();
    });

    afterEach(async () => {
      for (const s of others) s.disconnect();
      others.clear();
      await clients.closeAllAndSettle();
    });

    after(async () => {
      await redis?.quit();
      await Promise.all([topo?.stop(), reference?.stop()]);
    });

    it("emit reaches every client on every instance, with Buffers, nested Buffers, undefined and a Date as Node's clients see them", async () => {
      const sockets = await oneOnEach();
      const nodeClient = await connectTo(reference.url, parser, others);
      const got = [...sockets, nodeClient].map((s) => nextEvent(s, "rich"));
      emitter.emit("rich", ...RICH_ARGS());
      const results = await Promise.all(got);
      const atNode = results[3];
      const atEcos = results.slice(0, 3);
      assert.deepEqual(atNode, richExpected(parser), "the Node reference server's client");
      for (const [i, args] of atEcos.entries()) {
        assert.deepEqual(args, atNode, `ecos client ${i} should see what Node's client sees`);
      }
      if (parser === "msgpack") assert.ok(atEcos[0][5] instanceof Date, "a Date arrives as a Date with msgpack");
    });

    it(".to(room) reaches the room's members on every instance, and no one else", async () => {
      const [a, b, c] = await oneOnEach();
      const [d] = [(await connect()).socket];
      for (const s of [a, b, c]) await ack(s, "join", "order:17");
      const got = [a, b, c].map((s) => nextEvent(s, "shipped"));
      const outside = recorder(d, "shipped");
      emitter.to("order:17").emit("shipped", { order: 17 }, Buffer.from("label"));
      for (const args of await Promise.all(got)) assert.deepEqual(args, [{ order: 17 }, Buffer.from("label")]);
      await outside.assertNone("a socket outside the room");
    });

    it("socketsJoin puts the selected sockets in user:alice on every instance, and .to(\"user:alice\") reaches them", async () => {
      const [a, b, c] = await oneOnEach();
      const [bob] = [(await connect()).socket];
      for (const s of [a, b, c]) await ack(s, "join", "alice-devices");
      emitter.in("alice-devices").socketsJoin("user:alice");
      // Published after the join on the same connection, so applied after it everywhere.
      const got = [a, b, c].map((s) => nextEvent(s, "notify"));
      const notBob = recorder(bob, "notify");
      emitter.to("user:alice").emit("notify", "hello alice");
      for (const args of await Promise.all(got)) assert.deepEqual(args, ["hello alice"]);
      await notBob.assertNone("a socket that is not alice's");
      // Clients may not list user: rooms (they are reserved), so the delivery
      // above is the proof; a client asking gets "forbidden".
      assert.deepEqual(await ack(bob, "room:members", "user:alice"), { ok: false, error: "forbidden" });
    });

    it(".except(room) leaves the room's members out on every instance", async () => {
      const [a, b, c] = await oneOnEach();
      const [d] = [(await connect()).socket];
      for (const s of [a, c]) await ack(s, "join", "muted");
      const got = [b, d].map((s) => nextEvent(s, "broadcast"));
      const mutedA = recorder(a, "broadcast");
      const mutedC = recorder(c, "broadcast");
      emitter.except("muted").emit("broadcast", 1, "two", [3]);
      for (const args of await Promise.all(got)) assert.deepEqual(args, [1, "two", [3]]);
      await mutedA.assertNone("a muted socket");
      await mutedC.assertNone("another muted socket");
    });

    it("socketsLeave takes the selected sockets out of a room on every instance", async () => {
      const [a, b, c] = await oneOnEach();
      for (const s of [a, b, c]) await ack(s, "join", "team");
      emitter.in("team").socketsJoin("user:carol");
      const joined = [a, b, c].map((s) => nextEvent(s, "carol"));
      emitter.to("user:carol").emit("carol", "in");
      for (const args of await Promise.all(joined)) assert.deepEqual(args, ["in"]);
      emitter.in("team").except("team-lead").socketsLeave("user:carol");
      const none = [a, b, c].map((s) => recorder(s, "carol"));
      emitter.to("user:carol").emit("carol", "anyone?");
      for (const r of none) await r.assertNone("a socket that left user:carol");
      // The room the selector named is untouched.
      assert.equal((await ack(a, "room:members", "team")).count, 3);
    });

    it("disconnectSockets disconnects the selected sockets on every instance, as Node does", async () => {
      const [a, b, c] = await oneOnEach();
      const [stays] = [(await connect()).socket];
      const nodeClient = await connectTo(reference.url, parser, others);
      for (const s of [a, b, c]) await ack(s, "join", "kick");
      emitter.in(nodeClient.id).socketsJoin("kick"); // a Node socket is in a room named by its id
      const gone = [a, b, c, nodeClient].map((s) => nextEvent(s, "disconnect"));
      const kept = recorder(stays, "disconnect");
      emitter.in("kick").disconnectSockets(true);
      const reasons = (await Promise.all(gone)).map(([reason]) => reason);
      assert.deepEqual(reasons, Array(4).fill("io server disconnect"));
      await kept.assertNone("a socket outside the room");
      assert.ok(stays.connected);
    });

    it("every message is counted in ecos_emitter_messages_total by kind", async () => {
      for (const server of topo.servers) {
        const text = await fetch(`${server.url}/metrics`).then((r) => r.text());
        assert.equal(metricValue(text, "ecos_emitter_up"), 1, `${server.id}: ecos_emitter_up`);
        for (const kind of ["emit", "join", "leave", "disconnect"]) {
          const line = text.split("\n").find((l) => l.startsWith("ecos_emitter_messages_total{") && l.includes(`kind="${kind}"`));
          assert.ok(line && Number(line.split(" ").pop()) > 0, `${server.id}: ${kind} counted: ${line}`);
        }
      }
    });
  });
}
