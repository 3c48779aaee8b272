// Starting ecos processes for every test suite that is not Rust: the
// JavaScript suite and the browser suite import this module; the Python suite
// and scripts/deploy_checks.py run it as a command (CLI mode, below) through
// tests/support/launcher.py. Node builtins only, so any suite can use it
// without installing anything.
//
// An instance is the ecos binary ($ECOS_BIN, default target/release/ecos)
// started with JSON logs on PORT=0 (or a given port). Its port is read from
// its start-up line (the JSON line whose message is "ecos started", field
// `addr`), so there is no race for a free port; it counts as up once
// `/readyz` answers 200 (or the status asked for). Stopping is SIGTERM, then
// SIGKILL after a grace period.
//
// CLI mode:
//
//   node tests/support/launcher.mjs [--instances N | --ids a,b,c] [--bin PATH]
//       [--port P]... [--redis-url URL [--redis-prefix P]] [--env K=V]...
//       [--ready STATUS|none] [--log-dir DIR] [--startup-timeout SECS]
//
// starts the instances (ids ecos1..ecosN by default; with --redis-url they
// form a cluster under a key prefix of their own), prints ONE JSON line once
// all are ready:
//
//   {"instances":[{"id","port","url","pid","log"}],"redis_prefix":...}
//
// and then reads commands on stdin, one a line: `stop ID [GRACE_SECS]`
// (SIGTERM) and `kill ID` (SIGKILL). Whenever an instance exits it prints
// {"event":"exited","id","code","signal"}. When stdin closes, or on SIGTERM
// or SIGINT, it stops every instance and exits. If an instance does not
// start, it prints {"error": "..."} (the log tails are on stderr) and exits 1.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdirSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The binary every suite tests: $ECOS_BIN, or the release build. */
export const ECOS_BIN = path.resolve(process.env.ECOS_BIN || path.join(REPO_ROOT, "target/release/ecos"));
/** The machine's Redis, for clusters: $ECOS_TEST_REDIS_URL or the default port. */
export const REDIS_URL = process.env.ECOS_TEST_REDIS_URL || "redis://127.0.0.1:6379";
/** Bound on the start-up line, and again on readiness after it. */
export const STARTUP_TIMEOUT_MS = 10_000;
/** How long `stop` waits after SIGTERM before SIGKILL. */
export const STOP_GRACE_MS = 10_000;
/** Lines of stdout and of stderr kept per instance for `logs()`. */
const TAIL_LINES = 60;

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

/**
 * The environment of an instance: ours minus anything that would change what
 * ecos does behind the test's back (a stray REDIS_URL would turn a single
 * instance into a cluster member, $DYNO wins over ECOS_INSTANCE_ID, and
 * RUST_LOG could hide the start-up line), then JSON logs on PORT=0, then
 * `extra`.
 */
export function instanceEnv(extra = {}) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith("ECOS_") || ["REDIS_URL", "DYNO", "PORT", "RUST_LOG"].includes(key)) continue;
    env[key] = value;
  }
  return { ...env, PORT: "0", ECOS_LOG__FORMAT: "json", ...extra };
}

/** A fresh Redis key prefix, so parallel runs and clusters never see each other. */
export function uniquePrefix(tag) {
  return `ecos-${tag}-${process.pid}-${randomBytes(4).toString("hex")}`;
}

/** Environment of a cluster member: Redis at `url` under `prefix`, stats every 0.2 s. */
export function clusterEnv(url, prefix) {
  return { REDIS_URL: url, ECOS_REDIS__PREFIX: prefix, ECOS_REDIS__STATS_INTERVAL_SECS: "0.2" };
}

// ---------------------------------------------------------------------------
// Instances
// ---------------------------------------------------------------------------

/** Every child still running; killed hard if this process exits first. */
const running = new Set();
let hooksInstalled = false;

/**
 * Makes sure no instance outlives this process: SIGKILL at exit, and on
 * SIGINT/SIGTERM unless the program handles those itself (the CLI does).
 */
function installExitHooks() {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("exit", () => {
    for (const child of running) child.kill("SIGKILL");
  });
  for (const [signal, number] of [["SIGINT", 2], ["SIGTERM", 15]]) {
    if (process.listenerCount(signal) > 0) continue;
    process.once(signal, () => process.exit(128 + number));
  }
}

