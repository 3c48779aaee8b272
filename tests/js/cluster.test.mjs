// The ecos event contract (README.md) against a three-instance cluster on
// Redis ($ECOS_TEST_REDIS_URL, default redis://127.0.0.1:6379), with the
// clients of every test spread over the instances, plus a resilience smoke
// test on a cluster of its own. Each cluster uses a fresh key prefix; nothing
// on the Redis server is flushed or stopped.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { contractSuite } from "./contract-suite.mjs";
import {
  Clients,
  ack,
  assertMessageFlows,
  eventually,
  getJson,
  isRunning,
  it,
  killServer,
  metricOf,
  nextEvent,
  sortedIds,
  startCluster,
  stopServer,
} from "./harness.mjs";

contractSuite({ title: "ecos contract (3-instance cluster)", clustered: true, start: () => startCluster() });

describe("cluster resilience (a cluster of its own)", () => {
  let topo;
  const clients = new Clients(() => topo);

  before(async () => {
    topo = await startCluster({ ids: ["js-r1", "js-r2", "js-r3"] });
  });

  after(async () => {
    await clients.closeAllAndSettle();
    await topo?.stop();
  });

  /** ecos_cluster_instances on each of `servers`. */
  const instancesSeen = (servers) => () => Promise.all(servers.map((s) => metricOf(s, "ecos_cluster_instances")));

  it("when an instance crashes, the others keep working together, and a replacement joins", async () => {
    const [r1, r2, r3] = topo.servers;
    const [a, b, c] = await clients.connectMany("websocket", 3); // on r1, r2, r3
    for (const s of [a, b, c]) await ack(s, "join", "survivors");
    await eventually(instancesSeen([r1, r2, r3]), [3, 3, 3], 3_000, "ecos_cluster_instances");

    // r3 crashes (SIGKILL: no goodbye to Redis).
    const cGone = nextEvent(c, "disconnect");
    await killServer(r3);
    const [reason] = await cGone;
    assert.ok(["transport close", "transport error"].includes(reason), `c's disconnect reason: ${reason}`);

    // r1 and r2 still talk to each other.
    await assertMessageFlows(a, b, "after a crash");
    await assertMessageFlows(b, a, "after a crash, reverse");
    const atB = nextEvent(b, "room:message");
    assert.deepEqual(await ack(a, "room:message", "survivors", "still here"), { ok: true });
    assert.deepEqual(await atB, ["survivors", "still here"]);
    assert.deepEqual(await ack(a, "room:members", "survivors"), {
      ok: true,
      room: "survivors",
      count: 2,
      members: sortedIds([a, b]),
    });
    // The crashed instance stops reporting; within three stats rounds (at
    // least 2 s) the others stop counting it.
    await eventually(instancesSeen([r1, r2]), [2, 2], 5_000, "ecos_cluster_instances after a crash");
    for (const server of [r1, r2]) {
      const { status, body } = await getJson(`${server.url}/readyz`);
      assert.equal(status, 200, `${server.id} stays ready: ${JSON.stringify(body)}`);
      assert.equal(body.redis, "up", `${server.id}'s Redis link: ${JSON.stringify(body)}`);
    }

    // A replacement joins the same cluster and takes part at once.
    const r4 = await topo.addServer("js-r4");
    const { socket: d, welcome } = await clients.connect("polling", { server: r4 });
    assert.equal(welcome.instance, "js-r4");
    await ack(d, "join", "survivors");
    const atB2 = nextEvent(b, "room:message");
    const atD = nextEvent(d, "room:message");
    assert.deepEqual(await ack(a, "room:message", "survivors", "welcome d"), { ok: true });
    assert.deepEqual(await atB2, ["survivors", "welcome d"]);
    assert.deepEqual(await atD, ["survivors", "welcome d"]);
    a.on("room:ask", (room, data, cb) => cb("a"));
    b.on("room:ask", (room, data, cb) => cb("b"));
    const asked = await ack(d, "room:ask", "survivors", "roll call");
    assert.equal(asked.ok, true, JSON.stringify(asked));
    assert.equal(asked.missed, 0, JSON.stringify(asked));
    assert.deepEqual(
      Object.fromEntries(asked.answers.map(({ id, answer }) => [id, answer])),
      { [a.id]: "a", [b.id]: "b" },
    );
    await eventually(instancesSeen([r1, r2, r4]), [3, 3, 3], 3_000, "ecos_cluster_instances with the replacement");
  });

  it("an instance that stops gracefully leaves the cluster stats at once", async () => {
    const live = topo.servers.filter(isRunning);
    assert.equal(live.length, 3, "three instances left from the previous test");
    const [stays, leaves, other] = live;
    await eventually(instancesSeen(live), [3, 3, 3], 3_000, "ecos_cluster_instances");
    const { socket: x } = await clients.connect("websocket", { server: stays });
    const { socket: y } = await clients.connect("websocket", { server: leaves });
    const { socket: z } = await clients.connect("polling", { server: other });

    const yGone = nextEvent(y, "disconnect");
    const stoppedAt = Date.now();
    await stopServer(leaves);
    assert.deepEqual(await leaves.exited, { code: 0, signal: null });
    assert.equal((await yGone)[0], "transport close");
    // Removed from the stats on the way out, not after the 2 s staleness.
    await eventually(instancesSeen([stays, other]), [2, 2], 1_500, "ecos_cluster_instances after a graceful stop");
    assert.ok(Date.now() - stoppedAt < 2_000, "the graceful leave should be seen before the staleness window");
    await assertMessageFlows(x, z, "after a graceful stop");
    await assertMessageFlows(z, x, "after a graceful stop, reverse");
  });
});
