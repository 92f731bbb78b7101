//! The service the suspended-invocation memory bench (`sleepbench`) and its regression test
//! drive: `POST /Sleeper/nap` with a number of seconds sleeps that long on a durable timer.
//! A nap longer than `RESTATE_SUSPEND_AFTER` leaves memory (suspended) until its timer fires.
//! `POST /Sleeper/noop` does nothing (the completed-invocation bench).
//! Reads the usual `RESTATE_*` environment.
//!
//! ```sh
//! RESTATE_SUSPEND_AFTER=1s cargo run --release --bin sleepers
//! curl localhost:8080/Sleeper/nap/send --json 3600
//! ```
//!
//! It runs on jemalloc, as `bench-services` does. The resident set size alone cannot tell memory
//! the process holds from memory the allocator keeps after it was freed. So the binary
//! counts heap bytes itself: with `SLEEPERS_HEAP_FILE=<path>` it rewrites that file every
//! 100 ms with `<live heap bytes> <peak live heap bytes> <pid>`.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use restate_runtime::prelude::*;
use tikv_jemallocator::Jemalloc;

/// jemalloc, counting the bytes currently allocated and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    fn grew(by: usize) {
        let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to `Jemalloc` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `Jemalloc` shares.
        let p = unsafe { Jemalloc.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { Jemalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `Jemalloc` with `layout` (every allocation goes there).
        unsafe { Jemalloc.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is checked by the caller.
        let p = unsafe { Jemalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            Self::grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Rewrites `path` with the heap counters every 100 ms (write, then rename: readers never see
/// a partial file).
fn report_heap(path: std::path::PathBuf) {
    std::thread::spawn(move || {
        let tmp = path.with_extension("tmp");
        loop {
            let line = format!(
                "{} {} {}\n",
                LIVE.load(Ordering::Relaxed),
                PEAK.load(Ordering::Relaxed),
                std::process::id()
            );
            if std::fs::write(&tmp, line).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

#[derive(Default)]
pub struct Sleeper;

#[service]
impl Sleeper {
    /// Sleeps `seconds` on a durable timer, then returns them.
    #[handler]
    async fn nap(&self, ctx: Context<'_>, seconds: u64) -> HandlerResult<u64> {
        ctx.sleep(Duration::from_secs(seconds)).await?;
        Ok(seconds)
    }

    /// Returns how many ms after `due_ms` (ms since the epoch, when it was meant to run) it
    /// runs: the lateness of a delayed send, which `sleepbench --mixed` measures. The wall
    /// clock is read outside the journal on purpose: each attempt reports its own lateness.
    #[handler]
    async fn late(&self, _ctx: Context<'_>, due_ms: u64) -> HandlerResult<i64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(now - due_ms as i64)
    }

    /// Does nothing: what `sleepbench --completed` fills the store with.
    #[handler]
    async fn noop(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    restate_runtime::init_tracing();
    if let Some(path) = std::env::var_os("SLEEPERS_HEAP_FILE") {
        report_heap(path.into());
    }
    Runtime::builder()
        .release_heap(examples::release_jemalloc_heap)
        .build()?
        .serve()
        .await?;
    Ok(())
}
