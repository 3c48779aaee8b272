// auth.mode = jwt with the official socket.io-client and tokens minted by the
// npm `jose` package: HMAC secrets (with rotation), PEM public keys (RSA, EC,
// Ed25519), a JWKS served by a local HTTP server (with key rotation and a
// provider that is down at start-up), every refusal with the connect_error
// the client sees and the counter that moved, the rooms claim, the reserved
// `user:` rooms, token expiry, and the user room across a 3-instance cluster.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { createServer } from "node:http";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { SignJWT, exportJWK, exportPKCS8, exportSPKI, generateKeyPair, importPKCS8 } from "jose";
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
  closeTracked,
  track,
  tryConnect,
} from "./harness.mjs";

const ISSUER = "https://issuer.test";
const AUDIENCE = "ecos-tests";
const SECRETS = ["first-secret-0123456789abcdef0123456789", "second-secret-0123456789abcdef012345678"];
const hmacKey = (secret) => new TextEncoder().encode(secret);
const now = () => Math.floor(Date.now() / 1000);

/** Common settings of every jwt instance here; `extra` adds the keys. */
const jwtEnv = (extra) => ({
  ECOS_AUTH__MODE: "jwt",
  ECOS_AUTH__JWT__ISSUER: ISSUER,
  ECOS_AUTH__JWT__AUDIENCE: AUDIENCE,
  ...extra,
});

/**
 * A token for `claims` (defaults: alice, rooms team:42 and public:*, our
 * issuer and audience, valid for an hour); a claim set to `undefined` is left out.
 */
async function sign(key, alg, claims = {}, { kid } = {}) {
  const payload = {
    sub: "alice",
    rooms: ["team:42", "public:*"],
    iss: ISSUER,
    aud: AUDIENCE,
    iat: now(),
    exp: now() + 3600,
    ...claims,
  };
  for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k];
  return new SignJWT(payload).setProtectedHeader({ alg, ...(kid ? { kid } : {}) }).sign(key);
}

/** A token signed by hand: for what `jose` refuses to make (alg none, a PEM as an HMAC secret). */
function handMade(header, payload, hmacSecret) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = `${b64(header)}.${b64(payload)}`;
  if (hmacSecret === undefined) return `${body}.`;
  return `${body}.${createHmac("sha256", hmacSecret).update(body).digest("base64url")}`;
}


async function connectAs(server, token, options = {}) {
  const result = await tryConnect(server, { auth: { token }, ...options });
  assert.ok(result.ok, `should connect, got connect_error ${result.message}`);
  return result;
}

/** The value of one labelled sample of `name` on `server` (0 when absent). */
async function sample(server, name, label, value) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    if (line.includes(`${label}="${value}"`)) return Number(line.split(" ").pop());
  }
  return 0;
}
const authFailures = (server, reason) => sample(server, "ecos_auth_failures_total", "reason", reason);
const forbidden = (server, event) => sample(server, "ecos_forbidden_total", "event", event);

/** Asserts `token` is refused with `message`, and that `reason`'s counter moved by one. */
async function assertRefused(server, token, message, reason, options = {}) {
  const before = await authFailures(server, reason);
  const result = await tryConnect(server, token === undefined ? options : { auth: { token }, ...options });
  assert.equal(result.ok, false, `should be refused with ${message}`);
  assert.equal(result.message, message);
  await eventually(() => authFailures(server, reason), before + 1, 2_000, `ecos_auth_failures_total{reason="${reason}"}`);
}

