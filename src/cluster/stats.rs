//! Cluster-wide totals: every instance records its socket count in one Redis
//! hash and reads back the sum, off the hot path.

use std::sync::{Weak, atomic::Ordering};

use super::driver::Inner;

/// Cluster-wide totals from the last stats round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStats {
    /// Instances that reported within the last three intervals.
    pub instances: u64,
    /// Sockets connected across those instances.
    pub connected_sockets: u64,
}

/// Lua: record this node's count with Redis's clock, drop stale nodes, sum the rest.
const STATS_SCRIPT: &str = r"
local now = tonumber(redis.call('TIME')[1])
local stale_after = tonumber(ARGV[3])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. now)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local all = redis.call('HGETALL', KEYS[1])
local instances, sockets = 0, 0
for i = 1, #all, 2 do
  local count, seen = string.match(all[i + 1], '^(%d+) (%d+)$')
  if seen and now - tonumber(seen) <= stale_after then
    instances = instances + 1
    sockets = sockets + tonumber(count)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
redis.call('EXPIRE', KEYS[1], stale_after * 2)
return {instances, sockets}
";

/// Every `stats_interval`, publishes this instance's socket count and reads
/// the cluster's total. Runs off the hot path; `/readyz` shows the last result.
pub(super) async fn report_stats(
    weak: Weak<Inner>,
    key: String,
    node: String,
    local_sockets: impl Fn() -> u64 + Send + Sync + 'static,
) {
    let Some(interval) = weak.upgrade().map(|i| i.settings.stats_interval) else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        stats_round(&inner, &key, &node, Some(local_sockets())).await;
    }
}

/// One stats round; `count: None` removes this node (on shutdown).
pub(super) async fn stats_round(inner: &Inner, key: &str, node: &str, count: Option<u64>) {
    let Some(mut conn) = inner.command_connection() else {
        return;
    };
    // A node is stale after three missed rounds (at least 2 s: TIME has whole seconds).
    let stale_after = (inner.settings.stats_interval.as_secs_f64() * 3.0)
        .ceil()
        .max(2.0) as u64;
    let script = redis::Script::new(STATS_SCRIPT);
    let mut invocation = script.key(key);
    invocation
        .arg(node)
        .arg(count.map(|c| c.to_string()).unwrap_or_default())
        .arg(stale_after);
    let call = invocation.invoke_async::<(u64, u64)>(&mut conn);
    match tokio::time::timeout(inner.settings.command_timeout, call).await {
        Ok(Ok((instances, sockets))) if count.is_some() => {
            inner.set_stats(ClusterStats {
                instances,
                connected_sockets: sockets,
            });
            inner.metrics.cluster_instances.set(instances as i64);
            inner.metrics.cluster_sockets.set(sockets as i64);
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::debug!(%error, "cluster stats round failed"),
        Err(_) => tracing::debug!("cluster stats round timed out"),
    }
}
