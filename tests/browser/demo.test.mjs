// The demo page (`GET /`, static/index.html) in Debian's headless Chromium,
// driven by playwright-core: two pages chat through ecos (one instance, then a
// three-instance Redis cluster with each page on its own instance), and the
// Online/Offline badge follows a server restart on the same port.
//
// The page loads the client from the Socket.IO CDN with an SRI hash. The test
// machine has no internet, so that one request is answered from the npm
// package socket.io-client@4.8.3 (alias `socket.io-client-cdn`): the browser
// still checks the page's integrity hash against it. Any other request that
// leaves 127.0.0.1 is aborted.
//
// Screenshots go to target/browser/*.png.

import { describe, it as nodeIt, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { ECOS_BIN, instanceEnv } from "../support/launcher.mjs";
import { REPO_ROOT, startCluster, startServer } from "./servers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const CDN_URL = "https://cdn.socket.io/4.8.3/socket.io.min.js";
const SHOTS = path.join(REPO_ROOT, "target", "browser");
const WAIT_MS = 10_000;
/** Socket.IO's reconnection backoff is 1 s doubling to 5 s, randomised: allow a few rounds. */
const RECONNECT_MS = 15_000;
const it = (name, fn) => nodeIt(name, { timeout: 45_000 }, fn);

const require = createRequire(import.meta.url);
const clientScriptPath = path.join(path.dirname(require.resolve("socket.io-client-cdn/package.json")), "dist", "socket.io.min.js");
let clientScript;

let browser;
/** Pages opened by the current test, closed at its end. */
const contexts = [];

before(async () => {
  clientScript = await readFile(clientScriptPath);
  await mkdir(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  }).catch((err) => {
    throw new Error(`cannot start Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH): ${err.message}`);
  });
});

after(async () => {
  await browser?.close();
});

/**
 * Opens the demo page of `server` in a fresh browser context ("a tab of its own").
 * With `cdn: false` the CDN script request fails, as on a machine without internet.
 */
async function openPage(server, { cdn = true, hash = "" } = {}) {
  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  contexts.push(context);
  const problems = [];
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url === CDN_URL && !cdn) return route.abort("internetdisconnected");
    if (url === CDN_URL) {
      return route.fulfill({
        status: 200,
        contentType: "application/javascript; charset=utf-8",
        // The script tag is crossorigin="anonymous": without this header the
        // browser refuses the response before it even checks the hash.
        headers: { "access-control-allow-origin": "*" },
        body: clientScript,
      });
    }
    if (new URL(url).hostname === "127.0.0.1") return route.continue();
    problems.push(`blocked request to ${url}`);
    return route.abort();
  });
  const page = await context.newPage();
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
  });
  page.problems = problems;
  await page.goto(`${server.url}/${hash}`);
  return page;
}

async function closePages() {
  await Promise.all(contexts.splice(0).map((c) => c.close()));
}

const statusOf = (page) => page.locator("#status").textContent();

/** Waits until the badge reads `text` ("Online"/"Offline"). */
async function waitStatus(page, text, ms = WAIT_MS) {
  try {
    await page.waitForFunction((want) => document.getElementById("status")?.textContent === want, text, { timeout: ms });
  } catch (err) {
    throw new Error(`status stayed "${await statusOf(page)}", expected "${text}" within ${ms} ms; ${page.problems.join("; ") || "no page errors"}`);
  }
}

/** Waits until the page is Online and shows `instance` as its instance id. */
async function waitConnected(page, instance, ms = WAIT_MS) {
  await waitStatus(page, "Online", ms);
  await page.waitForFunction((want) => document.getElementById("instance")?.textContent === want, instance, { timeout: ms });
}

/**
 * Types `text` in `from` and sends it; asserts that `to` shows it as someone
 * else's message and that `from` marks its own copy as acked.
 */
