//! The background store writer: the bulk of what a node stores (committed blocks with their
//! certificates, app-state updates, uncommitted blocks of other proposers) is group-committed
//! on a thread of its own, off the consensus loop, so it never holds up the next vote.
//!
//! Jobs queue on a bounded channel (a full queue makes the consensus loop wait: back-pressure,
//! never unbounded memory). The thread wakes on a job, lets jobs accumulate for [`COALESCE`]
//! ([`COALESCE_BUSY`] while jobs come fast),
//! merges them into one [`WriteBatch`] ([`WriteBatch::append`]) and writes it with [`Storage::write_deferred`]:
//! visible to reads at once (and to a node's readers from the moment it is submitted, through
//! [`Unwritten`]), durable with the next durable write of either thread, and at the
//! latest after [`SYNC_EVERY`] or when the queue has been idle for [`SYNC_IDLE`] (with a store
//! that logs the consensus loop's safety writes, as [`super::RedbStore`] on disk does, those
//! are not redb commits: the writer's own syncs make its writes durable). Because a
//! store's writes become durable in order, a crash at any point leaves a prefix of them: the
//! committed chain, its app state and the tip always agree, and may only lag what the replica
//! had committed in memory (the replica commits those blocks again after the restart, from its
//! peers; see `Recovered`).

use super::unwritten::Unwritten;
use super::{Storage, WriteBatch};
use crate::error::StoreError;
use hotstuff_core::Height;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most jobs merged into one transaction.
const MAX_MERGE: usize = 256;
/// A busy writer makes its writes durable itself at least this often.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);
/// An idle writer makes its writes durable after this long without jobs.
pub const SYNC_IDLE: Duration = Duration::from_millis(10);
/// After a write job wakes the writer, it lets jobs accumulate this long before it writes
/// them in one transaction: a node committing a block every few hundred microseconds then pays
/// one transaction and one wake-up per window instead of one per drain. Nothing waits on these
/// writes: the app, readers and block-sync answers read queued commits from [`Unwritten`],
/// and a barrier is answered at once.
pub const COALESCE: Duration = Duration::from_millis(5);
/// The window of a busy writer (one whose jobs since its last transaction came at
/// [`BUSY_JOBS_PER_SECOND`] or more, and stay at half that rate): every B-tree page a transaction changes is copied and written once per
/// transaction, so under load a longer window saves work per block. (kv_cluster at window 1200,
/// three interleaved pairs on a quiet machine: 40 ms against 5 ms gave 167k against 148k tx/s,
/// p50 24.9 against 28.7 ms.) A lightly loaded node keeps the short window, so its commits
/// become durable (the idle sync, [`SYNC_IDLE`] after the last job) as soon as before.
pub const COALESCE_BUSY: Duration = Duration::from_millis(40);
/// The job rate at which a writer counts as busy. An idle chain (a block every 100 ms or so)
/// hands its writer 20-30 jobs a second and stays below it: at 25, an idle 4-validator cluster
/// kept flipping to the long window and used 4.3-5.3% of a core against 3.7-4.3% at 60. A
/// loaded node hands it hundreds.
pub const BUSY_JOBS_PER_SECOND: f64 = 60.0;

enum Job {
    /// Boxed: a batch is large (a safety state inline) and the queue holds a slot per job.
    Write(Box<WriteBatch>),
    /// Make everything queued before it durable, then answer.
    Barrier(SyncSender<()>),
}

struct Shared {
    /// The highest committed height the writer has written (visible to reads).
    applied: AtomicU64,
    /// The commits submitted and not yet written.
    unwritten: Arc<Unwritten>,
    /// The failure the writer stopped on, until reported.
    error: Mutex<Option<StoreError>>,
}

/// The handle of a background store writer thread. Dropping it makes everything submitted
/// durable and joins the thread.
pub struct StoreWriter {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter").field("applied", &self.applied()).finish_non_exhaustive()
    }
}

