//! Retention: old raw readings and old hourly rollups removed.

use std::time::Duration;

use plantops_store::DynStore;

/// Applies the retention settings once an hour: raw readings (rolled up
/// first) and, separately, the rollups; 0 keeps either.
pub async fn prune_readings(store: DynStore, days: u32, rollup_days: u32) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        let now = chrono::Utc::now();
        if days > 0 {
            let before = now - chrono::Duration::days(i64::from(days));
            match crate::ops::rollups::prune_raw(&store, before).await {
                Ok(removed) => tracing::info!(removed, %before, "old readings pruned"),
                Err(error) => tracing::error!(%error, "pruning old readings failed"),
            }
        }
        if rollup_days > 0 {
            let before = now - chrono::Duration::days(i64::from(rollup_days));
            match store.prune_rollups(before).await {
                Ok(removed) => tracing::info!(removed, %before, "old hourly rollups pruned"),
                Err(error) => tracing::error!(%error, "pruning old rollups failed"),
            }
        }
    }
}
