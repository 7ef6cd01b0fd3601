//! Bounded storage: how many committed blocks a store keeps ([`RetainBlocks`]) and the
//! background [`Pruner`] that drops older ones in small batches.
//!
//! What is pruned: committed blocks (with their certificates) below `tip - retain`, oldest
//! first, except the last block of every epoch, which is kept with its epoch proof (they are
//! small, one per validator-set change, and let a node check every set change from genesis).
//! What is never pruned: the committed app state, the committed tip and epoch, the safety state
//! and uncommitted blocks. Restarting needs none of what is pruned: a replica recovers from the
//! tip, the epoch and the committed blocks of the last
//! [`hotstuff_core::LeaderHistory::KEEP_VIEWS`] views (leader reputation), so the retention is
//! at least [`MIN_RETAIN_BLOCKS`] (257).
//!
//! A peer asking block sync for a height below the retained range gets a
//! [`hotstuff_core::message::SyncPruned`] answer naming the lowest height kept, and asks
//! another peer.
//!
//! Why a thread of its own, in batches: redb runs one write transaction at a time, so a
//! transaction that deleted a whole backlog (a node switched from archive to a retention
//! window) would hold up the consensus loop's next write for its whole length. Each batch is
//! one short transaction of at most [`PRUNE_BATCH`] deletions, made durable with the next
//! consensus write (a crash loses at most the last batches, which the next run prunes again:
//! pruning is idempotent and never touches what safety or recovery reads).

use super::Storage;
use crate::error::StoreError;
use hotstuff_core::Height;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The least retention allowed: a restarting replica reads the committed blocks of the last
/// [`hotstuff_core::LeaderHistory::KEEP_VIEWS`] views below its tip, the tip included, for
/// leader reputation (which every replica must compute from the same blocks), so they must be
/// there.
pub const MIN_RETAIN_BLOCKS: u64 = hotstuff_core::LeaderHistory::KEEP_VIEWS + 1;

/// Most committed blocks deleted in one store transaction.
pub const PRUNE_BATCH: usize = 256;

/// How many committed blocks a store keeps for block sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetainBlocks {
    /// Keep every committed block (the default).
    #[default]
    Archive,
    /// Keep the last `n` committed blocks (and every epoch's last block with its proof);
    /// `n` is at least [`MIN_RETAIN_BLOCKS`].
    Last(u64),
}

impl RetainBlocks {
    /// The lowest height to keep when the committed tip is at `tip` (`None`: keep all).
    #[must_use]
    pub fn keep_from(self, tip: Height) -> Option<Height> {
        match self {
            RetainBlocks::Archive => None,
            RetainBlocks::Last(n) => Some(Height(tip.0.saturating_sub(n).saturating_add(1).max(1))),
        }
    }

    /// Checks the setting: `Last(n)` needs `n >= MIN_RETAIN_BLOCKS`.
    pub fn check(self) -> Result<(), String> {
        match self {
            RetainBlocks::Last(n) if n < MIN_RETAIN_BLOCKS => Err(format!(
                "must keep at least {MIN_RETAIN_BLOCKS} blocks (leader reputation reads them), not {n}"
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for RetainBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetainBlocks::Archive => f.write_str("archive"),
            RetainBlocks::Last(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for RetainBlocks {
    type Err = String;

    /// `archive`, or a number of blocks (at least [`MIN_RETAIN_BLOCKS`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("archive") {
            return Ok(RetainBlocks::Archive);
        }
        let n: u64 = s.parse().map_err(|_| format!("`{s}` is neither `archive` nor a number of blocks"))?;
        let r = RetainBlocks::Last(n);
        r.check()?;
        Ok(r)
    }
}

/// A background thread that keeps a store within its [`RetainBlocks`]: every `period` it reads
/// the committed tip and, while the store holds blocks below the window, deletes them in
/// batches of [`PRUNE_BATCH`] with a short pause between batches (so the consensus loop's
/// writes interleave). Dropping it stops and joins the thread.
pub struct Pruner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Pruner {
    /// Starts pruning `store` to `retain` (which must be `Last`; `Archive` starts nothing and
    /// returns `None`).
    pub fn start(
        store: Arc<dyn Storage>,
        retain: RetainBlocks,
        period: Duration,
    ) -> std::io::Result<Option<Pruner>> {
        if retain == RetainBlocks::Archive {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hotstuff-pruner".into())
            .spawn(move || run(store.as_ref(), retain, period, &flag))?;
        Ok(Some(Pruner { stop, thread: Some(thread) }))
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl fmt::Debug for Pruner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pruner").finish_non_exhaustive()
    }
}

/// The pause between two batches of a backlog.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

fn run(store: &dyn Storage, retain: RetainBlocks, period: Duration, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match prune_step(store, retain, PRUNE_BATCH) {
            Ok(true) => std::thread::park_timeout(BATCH_PAUSE),
            Ok(false) => std::thread::park_timeout(period),
            Err(error) => {
                // A failing store stops the consensus loop too; here it only waits.
                tracing::error!(%error, "pruning the store failed");
                std::thread::park_timeout(period.max(Duration::from_secs(1)));
            }
        }
    }
}

/// Deletes one batch of at most `batch` committed blocks below `retain`'s window. Returns
/// whether more remain to delete.
pub fn prune_step(store: &dyn Storage, retain: RetainBlocks, batch: usize) -> Result<bool, StoreError> {
    let Some((tip, _)) = store.tip()? else { return Ok(false) };
    let Some(keep_from) = retain.keep_from(tip.height) else { return Ok(false) };
    let from = store.retained_from()?;
    if from >= keep_from {
        return Ok(false);
    }
    let now = store.prune(keep_from, batch)?;
    Ok(now > from && now < keep_from)
}
