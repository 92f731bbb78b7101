//! Loopback ports for servers a test starts as processes (an app, a database).

use std::sync::Mutex;

/// A loopback port that is free now, for a server that binds it later, and again after a
/// restart.
///
/// Ports are drawn below the kernel's ephemeral range: a port taken from a bind on port 0 can
/// next become the local port of any outgoing connection (a test's own HTTP client), and the
/// server would then fail to bind it. Each port is handed out once per process, so two tests
/// running at once never pick the same one.
///
/// ```
/// let port = restate_runtime::testing::free_loopback_port();
/// assert_ne!(port, restate_runtime::testing::free_loopback_port());
/// std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
/// ```
pub fn free_loopback_port() -> u16 {
    use rand::Rng;
    static HANDED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    if ephemeral_low < 12_000 {
        // No room below the ephemeral range: the kernel's pick, as good as it gets here.
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("bind a loopback port")
            .port();
        handed.push(port);
        return port;
    }
    let (low, high) = (10_000, ephemeral_low.min(32_768));
    let mut rng = rand::rng();
    for _ in 0..10_000 {
        let port = rng.random_range(low..high);
        if !handed.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.push(port);
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}