/** Keeps the last `max` lines of a stream. */
function tail(max) {
  const lines = [];
  return {
    push(line) {
      lines.push(line);
      if (lines.length > max) lines.shift();
    },
    text: () => (lines.length ? lines.join("\n") : "(nothing)"),
  };
}

/** The start-up line's fields, if `line` is it. */
function startupFields(line) {
  let entry;
  try {
    entry = JSON.parse(line);
  } catch {
    return null; // not a JSON log line
  }
  const fields = entry?.fields ?? entry;
  return fields?.message === "ecos started" && fields.addr !== undefined ? fields : null;
}

/** Whether the instance's process is still running. */
export const isRunning = (instance) => instance.child.exitCode === null && instance.child.signalCode === null;

/**
 * Starts one instance and resolves once it printed its start-up line (not
 * yet ready: see `waitReady`). Options: `bin`, `env` (added to
 * `instanceEnv`), `port` (default 0: any), `logFile` (every line of both
 * streams is also appended there), `startupTimeoutMs`, `quiet` (no warning
 * on stderr when it exits without being asked to).
 *
 * The handle: `{ id, port, url, pid, addr, child, exited, flushed, logs(),
 * stop(), kill() }`. `exited` resolves with `{ code, signal }`, `flushed`
 * once the log file has all of the output; `logs()` is the tail of stdout
 * and stderr. Setting `child.stopping = true` before signalling
 * the child yourself silences the warning.
 */
export function startInstance(id, options = {}) {
  const {
    bin = ECOS_BIN,
    env = {},
    port = 0,
    logFile,
    startupTimeoutMs = STARTUP_TIMEOUT_MS,
    quiet = false,
  } = options;
  installExitHooks();
  return new Promise((resolve, reject) => {
    const stdout = tail(TAIL_LINES);
    const stderr = tail(TAIL_LINES);
    const logs = () => `--- ${id} stdout ---\n${stdout.text()}\n--- ${id} stderr ---\n${stderr.text()}`;
    const file = logFile ? createWriteStream(logFile, { flags: "a" }) : null;
    // A full disk must not take the tests down with it: the tails still work.
    file?.on("error", () => {});
    let settled = false;

    const child = spawn(bin, [], {
      cwd: REPO_ROOT,
      env: instanceEnv({ ECOS_INSTANCE_ID: id, PORT: String(port), ...env }),
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
      reject(new Error(`${id}: ${why}\n  binary: ${bin}\n${logs()}`));
    };
    const timer = setTimeout(
      () => fail(`ecos did not print its start-up line within ${startupTimeoutMs / 1000} s`),
      startupTimeoutMs,
    );
    child.on("error", (err) =>
      fail(`could not start ecos (${err.message}); build it with \`cargo build --release\` or set ECOS_BIN`),
    );
    child.on("exit", (code, signal) => {
      if (!settled) return fail(`ecos exited early (code ${code}, signal ${signal})`);
      if (!child.stopping && !quiet) {
        // A crash mid-run: the failing tests alone would not say why.
        console.error(`${id}: ecos exited unexpectedly (code ${code}, signal ${signal})\n${logs()}`);
      }
    });

    // Both pipes are read for the whole life of the process so that it never
    // blocks on a full pipe. The log file is complete once both have closed.
    const errLines = createInterface({ input: child.stderr });
    const outLines = createInterface({ input: child.stdout });
    const closed = (lines) => new Promise((resolveClosed) => lines.once("close", resolveClosed));
    const flushed = Promise.all([closed(errLines), closed(outLines)]).then(
      () => file && new Promise((resolveFile) => file.end(resolveFile)),
    );
    errLines.on("line", (line) => {
      stderr.push(line);
      file?.write(`${line}\n`);
    });
    outLines.on("line", (line) => {
      stdout.push(line);
      file?.write(`${line}\n`);
      if (settled) return;
      const fields = startupFields(line);
      if (!fields) return;
      const match = /:(\d+)$/.exec(String(fields.addr));
      if (!match) return fail(`could not read a port from start-up address ${JSON.stringify(fields.addr)}`);
      settled = true;
      clearTimeout(timer);
      const bound = Number(match[1]);
      const instance = {
        id,
        port: bound,
        url: `http://127.0.0.1:${bound}`,
        pid: child.pid,
        addr: String(fields.addr),
        logFile,
        child,
        exited,
        flushed,
        logs,
        stop: (graceMs) => stopInstance(instance, graceMs),
        kill: () => killInstance(instance),
      };
      resolve(instance);
    });
  });
}

/**
 * Polls `/readyz` until it answers `status` (default 200) and resolves with
 * its JSON body; fails with the instance's log tail. On the Redis adapter a
 * 200 is awaited until it also reports `"redis": "up"` (readiness stays 200
 * while Redis is unreachable), unless `redisUp` is false.
 */
export async function waitReady(
  instance,
  { status = 200, timeoutMs = STARTUP_TIMEOUT_MS, redisUp = true } = {},
) {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer yet";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${instance.url}/readyz`);
      const body = await res.text();
      if (res.status === status) {
        const parsed = JSON.parse(body);
        const linked = !redisUp || status !== 200 || parsed.adapter !== "redis" || parsed.redis === "up";
        if (linked) return parsed;
      }
      last = `${res.status} ${body}`;
    } catch (err) {
      last = err.message;
    }
    await sleep(50);
  }
  throw new Error(
    `${instance.id}: /readyz did not answer ${status} within ${timeoutMs / 1000} s (last: ${last})\n${instance.logs()}`,
  );
}

