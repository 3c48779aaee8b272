// What one `rooms` or `room:members` call costs the server when the instance
// holds many rooms (docs/hardening.md, "Rooms and listings"): CLIENTS sockets
// join ROOMS rooms each, then one socket lists CALLS times; the server's CPU
// time per call is read from /proc before and after.
//
//   node bench/flood/listing.mjs      # CLIENTS=1000 ROOMS=100 CALLS=20
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { REPO_ROOT, startInstance, stopInstance, waitReady } from "../../tests/support/launcher.mjs";

const require = createRequire(path.join(REPO_ROOT, "tests/js/package.json"));
const { io } = require("socket.io-client");

const CLIENTS = Number(process.env.CLIENTS || 1000);
const ROOMS = Number(process.env.ROOMS || 100);
const CALLS = Number(process.env.CALLS || 20);

const cpuSeconds = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in ticks of 10 ms
};
const connect = (url) =>
  new Promise((resolve, reject) => {
    const socket = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });

const server = await startInstance("listing", { env: { ECOS_LOG__LEVEL: "warn,ecos::app=info" } });
try {
  await waitReady(server);
  const sockets = [];
  for (let c = 0; c < CLIENTS; c++) {
    const socket = await connect(server.url);
    sockets.push(socket);
    await Promise.all(
      Array.from({ length: ROOMS }, (_, r) => socket.timeout(10_000).emitWithAck("join", `room-${c}-${r}`)),
    );
  }
  const [caller] = sockets;
  const measure = async (event, args) => {
    const before = cpuSeconds(server.pid);
    const started = performance.now();
    let last;
    for (let i = 0; i < CALLS; i++) last = await caller.timeout(30_000).emitWithAck(event, ...args);
    return {
      event,
      calls: CALLS,
      wall_ms_per_call: Math.round(((performance.now() - started) / CALLS) * 100) / 100,
      server_cpu_ms_per_call: Math.round(((cpuSeconds(server.pid) - before) / CALLS) * 1000 * 100) / 100,
      count: last.count,
      listed: (last.rooms ?? last.members)?.length,
    };
  };
  const rooms = await measure("rooms", []);
  await new Promise((r) => setTimeout(r, 2_000)); // refill the bucket
  const members = await measure("room:members", ["room-0-0"]);
  console.log(JSON.stringify({ clients: CLIENTS, rooms_per_client: ROOMS, results: [rooms, members] }));
  for (const socket of sockets) socket.disconnect();
} finally {
  await stopInstance(server);
}
