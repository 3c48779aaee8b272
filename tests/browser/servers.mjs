// Starting and stopping ecos processes for the browser tests: the release
// binary ($ECOS_BIN, default target/release/ecos) with JSON logs; the port is
// read from the start-up line (`fields.addr` of "ecos started"), and a server
// counts as up once /readyz answers 200.
//
// Kept separate from tests/js/harness.mjs so this suite installs and runs on
// its own (its own package.json, no dependency on tests/js/node_modules).

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const ECOS_BIN = path.resolve(process.env.ECOS_BIN || path.join(REPO_ROOT, "target/release/ecos"));
const REDIS_URL = process.env.ECOS_TEST_REDIS_URL || "redis://127.0.0.1:6379";
const STARTUP_TIMEOUT_MS = 10_000;

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** Our environment minus what would change ecos behind the test's back, plus `extra`. */
function serverEnv(extra) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith("ECOS_") || ["REDIS_URL", "DYNO", "PORT"].includes(key)) continue;
    env[key] = value;
  }
  return { ...env, PORT: "0", ECOS_LOG__FORMAT: "json", ...extra };
}

/**
 * Starts ecos (on `port`, or a free one) and resolves once it is ready:
 * `{ id, port, url, child, logs(), stop(), kill() }`.
 */
export async function startServer(id, { port = 0, env = {} } = {}) {
  const lines = [];
  const logs = () => `--- ${id} ---\n${lines.join("\n") || "(no output)"}`;
  const child = spawn(ECOS_BIN, [], {
    cwd: REPO_ROOT,
    env: serverEnv({ ECOS_INSTANCE_ID: id, PORT: String(port), ...env }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  const exited = new Promise((resolve) => child.on("exit", () => (running.delete(child), resolve())));
  const keep = (line) => {
    lines.push(line);
    if (lines.length > 60) lines.shift();
  };
  createInterface({ input: child.stderr }).on("line", keep);

  const boundPort = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${id}: no start-up line within ${STARTUP_TIMEOUT_MS} ms\n${logs()}`)), STARTUP_TIMEOUT_MS);
    child.on("error", (err) => reject(new Error(`${id}: cannot start ${ECOS_BIN}: ${err.message}`)));
    child.on("exit", (code) => reject(new Error(`${id}: exited early (code ${code})\n${logs()}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      keep(line);
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (entry?.fields?.message !== "ecos started") return;
      const m = /:(\d+)$/.exec(String(entry.fields.addr));
      clearTimeout(timer);
      if (m) resolve(Number(m[1]));
      else reject(new Error(`${id}: no port in ${JSON.stringify(entry.fields.addr)}`));
    });
  }).catch((err) => {
    child.kill("SIGKILL");
    throw err;
  });

  const server = {
    id,
    port: boundPort,
    url: `http://127.0.0.1:${boundPort}`,
    child,
    logs,
    /** SIGTERM, then SIGKILL after 10 s. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(killer);
    },
    /** SIGKILL, like a crash. */
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGKILL");
      await exited;
    },
  };
  await waitReady(server).catch(async (err) => {
    await server.kill();
    throw err;
  });
  return server;
}

async function waitReady(server) {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  let last = "no answer";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${server.url}/readyz`);
      if (res.status === 200) return;
      last = `${res.status} ${await res.text()}`;
    } catch (err) {
      last = err.message;
    }
    await sleep(50);
  }
  throw new Error(`${server.id}: /readyz not 200 within ${STARTUP_TIMEOUT_MS} ms (last: ${last})\n${server.logs()}`);
}

/** `ids.length` instances on the machine's Redis, under a prefix of their own. */
export async function startCluster(ids) {
  const env = {
    REDIS_URL,
    ECOS_REDIS__PREFIX: `ecos-browser-${process.pid}-${randomBytes(4).toString("hex")}`,
    ECOS_REDIS__STATS_INTERVAL_SECS: "0.2",
  };
  const results = await Promise.allSettled(ids.map((id) => startServer(id, { env })));
  const failed = results.filter((r) => r.status === "rejected");
  if (failed.length) {
    await Promise.all(results.filter((r) => r.status === "fulfilled").map((r) => r.value.stop()));
    throw new Error(failed.map((r) => r.reason.message).join("\n\n"));
  }
  return results.map((r) => r.value);
}