describe("auth.mode = jwt with HMAC secrets", () => {
  let topo;
  let server;
  before(async () => {
    topo = await startSingle({
      id: "js-auth-hs",
      env: jwtEnv({ ECOS_AUTH__JWT__SECRETS: SECRETS.join(","), ECOS_AUTH__JWT__LEEWAY_SECS: "30" }),
    });
    server = topo.servers[0];
  });
  after(async () => {
    closeTracked();
    await topo?.stop();
  });

  it("accepts HS256, HS384 and HS512 tokens over both transports; welcome names the user", async () => {
    for (const alg of ["HS256", "HS384", "HS512"]) {
      for (const transport of ["websocket", "polling"]) {
        const { socket, welcome } = await connectAs(server, await sign(hmacKey(SECRETS[0]), alg), { transport });
        assert.deepEqual(welcome, { id: socket.id, instance: server.id, user: "alice" }, `${alg} over ${transport}`);
      }
    }
  });

  it("accepts a token signed with the second secret (rotation) and one expired within the leeway", async () => {
    const rotated = await connectAs(server, await sign(hmacKey(SECRETS[1]), "HS256", { sub: "bob" }));
    assert.equal(rotated.welcome.user, "bob");
    const late = await connectAs(server, await sign(hmacKey(SECRETS[0]), "HS256", { exp: now() - 10 }));
    assert.equal(late.welcome.user, "alice");
  });

  it("takes the token from Authorization: Bearer when the CONNECT payload has none, never from the query string", async () => {
    const token = await sign(hmacKey(SECRETS[0]), "HS256", { sub: "server-side" });
    const viaHeader = await tryConnect(server, { extraHeaders: { authorization: `Bearer ${token}` } });
    assert.ok(viaHeader.ok, viaHeader.message);
    assert.equal(viaHeader.welcome.user, "server-side");
    await assertRefused(server, undefined, "unauthorized: missing token", "missing_token", { query: { token } });
  });

  it("refuses each bad token with the reason the client can act on, and counts it", async () => {
    const key = hmacKey(SECRETS[0]);
    await assertRefused(server, undefined, "unauthorized: missing token", "missing_token");
    await assertRefused(server, "not-a-jwt", "unauthorized: malformed token", "malformed");
    await assertRefused(server, await sign(key, "HS256", { exp: now() - 120 }), "unauthorized: expired", "expired");
    await assertRefused(server, await sign(key, "HS256", { nbf: now() + 120 }), "unauthorized: not yet valid", "not_yet_valid");
    await assertRefused(server, await sign(key, "HS256", { iss: "https://evil.test" }), "unauthorized: wrong issuer", "wrong_issuer");
    await assertRefused(server, await sign(key, "HS256", { aud: "someone-else" }), "unauthorized: wrong audience", "wrong_audience");
    await assertRefused(server, await sign(key, "HS256", { exp: undefined }), "unauthorized: missing exp", "missing_exp");
    await assertRefused(server, await sign(key, "HS256", { sub: undefined }), "unauthorized: missing or invalid user claim", "bad_user");
    await assertRefused(
      server,
      await sign(hmacKey("a-secret-ecos-was-never-given-0123456789"), "HS256"),
      "unauthorized: bad signature",
      "bad_signature",
    );
    const none = handMade({ alg: "none", typ: "JWT" }, { sub: "mallory", iss: ISSUER, aud: AUDIENCE, exp: now() + 60 });
    await assertRefused(server, none, "unauthorized: algorithm not allowed", "bad_algorithm");
    // An RS256 token where only secrets are configured: no key may check it.
    const { privateKey } = await generateKeyPair("RS256");
    await assertRefused(server, await sign(privateKey, "RS256"), "unauthorized: algorithm not allowed", "bad_algorithm");
  });

  it("bounds rooms by the rooms claim: allowed and forbidden join, room:message, room:ask, room:members", async () => {
    const key = hmacKey(SECRETS[0]);
    const alice = (await connectAs(server, await sign(key, "HS256"))).socket;
    const bob = (await connectAs(server, await sign(key, "HS256", { sub: "bob", rooms: ["team:42"] }))).socket;
    assert.deepEqual(await ack(alice, "join", "team:42"), { ok: true, room: "team:42" });
    assert.deepEqual(await ack(alice, "join", "public:lobby"), { ok: true, room: "public:lobby" });
    assert.deepEqual(await ack(bob, "join", "team:42"), { ok: true, room: "team:42" });

    const before = await forbidden(server, "join");
    assert.deepEqual(await ack(alice, "join", "team:43"), { ok: false, error: "forbidden" });
    assert.deepEqual(await ack(bob, "join", "public:lobby"), { ok: false, error: "forbidden" });
    assert.equal(await forbidden(server, "join"), before + 2);

    const atBob = nextEvent(bob, "room:message");
    assert.deepEqual(await ack(alice, "room:message", "team:42", "hi team"), { ok: true });
    assert.deepEqual(await atBob, ["team:42", "hi team"]);
    assert.deepEqual(await ack(alice, "room:message", "team:43", "x"), { ok: false, error: "forbidden" });

    bob.once("room:ask", (_room, _data, answer) => answer("yes"));
    const asked = await ack(alice, "room:ask", "team:42", "ready?");
    assert.equal(asked.ok, true);
    assert.equal(asked.answers.length, 1);
    assert.deepEqual(await ack(alice, "room:ask", "team:43", "x"), { ok: false, error: "forbidden" });

    const members = await ack(alice, "room:members", "team:42");
    assert.equal(members.ok, true);
    assert.equal(members.count, 2);
    assert.deepEqual(members.users, ["alice", "bob"]);
    assert.deepEqual(await ack(bob, "room:members", "public:lobby"), { ok: false, error: "forbidden" });
    assert.ok((await forbidden(server, "room:members")) >= 1);
  });

  it("reserves user: rooms: no client may join, leave, message, ask or list one, not even its own", async () => {
    const alice = (await connectAs(server, await sign(hmacKey(SECRETS[0]), "HS256", { rooms: ["*"], broadcast: true }))).socket;
    for (const [event, ...args] of [
      ["join", "user:bob"],
      ["join", "user:alice"],
      ["leave", "user:alice"],
      ["room:message", "user:bob", "hi"],
      ["room:ask", "user:bob", "hi"],
      ["room:members", "user:alice"],
    ]) {
      assert.deepEqual(await ack(alice, event, ...args), { ok: false, error: "forbidden" }, `${event} ${args[0]}`);
    }
    // The wildcard grants every other room.
    assert.deepEqual(await ack(alice, "join", "anything"), { ok: true, room: "anything" });
  });

  it("lets only tokens with the broadcast claim speak to everyone", async () => {
    const key = hmacKey(SECRETS[0]);
    const quiet = (await connectAs(server, await sign(key, "HS256"))).socket;
    const speaker = (await connectAs(server, await sign(key, "HS256", { sub: "announcer", broadcast: true }))).socket;
    assert.deepEqual(await ack(quiet, "message", "hello all"), { ok: false, error: "forbidden" });
    const heard = nextEvent(quiet, "message");
    assert.deepEqual(await ack(speaker, "message", "announcement"), { ok: true });
    assert.deepEqual(await heard, ["announcement"]);
  });

  it("lists only the rooms a socket's token allows, never user: rooms", async () => {
    const key = hmacKey(SECRETS[0]);
    const admin = (await connectAs(server, await sign(key, "HS256", { sub: "admin", rooms: ["*"] }))).socket;
    const alice = (await connectAs(server, await sign(key, "HS256"))).socket;
    assert.equal((await ack(admin, "join", "secret:plans")).ok, true);
    assert.equal((await ack(alice, "join", "team:42")).ok, true);
    const seenByAlice = await ack(alice, "rooms");
    assert.equal(seenByAlice.ok, true);
    assert.ok(seenByAlice.rooms.includes("team:42"), JSON.stringify(seenByAlice));
    assert.ok(!seenByAlice.rooms.includes("secret:plans"), JSON.stringify(seenByAlice));
    assert.ok(!seenByAlice.rooms.some((r) => r.startsWith("user:")), JSON.stringify(seenByAlice));
    assert.equal(seenByAlice.count, seenByAlice.rooms.length);
    const seenByAdmin = await ack(admin, "rooms");
    assert.ok(seenByAdmin.rooms.includes("secret:plans"));
    assert.ok(!seenByAdmin.rooms.some((r) => r.startsWith("user:")), JSON.stringify(seenByAdmin));
  });
});

