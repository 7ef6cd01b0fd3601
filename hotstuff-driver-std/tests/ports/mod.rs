//! Port ranges for tests that start `hotstuff-node` processes.

use std::net::TcpListener;
use std::time::Instant;

/// A base port with `n` free consensus ports and `n` free client ports (base + 100) on
/// loopback, below the kernel's ephemeral range (32768 and up), so no outgoing connection takes
/// the port of a node that starts later.
pub fn free_base_port(n: usize) -> u16 {
    let seed = u64::from(std::process::id()) * 7919 + u64::from(Instant::now().elapsed().subsec_nanos());
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed + attempt * 331) % 12_000) as u16;
        let ports = (0..n as u16).flat_map(|i| [base + i, base + 100 + i]);
        let held: Vec<_> = ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if held.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free port range on loopback");
}
