// The event contract (contract-suite.mjs) against an ecos that is already
// running somewhere else, such as the container scripts/test-container
// starts:
//
//   CONTRACT_URL=http://127.0.0.1:3000 node --test --test-reporter=spec tests/js/external-contract.mjs
//
// Not matched by `tests/js/*.test.mjs`: it needs CONTRACT_URL. The instance
// must be fresh and otherwise unused (the suite counts its connections), use
// the in-memory adapter (no REDIS_URL), and run with
// ECOS_SOCKETIO__ACK_TIMEOUT_SECS=1, the server ack timeout the suite
// expects (harness.mjs SERVER_ACK_TIMEOUT_MS).

import { contractSuite } from "./contract-suite.mjs";
import { startExternal } from "./harness.mjs";

const url = process.env.CONTRACT_URL;
if (!url) {
  console.error("set CONTRACT_URL to the base URL of a running ecos (http://HOST:PORT)");
  process.exit(2);
}

contractSuite({ title: `ecos contract (external instance at ${url})`, clustered: false, start: () => startExternal(url) });
