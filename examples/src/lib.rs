//! Runnable apps on `restate-runtime`; each binary lives in `src/bin/`.

/// Process statistics from `/proc`, for the benchmark drivers.
pub mod procfs {
    /// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`); 0 when unreadable.
    pub fn status_kib(pid: u32, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// User + system CPU seconds of a process (all threads).
    pub fn cpu_secs(pid: u32) -> f64 {
        stat_secs(&format!("/proc/{pid}/stat"), 11..13)
    }

    /// User + system CPU seconds of this process and of its children it has waited for.
    pub fn own_cpu_secs_with_children() -> f64 {
        stat_secs("/proc/self/stat", 11..15)
    }

    /// The sum of some clock-tick fields of a `stat` file, in seconds. Fields are counted after
    /// the command name, which may itself contain spaces or parentheses.
    fn stat_secs(path: &str, fields: std::ops::Range<usize>) -> f64 {
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        let values: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: u64 = fields
            .filter_map(|i| values.get(i)?.parse::<u64>().ok())
            .sum();
        ticks as f64 / 100.0
    }
}

/// The sum of every sample of metric `name` (with or without labels) in the Prometheus text
/// of an admin API's `/metrics`; `None` when it has no sample.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
}

/// A loopback port free right now, for a server a bench driver starts.
pub fn free_port() -> u16 {
    restate_runtime::testing::free_loopback_port()
}

/// Gives jemalloc's free pages back to the OS at once (its background threads would over the
/// next seconds): what the apps running on jemalloc (`bench-services`, `sleepers`) pass to
/// `RuntimeBuilder::release_heap`.
pub fn release_jemalloc_heap() {
    // `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena, whichever thread owns it.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: the name is NUL-terminated and this control takes no input and gives no output.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}
