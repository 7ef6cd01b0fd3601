//! Port ranges for tests that start `hotstuff-node` processes.

use std::net::TcpListener;

/// A base port with `n` free consensus ports, `n` free client ports (base + 100) and `n` free
/// metrics ports (base + 200) on loopback, below the kernel's ephemeral range (32768 and up), so
/// no outgoing connection takes the port of a node that starts later.
pub fn free_base_port(n: usize) -> u16 {
    // Tests of one file run in parallel in one process: each call starts its search elsewhere
    // (a range spans 204 ports), or two could pick the same free range at once.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = u64::from(std::process::id()) * 7919 + call * 401;
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed + attempt * 331) % 12_000) as u16;
        let ports = (0..n as u16).flat_map(|i| [base + i, base + 100 + i, base + 200 + i]);
        let held: Vec<_> = ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if held.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free port range on loopback");
}