describe("auth.mode = jwt: token expiry", () => {
  let topo;
  before(async () => {
    topo = await startSingle({
      id: "js-auth-exp",
      env: jwtEnv({ ECOS_AUTH__JWT__SECRETS: SECRETS[0], ECOS_AUTH__JWT__LEEWAY_SECS: "0" }),
    });
  });
  after(async () => {
    closeTracked();
    await topo?.stop();
  });

  it("disconnects the socket when its token expires (counted), and the auth callback reconnects with a fresh one", async () => {
    const [server] = topo.servers;
    let minted = 0;
    const socket = io(server.url, {
      transports: ["websocket"],
      forceNew: true,
      // Called on every (re)connection: the pattern docs/auth.md shows.
      auth: (cb) => {
        minted += 1;
        sign(hmacKey(SECRETS[0]), "HS256", { sub: `alice-${minted}`, exp: now() + 2 }).then((token) => cb({ token }));
      },
    });
    track(socket);
    socket.on("disconnect", (reason) => {
      if (reason === "io server disconnect") socket.connect();
    });
    const [first] = await nextEvent(socket, "welcome");
    assert.equal(first.user, "alice-1");
    const before = await sample(server, "ecos_disconnections_total", "reason", "token_expired");
    const [reason] = await nextEvent(socket, "disconnect", 6_000);
    assert.equal(reason, "io server disconnect");
    const [second] = await nextEvent(socket, "welcome", 6_000);
    assert.equal(second.user, "alice-2");
    await eventually(
      () => sample(server, "ecos_disconnections_total", "reason", "token_expired"),
      (v) => v >= before + 1,
      2_000,
      'ecos_disconnections_total{reason="token_expired"}',
    );
    socket.io.reconnection(false);
    socket.off("disconnect");
    socket.disconnect();
  });
});

