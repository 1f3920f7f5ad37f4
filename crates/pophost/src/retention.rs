//! The retention job: every `retention.interval_secs`, delete messages older than their
//! domain's retention (`pophost domain set --retention-days`), in batches, and forget activity
//! (login history, daily stats) older than `activity.keep_days`. The store does the work
//! (`Policies::expire`, which skips open maildrops and is safe from several frontends at once;
//! `Admin::prune_activity`); this loop only supplies the clock and the schedule.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mailstore::Store;
use tokio_util::sync::CancellationToken;

use crate::config::RetentionSettings;

/// Unix milliseconds now: the clock the job runs on (tests pass their own to `expire`).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs the job until `shutdown`; the first run is one interval after start, so a fleet
/// restarting together does not all sweep at once.
pub async fn run(store: Arc<dyn Store>, settings: RetentionSettings, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.interval,
        settings.interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.expire(now_ms(), settings.batch_size).await {
            Ok(report) if report.deleted > 0 => {
                tracing::info!(
                    deleted = report.deleted,
                    batches = report.batches,
                    "retention: expired messages deleted"
                )
            }
            Ok(_) => tracing::debug!("retention: nothing to delete"),
            // Logged and retried at the next interval: nothing is half-deleted (each batch is
            // one transaction).
            Err(e) => tracing::warn!(error = %e, "retention run failed"),
        }
        // The recycle bin's entries older than their domain's bin_days (retention bins what it
        // deletes, so this also finishes what an earlier run started).
        match store.purge_expired_bins(now_ms()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "retention: recycle bin entries purged"),
            Err(e) => tracing::warn!(error = %e, "purging recycle bins failed"),
        }
        let keep_ms = i64::from(settings.activity_keep_days) * 86_400_000;
        match store.prune_activity(now_ms() - keep_ms).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "retention: old activity forgotten"),
            Err(e) => tracing::warn!(error = %e, "pruning activity failed"),
        }
        // Alarms are activity too: kept as long as the login history they explain.
        match store.prune_alarms(now_ms() - keep_ms).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "retention: old re-download alarms forgotten"),
            Err(e) => tracing::warn!(error = %e, "pruning re-download alarms failed"),
        }
        match store.prune_delivery_keys().await {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "retention: expired dedup records forgotten"),
            Err(e) => tracing::warn!(error = %e, "pruning delivery dedup records failed"),
        }
    }
}
