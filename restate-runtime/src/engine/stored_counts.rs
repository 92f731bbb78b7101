//! What `/metrics` reads from the store rather than from memory: unfinished invocations by
//! state (suspended and scheduled ones wait on disk, not in memory) and the buckets of the
//! concurrency limits this process knows of. A scan of the recovery index is not cheap with
//! millions waiting, so its counts are reused for [`RECOUNT_AFTER`]; every read runs on a
//! blocking thread.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Engine;
use crate::storage::StorageError;

/// How long one count of the store's unfinished invocations is reported before the next.
const RECOUNT_AFTER: Duration = Duration::from_secs(10);

/// Unfinished invocations in the store, by state.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Unfinished {
    pub suspended: i64,
    /// Delayed starts not due yet.
    pub scheduled: i64,
    /// Running, runnable, queued on a key or paused.
    pub other: i64,
}

/// One concurrency limit's unkeyed bucket: permits held, invocations or steps waiting.
#[derive(Debug, Clone)]
pub(crate) struct LimiterDepth {
    pub name: String,
    pub running: i64,
    pub queued: i64,
}

/// The latest count and when it was made.
#[derive(Default)]
pub(crate) struct CountCache(Mutex<Option<(Instant, Unfinished)>>);

impl Engine {
    /// The store's side of `/metrics`: unfinished invocations by state (`None` if the store
    /// could not be read) and the concurrency limits' buckets.
    pub(crate) async fn stored_counts(&self) -> (Option<Unfinished>, Vec<LimiterDepth>) {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || {
            let unfinished = engine.unfinished_counts();
            if let Err(e) = &unfinished {
                tracing::warn!("counting unfinished invocations for /metrics failed: {e}");
            }
            (unfinished.ok(), engine.limiter_depths())
        })
        .await
        .unwrap_or_default()
    }

    fn unfinished_counts(&self) -> Result<Unfinished, StorageError> {
        let mut cache = self.stored_counts.0.lock().expect("count cache");
        if let Some((at, counts)) = *cache
            && at.elapsed() < RECOUNT_AFTER
        {
            return Ok(counts);
        }
        let mut counts = Unfinished::default();
        // Nothing is kept: the heads are enough, and the scan holds no hint.
        self.storage.unfinished_where(&mut |_, head| {
            match head {
                Some(head) if head.suspended => counts.suspended += 1,
                Some(head) if head.due_at_ms.is_some() => counts.scheduled += 1,
                _ => counts.other += 1,
            }
            false
        })?;
        *cache = Some((Instant::now(), counts));
        Ok(counts)
    }

    fn limiter_depths(&self) -> Vec<LimiterDepth> {
        self.concurrency_limits()
            .known()
            .into_iter()
            .filter_map(|name| {
                let bucket = crate::concurrency::stored(self, &name).ok()?;
                Some(LimiterDepth {
                    running: bucket.holders.len() as i64,
                    queued: bucket.waiting.len() as i64,
                    name,
                })
            })
            .collect()
    }
}
