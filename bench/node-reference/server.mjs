// Reference server for the benchmarks: Node's socket.io 4.8 with the subset of
// the ecos event contract that ecos-bench drives (README.md, "The event
// contract"): `welcome` on connect, and `message` relayed to every other socket
// with the ack `{ ok: true }`. With REDIS_URL set it uses the official Redis
// adapter, so two processes behave as one cluster, like ecos with REDIS_URL.
//
// With REDIS_URL set it also receives what `@socket.io/redis-emitter` publishes
// under REDIS_PREFIX, which the emitter tests (tests/js/emitter.test.mjs)
// use as the reference for what clients should see.
//
// Env: PORT (default 0 = a free port), REDIS_URL (optional), REDIS_PREFIX
// (channel prefix, default "socket.io"), INSTANCE_ID, PARSER (`msgpack` for
// socket.io-msgpack-parser, like ecos's `socketio.parser = msgpack`). Prints
// one line `listening <port>` once it accepts connections.
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";
import { Server } from "socket.io";

const instance = process.env.INSTANCE_ID || `node-${randomBytes(4).toString("hex")}`;
const parser = process.env.PARSER === "msgpack" ? (await import("socket.io-msgpack-parser")).default : undefined;
const httpServer = createServer();
const io = new Server(httpServer, {
  ...(parser ? { parser } : {}),
  pingInterval: 25_000, // ecos: socketio.ping_interval_secs = 25
  pingTimeout: 20_000, // ecos: socketio.ping_timeout_secs = 20
  connectTimeout: 45_000, // ecos: socketio.connect_timeout_secs = 45
  maxHttpBufferSize: 1e6, // ecos: limits.max_*_bytes = 1000000
  serveClient: false,
});

if (process.env.REDIS_URL) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pubClient = createClient({ url: process.env.REDIS_URL });
  const subClient = pubClient.duplicate();
  pubClient.on("error", (err) => console.error("redis pub:", err.message));
  subClient.on("error", (err) => console.error("redis sub:", err.message));
  await Promise.all([pubClient.connect(), subClient.connect()]);
  io.adapter(createAdapter(pubClient, subClient, { key: process.env.REDIS_PREFIX || "socket.io" }));
}

io.on("connection", (socket) => {
  socket.emit("welcome", { id: socket.id, instance });
  socket.on("message", (...args) => {
    const ack = typeof args[args.length - 1] === "function" ? args.pop() : undefined;
    if (args.length === 0) {
      ack?.({ ok: false, error: "message needs a data argument" });
      return;
    }
    socket.broadcast.emit("message", args[0]);
    ack?.({ ok: true });
  });
});

const stop = () => {
  io.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

httpServer.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`listening ${httpServer.address().port}`);
});
