//! The simulator's tests and the Byzantine and crash tests: one test binary (one build and link)
//! with a module per concern. `decode_alloc` (a counting global allocator) and `net_faults`
//! (wall-clock catch-up bounds over real sockets) stay binaries of their own.

mod e2e;
mod epochs;
mod fuzz_smoke;
mod kv_sim;
mod liveness;
mod reputation;
mod simulation;
mod snapshot_sim;
mod sync;
mod total_crash;
