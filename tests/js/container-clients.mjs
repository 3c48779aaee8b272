// Official socket.io-client clients for scripts/test-container, as a
// command: the script drives Docker, this drives the clients. Not a test file
// (`node --test tests/js/*.test.mjs` does not run it).
//
//   node tests/js/container-clients.mjs relay URL_A URL_B
//       One client on each URL. A `message` from A's client must reach B's
//       client, and one from B's must reach A's, each acked { ok: true }.
//       The two must be greeted by different instances. Prints one line.
//
//   node tests/js/container-clients.mjs hold URL SECS
//       Connects over WebSocket (reconnection off), prints `connected ID`,
//       then waits up to SECS for the server to end the session and prints
//       `disconnect REASON`.
//
// Exit status 0 when it went as described, 1 (with the reason on stderr)
// otherwise.

import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { EVENT_TIMEOUT_MS, ack, nextEvent } from "./harness.mjs";

/** Connects over WebSocket and resolves with the socket and its `welcome`. */
async function connect(url) {
  const socket = io(url, { transports: ["websocket"], forceNew: true, reconnection: false, timeout: EVENT_TIMEOUT_MS });
  const welcome = nextEvent(socket, "welcome");
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (err) => reject(new Error(`connect_error to ${url}: ${err.message}`)));
  });
  const [payload] = await welcome;
  return { socket, instance: payload?.instance };
}

/** A `message` from `from` reaches `to` unchanged, and `from` gets its ack. */
async function crosses(from, to, label) {
  const data = { check: label, nonce: Math.random().toString(36).slice(2), at: Date.now() };
  const received = nextEvent(to.socket, "message");
  assert.deepEqual(await ack(from.socket, "message", data), { ok: true }, `${label}: ack`);
  assert.deepEqual(await received, [data], `${label}: what arrived`);
}

async function relay(urlA, urlB) {
  const a = await connect(urlA);
  const b = await connect(urlB);
  try {
    assert.ok(a.instance && b.instance && a.instance !== b.instance,
      `the clients should be greeted by two instances, were by ${a.instance} and ${b.instance}`);
    await crosses(a, b, `${a.instance} -> ${b.instance}`);
    await crosses(b, a, `${b.instance} -> ${a.instance}`);
    console.log(`message crossed ${a.instance} -> ${b.instance} and back`);
  } finally {
    a.socket.disconnect();
    b.socket.disconnect();
  }
}

async function hold(url, secs) {
  const { socket } = await connect(url);
  console.log(`connected ${socket.id}`);
  const [reason] = await nextEvent(socket, "disconnect", secs * 1000);
  console.log(`disconnect ${reason}`);
}

const [command, ...args] = process.argv.slice(2);
const commands = {
  relay: () => relay(args[0], args[1]),
  hold: () => hold(args[0], Number(args[1] || 60)),
};
if (!commands[command] || args.length !== 2) {
  console.error("usage: container-clients.mjs relay URL_A URL_B | hold URL SECS");
  process.exit(2);
}
try {
  await commands[command]();
  process.exit(0);
} catch (err) {
  console.error(err?.message ?? String(err));
  process.exit(1);
}