impl StoreWriter {
    /// Starts a writer for `store` with a queue of `queue` jobs (at least 1).
    pub fn start(store: Arc<dyn Storage>, queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(queue.max(1));
        let shared = Arc::new(Shared {
            applied: AtomicU64::new(0),
            unwritten: Arc::default(),
            error: Mutex::new(None),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("hotstuff-store".into())
            .spawn(move || run(store.as_ref(), &rx, &thread_shared))?;
        Ok(StoreWriter { tx: Some(tx), thread: Some(thread), shared })
    }

    /// Queues `batch` (waits while the queue is full). Its commits are in
    /// [`StoreWriter::unwritten`] from now until its writes are visible to reads (once
    /// [`StoreWriter::applied`] reaches its tip).
    pub fn submit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = self.tx.as_ref().ok_or(StoreError::WriterStopped)?;
        self.shared.unwritten.push(&batch.commits);
        tx.send(Job::Write(Box::new(batch))).map_err(|_| self.failure())
    }

    /// Waits until everything submitted so far is written and durable.
    pub fn barrier(&self) -> Result<(), StoreError> {
        let tx = self.tx.as_ref().ok_or(StoreError::WriterStopped)?;
        let (done_tx, done_rx) = sync_channel(1);
        tx.send(Job::Barrier(done_tx)).map_err(|_| self.failure())?;
        done_rx.recv().map_err(|_| self.failure())
    }

    /// The commits submitted and not yet written, for readers (see [`Unwritten`]).
    #[must_use]
    pub fn unwritten(&self) -> Arc<Unwritten> {
        self.shared.unwritten.clone()
    }

    /// The highest committed height written (visible to reads; durable at the latest after
    /// [`SYNC_EVERY`]).
    #[must_use]
    pub fn applied(&self) -> Height {
        Height(self.shared.applied.load(Ordering::Acquire))
    }

    /// Makes everything durable and stops the thread; the error it stopped on, if any.
    pub fn close(&mut self) -> Result<(), StoreError> {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                return Err(StoreError::WriterStopped);
            }
        }
        match self.shared.error.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The error the thread stopped on (reported once), or [`StoreError::WriterStopped`].
    fn failure(&self) -> StoreError {
        self.shared
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or(StoreError::WriterStopped)
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "the store writer stopped with an error");
        }
    }
}

fn run(store: &dyn Storage, rx: &Receiver<Job>, shared: &Shared) {
    if let Err(error) = write_loop(store, rx, shared) {
        tracing::error!(%error, "the background store writer failed");
        *shared.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }
}

fn write_loop(store: &dyn Storage, rx: &Receiver<Job>, shared: &Shared) -> Result<(), StoreError> {
    // Written but not yet known durable.
    let mut dirty = false;
    let mut last_sync = Instant::now();
    // When the last transaction began, and whether the jobs since the one before came at the
    // busy rate.
    let (mut last_write, mut busy) = (Instant::now(), false);
    loop {
        let first = if dirty {
            match rx.recv_timeout(SYNC_IDLE) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    store.sync()?;
                    dirty = false;
                    last_sync = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        if matches!(first, Job::Write(_)) {
            std::thread::sleep(if busy { COALESCE_BUSY } else { COALESCE });
        }
        let mut batch = WriteBatch::default();
        let mut waiters = Vec::new();
        let mut next = Some(first);
        let mut merged = 0;
        while let Some(job) = next.take() {
            match job {
                Job::Write(b) => batch.append(*b),
                Job::Barrier(done) => waiters.push(done),
            }
            merged += 1;
            if merged < MAX_MERGE {
                next = rx.try_recv().ok();
            }
        }
        // Half the rate keeps a busy writer busy: a window flipping between the two lengths
        // would cost the long one's savings.
        let rate = if busy { BUSY_JOBS_PER_SECOND / 2.0 } else { BUSY_JOBS_PER_SECOND };
        busy = merged as f64 >= rate * last_write.elapsed().as_secs_f64();
        last_write = Instant::now();
        let durable = !waiters.is_empty() || last_sync.elapsed() >= SYNC_EVERY;
        if durable {
            if batch.is_empty() {
                store.sync()?;
            } else {
                store.write(&batch)?;
            }
            dirty = false;
            last_sync = Instant::now();
        } else {
            store.write_deferred(&batch)?;
            dirty = true;
        }
        if let Some(tip) = batch.tip() {
            shared.applied.fetch_max(tip.height.0, Ordering::AcqRel);
            shared.unwritten.written(tip.height);
        }
        for done in waiters {
            // The waiter may have given up; nothing to do then.
            let _ = done.send(());
        }
    }
    if dirty {
        store.sync()?;
    }
    Ok(())
}