async function chat(from, to, text) {
  await from.fill("#input", text);
  await from.click("#send");
  await from
    .locator('#messages li.own[data-acked="true"]', { hasText: text })
    .waitFor({ timeout: WAIT_MS })
    .catch(() => assert.fail(`"${text}" was not acked on the sending page; ${from.problems.join("; ")}`));
  // The ack says the server took it, not that anyone got it: "sent", never "delivered".
  assert.match(await from.locator('#messages li.own[data-acked="true"]', { hasText: text }).last().locator(".tick").textContent(), /^✓ sent$/);
  await to
    .locator("#messages li:not(.own):not(.system)", { hasText: text })
    .waitFor({ timeout: WAIT_MS })
    .catch(() => assert.fail(`"${text}" did not reach the other page; ${to.problems.join("; ")}`));
  // Never echoed back to the sender as a message from someone else.
  assert.equal(await from.locator("#messages li:not(.own):not(.system)", { hasText: text }).count(), 0);
}

async function screenshot(pages, name) {
  for (const [i, page] of pages.entries()) {
    await page.screenshot({ path: path.join(SHOTS, `${name}-${i + 1}.png`) });
  }
}

describe("demo page in headless Chromium", () => {
  it("the npm copy of socket.io-client 4.8.3 matches the page's integrity hash", async () => {
    const server = await startServer("br-sri");
    try {
      const html = await (await fetch(`${server.url}/`)).text();
      const tag = /<script src="([^"]+)" integrity="([^"]+)"/.exec(html);
      assert.ok(tag, "the page should load the client with an integrity attribute");
      assert.equal(tag[1], CDN_URL);
      const actual = `sha384-${createHash("sha384").update(clientScript).digest("base64")}`;
      assert.equal(actual, tag[2], `${clientScriptPath} does not match the page's SRI hash`);
    } finally {
      await server.stop();
    }
  });

  it("without the client script the page stays Offline and names ECOS_DEMO__CLIENT_SCRIPT_PATH", async () => {
    const server = await startServer("br-offline");
    try {
      const page = await openPage(server, { cdn: false });
      await page.locator("#hint").waitFor({ state: "visible", timeout: WAIT_MS });
      assert.match(await page.locator("#hint").textContent(), /ECOS_DEMO__CLIENT_SCRIPT_PATH/);
      assert.equal(await statusOf(page), "Offline");
      await screenshot([page], "no-client-script");
    } finally {
      await closePages();
      await server.stop();
    }
  });

  it("two pages chat through one instance", async () => {
    const server = await startServer("br-single");
    try {
      const [a, b] = [await openPage(server), await openPage(server)];
      await waitConnected(a, "br-single");
      await waitConnected(b, "br-single");
      assert.equal(await a.locator("#hint").isVisible(), false, "no hint when the client loaded");
      await chat(a, b, "hello from page A");
      await chat(b, a, "hi back from page B");
      await screenshot([a, b], "single");
      assert.deepEqual([...a.problems, ...b.problems], []);
    } finally {
      await closePages();
      await server.stop();
    }
  });

  it("two pages on different instances of a 3-instance cluster chat", async () => {
    const servers = await startCluster(["br-a", "br-b", "br-c"]);
    try {
      const a = await openPage(servers[0]);
      const c = await openPage(servers[2]);
      await waitConnected(a, "br-a");
      await waitConnected(c, "br-c");
      await chat(a, c, "across the cluster: A to C");
      await chat(c, a, "and back: C to A");
      await screenshot([a, c], "cluster");
      assert.deepEqual([...a.problems, ...c.problems], []);
    } finally {
      await closePages();
      await Promise.all(servers.map((s) => s.stop()));
    }
  });

  it("Online/Offline follows a server restart on the same port, and the pages reconnect by themselves", async () => {
    let server = await startServer("br-first");
    try {
      const [a, b] = [await openPage(server), await openPage(server)];
      await waitConnected(a, "br-first");
      await waitConnected(b, "br-first");
      await chat(a, b, "before the restart");

      await server.kill();
      await waitStatus(a, "Offline");
      await waitStatus(b, "Offline");
      await screenshot([a], "restart-offline");

      server = await startServer("br-second", { port: server.port });
      await waitConnected(a, "br-second", RECONNECT_MS).catch((err) => assert.fail(`page A did not reconnect: ${err.message}`));
      await waitConnected(b, "br-second", RECONNECT_MS).catch((err) => assert.fail(`page B did not reconnect: ${err.message}`));
      await chat(b, a, "after the restart");
      await screenshot([a, b], "restart-online");
    } finally {
      await closePages();
      await server.stop();
    }
  });
});

const SECRET = "browser-secret-0123456789abcdef0123456789";

