// ecos processes for the browser tests, started by tests/support/launcher.mjs
// (node builtins only, so this suite still needs nothing from tests/js).

import { REDIS_URL, REPO_ROOT, clusterEnv, startInstances, uniquePrefix } from "../support/launcher.mjs";

export { REPO_ROOT };

/**
 * Starts ecos (on `port`, or a free one) and resolves once it is ready:
 * `{ id, port, url, child, logs(), stop(), kill() }`; `stop()` is SIGTERM,
 * then SIGKILL after 10 s; `kill()` is SIGKILL, like a crash.
 */
export async function startServer(id, { port = 0, env = {} } = {}) {
  const [server] = await startInstances([{ id, port, env }]);
  return server;
}

/** `ids.length` instances on the machine's Redis, under a prefix of their own. */
export function startCluster(ids) {
  const env = clusterEnv(REDIS_URL, uniquePrefix("browser"));
  return startInstances(ids.map((id) => ({ id, env })));
}