/** SIGTERM, then SIGKILL (with a warning) if it has not exited after `graceMs`. */
export async function stopInstance(instance, graceMs = STOP_GRACE_MS) {
  const child = instance?.child;
  if (!child || !isRunning(instance)) return;
  child.stopping = true;
  child.kill("SIGTERM");
  const killer = setTimeout(() => {
    console.error(`${instance.id}: still running ${graceMs / 1000} s after SIGTERM; sending SIGKILL\n${instance.logs()}`);
    child.kill("SIGKILL");
  }, graceMs);
  await instance.exited;
  clearTimeout(killer);
}

/** Kills an instance at once, like a crash (SIGKILL). */
export async function killInstance(instance) {
  if (!isRunning(instance)) return;
  instance.child.stopping = true;
  instance.child.kill("SIGKILL");
  await instance.exited;
}

/**
 * Starts instances in parallel and waits until each is ready. `specs` is a
 * list of `{ id, ...startInstance options }`; `ready` is the `/readyz` status
 * to wait for (null: the start-up line is enough). If any fails, the others
 * are stopped and the error names every failure.
 */
export async function startInstances(specs, { ready = 200 } = {}) {
  const results = await Promise.allSettled(
    specs.map(async ({ id, ...options }) => {
      const instance = await startInstance(id, options);
      if (ready === null) return instance;
      try {
        await waitReady(instance, { status: ready, timeoutMs: options.startupTimeoutMs });
      } catch (err) {
        await killInstance(instance);
        throw err;
      }
      return instance;
    }),
  );
  const failures = results.filter((r) => r.status === "rejected");
  if (failures.length) {
    await Promise.all(results.filter((r) => r.status === "fulfilled").map((r) => stopInstance(r.value)));
    throw new Error(failures.map((f) => f.reason?.message ?? String(f.reason)).join("\n\n"));
  }
  return results.map((r) => r.value);
}

// ---------------------------------------------------------------------------
// CLI mode
// ---------------------------------------------------------------------------

const USAGE = `usage: node tests/support/launcher.mjs [--instances N | --ids a,b,c] [--bin PATH]
    [--port P]... [--redis-url URL [--redis-prefix P]] [--env K=V]...
    [--ready STATUS|none] [--log-dir DIR] [--startup-timeout SECS]`;