describe("auth.mode = jwt with PEM public keys", () => {
  const keys = {};
  const servers = {};
  const topos = [];
  before(async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "ecos-auth-"));
    for (const alg of ["RS256", "ES256", "EdDSA"]) {
      keys[alg] = await generateKeyPair(alg, { extractable: true });
      const file = path.join(dir, `${alg}.pem`);
      keys[alg].pem = await exportSPKI(keys[alg].publicKey);
      await writeFile(file, keys[alg].pem);
      const topo = await startSingle({ id: `js-auth-${alg.toLowerCase()}`, env: jwtEnv({ ECOS_AUTH__JWT__PUBLIC_KEY_FILE: file }) });
      topos.push(topo);
      servers[alg] = topo.servers[0];
    }
  });
  after(async () => {
    closeTracked();
    await Promise.all(topos.map((t) => t.stop()));
  });

  it("accepts RS256 and PS256 with an RSA key, ES256 with a P-256 key, EdDSA with an Ed25519 key", async () => {
    for (const [server, alg] of [
      [servers.RS256, "RS256"],
      [servers.RS256, "PS256"],
      [servers.ES256, "ES256"],
      [servers.EdDSA, "EdDSA"],
    ]) {
      // WebCrypto binds a key to one algorithm: the same RSA key, imported for PSS.
      const key = alg === "PS256" ? await importPKCS8(await exportPKCS8(keys.RS256.privateKey), "PS256") : keys[alg].privateKey;
      const { welcome } = await connectAs(server, await sign(key, alg, { sub: `user-${alg}` }));
      assert.equal(welcome.user, `user-${alg}`);
    }
  });

  it("makes algorithm confusion impossible: the RSA public key is never an HMAC secret, one family never checks another", async () => {
    const payload = { sub: "mallory", iss: ISSUER, aud: AUDIENCE, exp: now() + 60 };
    const forged = handMade({ alg: "HS256", typ: "JWT" }, payload, keys.RS256.pem);
    await assertRefused(servers.RS256, forged, "unauthorized: algorithm not allowed", "bad_algorithm");
    await assertRefused(servers.RS256, await sign(keys.ES256.privateKey, "ES256"), "unauthorized: algorithm not allowed", "bad_algorithm");
    await assertRefused(servers.ES256, await sign(keys.RS256.privateKey, "RS256"), "unauthorized: algorithm not allowed", "bad_algorithm");
    const stranger = await generateKeyPair("RS256");
    await assertRefused(servers.RS256, await sign(stranger.privateKey, "RS256"), "unauthorized: bad signature", "bad_signature");
    const strangerEd = await generateKeyPair("EdDSA");
    await assertRefused(servers.EdDSA, await sign(strangerEd.privateKey, "EdDSA"), "unauthorized: bad signature", "bad_signature");
  });
});

