// The flood of docs/hardening.md: one client fires `message` back to back
// while BYSTANDERS clients listen, all over WebSocket with the official
// socket.io-client. Reports what the server accepted and refused, what each
// bystander received (every accepted broadcast, or a counted disconnect),
// the bystanders' delivery latency, and how /healthz answered meanwhile.
//
//   node bench/flood/flood.mjs            # target/release/ecos, defaults
//   ECOS_BIN=path BYSTANDERS=499 SECS=5 node bench/flood/flood.mjs
//
// SENDERS=n SENDER_RATE=r replaces the one attacker by n clients that each
// send r `message`s a second (under the rate limit): the load many
// well-behaved clients make, which ecos answers by shedding (`overloaded`).
//
// Extra ecos settings pass through as FLOOD_ENV="K=V K=V"; FLOOD_LOG=path
// keeps the server's log (warnings and up) in that file. Needs the npm
// packages of tests/js (npm ci --prefix tests/js) for socket.io-client.
import { createRequire } from "node:module";
import path from "node:path";
import { Worker } from "node:worker_threads";
import { REPO_ROOT, startInstance, waitReady, stopInstance } from "../../tests/support/launcher.mjs";

const require = createRequire(path.join(REPO_ROOT, "tests/js/package.json"));
const { io } = require("socket.io-client");

const BYSTANDERS = Number(process.env.BYSTANDERS || 499);
const SECS = Number(process.env.SECS || 5);
const SENDERS = Number(process.env.SENDERS || 1);
const SENDER_RATE = Number(process.env.SENDER_RATE || 0); // 0: back to back
const extraEnv = Object.fromEntries(
  (process.env.FLOOD_ENV || "").split(/\s+/).filter(Boolean).map((kv) => kv.split("=", 2)),
);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const connect = (url) =>
  new Promise((resolve, reject) => {
    const socket = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
const metric = (text, series) => {
  const line = text.split("\n").find((l) => l.startsWith(series));
  return line ? Number(line.split(" ").pop()) : 0;
};
const pct = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : NaN);

const server = await startInstance("flood", { env: { ECOS_LOG__LEVEL: "warn,ecos::app=info", ...extraEnv }, logFile: process.env.FLOOD_LOG });
try {
  await waitReady(server);
  const bystanders = [];
  for (let i = 0; i < BYSTANDERS; i++) {
    const socket = await connect(server.url);
    const stats = { socket, received: 0, latencies: [], disconnected: null };
    socket.on("message", (data) => {
      stats.received += 1;
      if (stats.latencies.length < 20_000) stats.latencies.push(Date.now() - data.t);
    });
    socket.on("disconnect", (reason) => (stats.disconnected = reason));
    bystanders.push(stats);
  }
  const senders = [];
  for (let i = 0; i < SENDERS; i++) senders.push(await connect(server.url));
  const attacker = senders[0];
  // The prober runs on its own thread and event loop, so that the delay of
  // the main one (which runs every client) does not count as /healthz's.
  const prober = new Worker(
    `const { parentPort, workerData } = require("node:worker_threads");
     const times = [];
     let probing = true;
     parentPort.on("message", () => { probing = false; });
     (async () => {
       while (probing) {
         const asked = performance.now();
         try {
           await fetch(workerData.url + "/healthz", { signal: AbortSignal.timeout(5000) });
           times.push(performance.now() - asked);
         } catch {
           times.push(Infinity);
         }
         await new Promise((r) => setTimeout(r, 100));
       }
       parentPort.postMessage(times);
     })();`,
    { eval: true, workerData: { url: server.url } },
  );
  const health = [];
  const proberDone = new Promise((resolve) => prober.once("message", (times) => resolve(health.push(...times))));
  let sent = 0;
  const until = Date.now() + SECS * 1000;
  if (SENDER_RATE > 0) {
    // Each sender on its own schedule, under the per-socket rate limit.
    await Promise.all(
      senders.map(async (sender, i) => {
        await sleep((i * 1000) / SENDER_RATE / SENDERS);
        for (let next = Date.now(); Date.now() < until && sender.connected; ) {
          sender.emit("message", { t: Date.now(), n: sent++ });
          next += 1000 / SENDER_RATE;
          await sleep(Math.max(0, next - Date.now()));
        }
      }),
    );
  } else {
    while (Date.now() < until && attacker.connected) {
      for (let i = 0; i < 200; i++) {
        attacker.emit("message", { t: Date.now(), n: sent++ });
      }
      await sleep(1); // let the socket write and the bystanders read
    }
  }
  prober.postMessage("stop");
  await proberDone;
  await prober.terminate();
  await sleep(3_000); // let the queues drain
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const accepted = metric(text, 'ecos_broadcasts_total{event="message"');
  const refused = metric(text, 'ecos_rate_limited_total{event="message"');
  const dropped = metric(text, 'ecos_messages_dropped_total{event="message"');
  const overloaded = metric(text, 'ecos_overloaded_total{event="message"');
  const complete = bystanders.filter((b) => b.received === accepted).length;
  const cut = bystanders.filter((b) => b.disconnected !== null).length;
  const short = bystanders.filter((b) => b.received !== accepted && b.disconnected === null).length;
  const latencies = bystanders.flatMap((b) => b.latencies).sort((a, b) => a - b);
  const healthSorted = health.slice().sort((a, b) => a - b);
  const result = {
    bystanders: BYSTANDERS,
    senders: SENDERS,
    sender_rate: SENDER_RATE,
    secs: SECS,
    emitted: sent,
    accepted,
    refused,
    dropped,
    overloaded,
    attacker_disconnected: !attacker.connected,
    bystanders_complete: complete,
    bystanders_disconnected: cut,
    bystanders_short_without_disconnect: short,
    latency_p50_ms: pct(latencies, 0.5),
    latency_p99_ms: pct(latencies, 0.99),
    healthz_max_ms: Math.round(healthSorted.at(-1) * 10) / 10,
    healthz_p99_ms: Math.round(pct(healthSorted, 0.99) * 10) / 10,
    disconnections: text
      .split("\n")
      .filter((l) => l.startsWith("ecos_disconnections_total"))
      .map((l) => l.replace(/,?node="[^"]*"/, "")),
  };
  console.log(JSON.stringify(result));
  for (const b of bystanders) b.socket.disconnect();
  for (const sender of senders) sender.disconnect();
} finally {
  await stopInstance(server);
}