/** Reads the command line into startInstances() arguments; throws on nonsense. */
function parseCli(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      instances: { type: "string" },
      ids: { type: "string" },
      bin: { type: "string" },
      port: { type: "string", multiple: true, default: [] },
      "redis-url": { type: "string" },
      "redis-prefix": { type: "string" },
      env: { type: "string", multiple: true, default: [] },
      ready: { type: "string", default: "200" },
      "log-dir": { type: "string" },
      "startup-timeout": { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const count = values.instances === undefined ? null : Number(values.instances);
  if (count !== null && !(Number.isInteger(count) && count > 0)) throw new Error(`--instances ${values.instances}`);
  const ids = values.ids ? values.ids.split(",").filter(Boolean) : null;
  if (ids && count !== null && ids.length !== count) throw new Error("--ids and --instances disagree");
  const names = ids ?? Array.from({ length: count ?? 1 }, (_, i) => `ecos${i + 1}`);
  if (values.port.length && values.port.length !== names.length) {
    throw new Error(`${values.port.length} --port for ${names.length} instance(s)`);
  }
  const overrides = {};
  for (const pair of values.env) {
    const at = pair.indexOf("=");
    if (at < 1) throw new Error(`--env ${pair}: want KEY=VALUE`);
    overrides[pair.slice(0, at)] = pair.slice(at + 1);
  }
  let redisPrefix = null;
  if (values["redis-url"]) redisPrefix = values["redis-prefix"] || uniquePrefix("launcher");
  // --env wins over the cluster settings.
  const env = { ...(redisPrefix ? clusterEnv(values["redis-url"], redisPrefix) : {}), ...overrides };
  const ready = values.ready === "none" ? null : Number(values.ready);
  if (ready !== null && !Number.isInteger(ready)) throw new Error(`--ready ${values.ready}`);
  const logDir = values["log-dir"] ? path.resolve(values["log-dir"]) : null;
  if (logDir) mkdirSync(logDir, { recursive: true });
  const startupTimeoutMs = values["startup-timeout"] ? Number(values["startup-timeout"]) * 1000 : undefined;
  const specs = names.map((id, i) => ({
    id,
    bin: values.bin ? path.resolve(values.bin) : ECOS_BIN,
    env,
    port: values.port.length ? Number(values.port[i]) : 0,
    logFile: logDir ? path.join(logDir, `${id}.log`) : undefined,
    startupTimeoutMs,
    quiet: true, // the CLI reports every exit itself
  }));
  return { specs, ready, redisPrefix };
}

async function cli(argv) {
  const say = (object) => process.stdout.write(`${JSON.stringify(object)}\n`);
  let instances = [];
  let stopping = null;
  const stopAll = () => {
    stopping ??= Promise.all(instances.map((i) => stopInstance(i).then(() => i.flushed))).then(() => process.exit(0));
    return stopping;
  };
  // Registered before anything starts, so the module's own hooks (SIGKILL
  // and exit) are not installed for these: here they stop gracefully.
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, stopAll);

  let parsed;
  try {
    parsed = parseCli(argv);
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    say({ error: err.message });
    process.exit(2);
  }
  try {
    instances = await startInstances(parsed.specs, { ready: parsed.ready });
  } catch (err) {
    console.error(err.message);
    say({ error: err.message.split("\n")[0] });
    process.exit(1);
  }
  for (const instance of instances) {
    instance.exited.then(({ code, signal }) => {
      if (stopping) return;
      if (!instance.child.stopping) console.error(`${instance.id}: ecos exited unexpectedly\n${instance.logs()}`);
      say({ event: "exited", id: instance.id, code, signal });
    });
  }
  say({
    instances: instances.map(({ id, port, url, pid, logFile }) => ({ id, port, url, pid, log: logFile ?? null })),
    redis_prefix: parsed.redisPrefix,
  });

  const byId = new Map(instances.map((i) => [i.id, i]));
  const commands = createInterface({ input: process.stdin });
  commands.on("line", (line) => {
    const [verb, id, grace] = line.trim().split(/\s+/);
    const instance = byId.get(id);
    if (!instance || !["stop", "kill"].includes(verb)) {
      console.error(`launcher: unknown command ${JSON.stringify(line)} (want \`stop ID [GRACE_SECS]\` or \`kill ID\`)`);
      return;
    }
    if (verb === "kill") killInstance(instance);
    else stopInstance(instance, grace ? Number(grace) * 1000 : STOP_GRACE_MS);
  });
  commands.on("close", stopAll);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await cli(process.argv.slice(2));
}