describe("auth.mode = jwt with a JWKS endpoint", () => {
  /** The JWKS the local provider serves now; `fetches` counts its requests. */
  const provider = { keys: [], fetches: 0, server: null, port: 0 };
  const pairs = {};
  let topo;
  let server;

  async function jwk(pair, kid, alg) {
    return { ...(await exportJWK(pair.publicKey)), kid, alg, use: "sig" };
  }

  function listen(port = 0) {
    provider.server = createServer((req, res) => {
      provider.fetches += 1;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ keys: provider.keys }));
    });
    return new Promise((resolve) => provider.server.listen(port, "127.0.0.1", () => resolve(provider.server.address().port)));
  }

  before(async () => {
    for (const [name, alg] of [["rsa1", "RS256"], ["rsa2", "RS256"], ["ec", "ES256"], ["ed", "EdDSA"]]) {
      pairs[name] = await generateKeyPair(alg, { extractable: true });
    }
    provider.keys = [await jwk(pairs.rsa1, "rsa-1", "RS256"), await jwk(pairs.ec, "ec-1", "ES256"), await jwk(pairs.ed, "ed-1", "EdDSA")];
    provider.port = await listen();
    topo = await startSingle({
      id: "js-auth-jwks",
      env: jwtEnv({ ECOS_AUTH__JWT__JWKS_URL: `http://127.0.0.1:${provider.port}/.well-known/jwks.json` }),
    });
    server = topo.servers[0];
  });
  after(async () => {
    closeTracked();
    await topo?.stop();
    provider.server?.close();
  });

  it("accepts RS256, ES256 and EdDSA tokens whose kid is in the set", async () => {
    for (const [pair, alg, kid] of [[pairs.rsa1, "RS256", "rsa-1"], [pairs.ec, "ES256", "ec-1"], [pairs.ed, "EdDSA", "ed-1"]]) {
      const { welcome } = await connectAs(server, await sign(pair.privateKey, alg, { sub: kid }, { kid }));
      assert.equal(welcome.user, kid);
    }
  });

  it("refuses an unknown kid, and forged kids cannot make ecos hammer the provider", async () => {
    await sleep(5_500); // past the refetch gap, so the first forged kid may refetch once
    const fetchesBefore = provider.fetches;
    for (let i = 0; i < 10; i++) {
      const token = await sign(pairs.rsa2.privateKey, "RS256", {}, { kid: `forged-${i}` });
      await assertRefused(server, token, "unauthorized: unknown key", "unknown_key");
    }
    assert.ok(provider.fetches - fetchesBefore <= 1, `10 forged kids caused ${provider.fetches - fetchesBefore} JWKS fetches`);
  });

  it("follows key rotation: a new kid is fetched when it first appears, a removed one is refused", async () => {
    provider.keys = [await jwk(pairs.rsa2, "rsa-2", "RS256")];
    const fresh = await sign(pairs.rsa2.privateKey, "RS256", { sub: "rotated" }, { kid: "rsa-2" });
    // The refetch waits out the 5 s gap since the last fetch: retry until then.
    let result;
    const deadline = Date.now() + 8_000;
    do {
      result = await tryConnect(server, { auth: { token: fresh } });
      if (!result.ok) await sleep(500);
    } while (!result.ok && Date.now() < deadline);
    assert.ok(result.ok, `the new key was never accepted: ${result.message}`);
    assert.equal(result.welcome.user, "rotated");
    const old = await sign(pairs.rsa1.privateKey, "RS256", {}, { kid: "rsa-1" });
    await assertRefused(server, old, "unauthorized: unknown key", "unknown_key");
  });

  it("starts while the provider is down, refuses with `keys unavailable`, then recovers", async () => {
    // A port with nothing behind it, for now.
    const probe = createServer();
    const port = await new Promise((resolve) => probe.listen(0, "127.0.0.1", () => resolve(probe.address().port)));
    await new Promise((resolve) => probe.close(resolve));
    const late = await startSingle({
      id: "js-auth-jwks-late",
      env: jwtEnv({ ECOS_AUTH__JWT__JWKS_URL: `http://127.0.0.1:${port}/jwks` }),
    });
    try {
      const [lateServer] = late.servers;
      const token = await sign(pairs.ec.privateKey, "ES256", { sub: "patient" }, { kid: "ec-1" });
      await assertRefused(lateServer, token, "unauthorized: keys unavailable", "keys_unavailable");
      // The provider comes up on that port.
      provider.keys = [await jwk(pairs.ec, "ec-1", "ES256")];
      const previous = provider.server;
      await listen(port);
      try {
        let result;
        const deadline = Date.now() + 10_000;
        do {
          result = await tryConnect(lateServer, { auth: { token } });
          if (!result.ok) await sleep(500);
        } while (!result.ok && Date.now() < deadline);
        assert.ok(result.ok, `never recovered: ${result.message}`);
        assert.equal(result.welcome.user, "patient");
      } finally {
        provider.server.close();
        provider.server = previous;
      }
    } finally {
      closeTracked();
      await late.stop();
    }
  });
});

describe("auth.mode = jwt in a 3-instance cluster", () => {
  let topo;
  before(async () => {
    topo = await startCluster({
      ids: ["js-auth-c1", "js-auth-c2", "js-auth-c3"],
      env: jwtEnv({ ECOS_AUTH__JWT__SECRETS: SECRETS.join(",") }),
    });
  });
  after(async () => {
    closeTracked();
    await topo?.stop();
  });

  it("room:members names the users of a room whose devices are spread over every instance", async () => {
    const key = hmacKey(SECRETS[0]);
    const devices = [];
    for (const server of topo.servers) {
      const { socket } = await connectAs(server, await sign(key, "HS256"));
      assert.equal((await ack(socket, "join", "team:42")).ok, true);
      devices.push(socket);
    }
    const bob = (await connectAs(topo.servers[1], await sign(key, "HS256", { sub: "bob", rooms: ["team:42"] }))).socket;
    assert.equal((await ack(bob, "join", "team:42")).ok, true);
    const members = await ack(bob, "room:members", "team:42");
    assert.equal(members.ok, true);
    assert.equal(members.count, 4);
    assert.deepEqual(members.users, ["alice", "bob"]);
  });
});