/** A token from `ecos token` (the command the docs give for development). */
function devToken(sub, rooms, extra = []) {
  return execFileSync(ECOS_BIN, ["token", "--sub", sub, "--rooms", rooms, "--ttl", "10m", ...extra], {
    env: instanceEnv({ ECOS_AUTH__JWT__SECRETS: SECRET }),
    encoding: "utf8",
  }).trim();
}

describe("demo page in auth.mode = jwt", () => {
  it("connects with #token= in the URL, shows the user and chats; without a token it says why", async () => {
    const server = await startServer("br-jwt", { env: { ECOS_AUTH__MODE: "jwt", ECOS_AUTH__JWT__SECRETS: SECRET } });
    try {
      const alice = await openPage(server, { hash: `#token=${devToken("alice", "demo:*", ["--broadcast"])}` });
      const bob = await openPage(server, { hash: `#token=${devToken("bob", "demo:*", ["--broadcast"])}` });
      await waitConnected(alice, "br-jwt");
      await waitConnected(bob, "br-jwt");
      assert.equal(await alice.locator("#user").textContent(), "alice");
      assert.equal(await bob.locator("#user").textContent(), "bob");
      await chat(alice, bob, "signed in and talking");

      const stranger = await openPage(server);
      await stranger
        .locator("#messages li.system", { hasText: "Refused: unauthorized: missing token" })
        .waitFor({ timeout: WAIT_MS })
        .catch(() => assert.fail(`no refusal shown; ${stranger.problems.join("; ")}`));
      assert.equal(await statusOf(stranger), "Offline");
      // Pasting a token in the field and pressing Connect brings it online.
      await stranger.fill("#token", devToken("carol", "demo:*"));
      await stranger.click("#use-token");
      await waitConnected(stranger, "br-jwt");
      assert.equal(await stranger.locator("#user").textContent(), "carol");
      await screenshot([alice, stranger], "jwt");
      assert.deepEqual([...alice.problems, ...bob.problems], []);
    } finally {
      await closePages();
      await server.stop();
    }
  });
});

describe("the origin guard in Chromium", () => {
  /**
   * A page server on its own port (its own origin) whose page connects to
   * `ecosUrl` over `transport` and reports `connected` or `refused`.
   */
  async function pageServer() {
    const http = createServer((req, res) => {
      if (req.url === "/socket.io.min.js") {
        res.writeHead(200, { "content-type": "application/javascript" });
        return res.end(clientScript);
      }
      res.writeHead(200, { "content-type": "text/html" });
      res.end(`<!doctype html><script src="/socket.io.min.js"></script><script>
        const params = new URLSearchParams(location.search);
        const socket = io(params.get("ecos"), { transports: [params.get("transport")], reconnection: false });
        socket.on("connect", () => { document.title = "connected"; });
        socket.on("connect_error", () => { document.title = "refused"; });
      </script>`);
    });
    await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
    return { http, origin: `http://127.0.0.1:${http.address().port}` };
  }

  it("refuses a page from another origin over WebSocket and polling, and lets the configured origin in", async () => {
    const allowed = await pageServer();
    const foreign = await pageServer();
    const server = await startServer("br-origin", { env: { ECOS_CORS__ALLOWED_ORIGINS: allowed.origin } });
    try {
      for (const transport of ["websocket", "polling"]) {
        for (const [site, want] of [[allowed, "connected"], [foreign, "refused"]]) {
          const context = await browser.newContext();
          contexts.push(context);
          const page = await context.newPage();
          await page.goto(`${site.origin}/?ecos=${encodeURIComponent(server.url)}&transport=${transport}`);
          await page
            .waitForFunction(() => document.title === "connected" || document.title === "refused", null, { timeout: WAIT_MS })
            .catch(() => assert.fail(`${site.origin} over ${transport}: neither connected nor refused`));
          assert.equal(await page.title(), want, `${site.origin} over ${transport}`);
        }
      }
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const refused = metrics
        .split("\n")
        .filter((l) => l.startsWith("ecos_http_requests_total{") && l.includes('route="/socket.io"') && l.includes('status="403"'))
        .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
      assert.ok(refused >= 2, `403s counted for the foreign page: ${refused}`);
    } finally {
      await closePages();
      await server.stop();
      allowed.http.close();
      foreign.http.close();
    }
  });
});
