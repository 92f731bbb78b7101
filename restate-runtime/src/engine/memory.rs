//! Gives heap freed by a wave of invocations back to the operating system.
//!
//! Allocators keep freed memory for reuse. After a burst (say 20k handlers in memory for the
//! second before they suspend), the live heap drops but the resident size stays at the burst's
//! peak: measured here, 100k suspended invocations held 64 MiB of live heap in 235 MiB resident
//! with glibc's allocator. Once the number of invocations in memory has fallen to a quarter of
//! its peak, the engine asks the allocator to release its free pages
//! (`EngineConfig::release_heap`: glibc's `malloc_trim` by default). It does so once at start
//! too: opening the store after a crash (the log replay, and before quick repair redb's walk of
//! every tree) and recovery free what they used (measured before quick repair: 156 MiB resident
//! for 66 MiB of live heap after a restart with a million suspended invocations).

use std::time::Duration;

use super::Engine;

/// How often the number of invocations in memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Bursts smaller than this are not worth a trim.
const MIN_PEAK: usize = 1024;

pub(super) async fn trim_loop(engine: Engine) {
    let mut shutdown = engine.shutdown_signal();
    let _ = tokio::task::spawn_blocking(engine.config.release_heap).await;
    let mut peak = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let now = engine.inflight.lock().expect("inflight map").len();
        peak = peak.max(now);
        if peak >= MIN_PEAK && now <= peak / 4 {
            peak = now;
            let _ = tokio::task::spawn_blocking(engine.config.release_heap).await;
        }
    }
}

/// The default release: glibc's `malloc_trim` (nothing elsewhere).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn release_free_heap() {
    // SAFETY: `malloc_trim` only returns free memory to the OS; it takes the allocator's locks
    // itself and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_free_heap() {}
