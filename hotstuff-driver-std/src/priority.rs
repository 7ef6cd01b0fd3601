//! CPU priority of the driver's background threads.
//!
//! The store writer and the pruner do bulk work (B-tree inserts, page copies, deletions) that
//! nothing waits on at once; the consensus thread's turn is the critical path of every view.
//! On Linux these threads lower their own priority ([`BACKGROUND_NICE`]), so that when the
//! CPU is contended the scheduler runs the consensus thread first: a vote is not queued behind
//! a writer's transaction. They still get the CPU the consensus thread leaves, and a writer
//! that falls behind makes the consensus loop wait on its full queue (back-pressure), which
//! frees the CPU for it.

/// How far background threads lower their priority (a nice value, added to the process's).
pub const BACKGROUND_NICE: i32 = 5;

/// Lowers the calling thread's CPU priority by [`BACKGROUND_NICE`] (Linux; a no-op elsewhere).
/// Raising one's own nice value needs no privilege; a failure is logged and ignored.
pub(crate) fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        // On Linux the nice value is per thread: a thread id names this thread alone.
        let tid = rustix::thread::gettid();
        let result = getpriority_process(Some(tid))
            .and_then(|nice| setpriority_process(Some(tid), (nice + BACKGROUND_NICE).min(19)));
        if let Err(error) = result {
            tracing::debug!(%error, "could not lower a background thread's priority");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The calling thread's nice value, as the kernel reports it.
    fn nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // Fields from the state on (the command name, in parentheses, may hold spaces).
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        rest.split_whitespace().nth(16).expect("nice field").parse().expect("nice")
    }

    #[test]
    fn lowers_the_calling_thread_only() {
        let before = nice();
        let lowered = std::thread::spawn(|| {
            let start = nice();
            super::lower_this_thread();
            (start, nice())
        })
        .join()
        .expect("thread");
        assert_eq!(lowered.1, (lowered.0 + super::BACKGROUND_NICE).min(19), "{lowered:?}");
        assert_eq!(nice(), before, "the spawning thread keeps its priority");
    }
}
