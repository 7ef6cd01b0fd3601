//! The node: a replica, its app, store and network, run on std threads.

mod builder;
pub mod engine;
mod run;

pub use builder::{BuildError, NodeBuilder, Prepared};

use crate::error::StoreError;
use crate::net::CoreMsg;
use crate::storage::{CommittedEntry, Storage, Unwritten};
use hotstuff_core::{CommittedTip, Height, PublicKey, ValidatorSet, View};
use std::net::SocketAddr;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why a node stopped running.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store failed; the node stopped rather than run without durability.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The consensus thread panicked (a bug).
    #[error("the consensus thread panicked")]
    Panicked,
}

/// A snapshot of the replica's progress, updated after every input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The current view.
    pub view: View,
    /// The leader of the current view.
    pub leader: PublicKey,
    /// The committed height.
    pub committed: Height,
    /// The view of the highest QC.
    pub high_qc: View,
    /// False once the consensus loop has ended.
    pub running: bool,
}

/// What every node handle offers, whatever runs it (std threads here, tokio tasks in
/// `hotstuff-driver-tokio`): its key, address, committed state and progress. A node derefs to
/// it.
pub struct NodeInfo {
    id: PublicKey,
    reader: Reader,
    status: Arc<Mutex<Status>>,
    local_addr: Option<SocketAddr>,
}

impl NodeInfo {
    /// The handle of a node with key `id`, whose committed state `reader` reads and whose loop
    /// publishes `status`.
    #[must_use]
    pub fn new(
        id: PublicKey,
        reader: Reader,
        status: Arc<Mutex<Status>>,
        local_addr: Option<SocketAddr>,
    ) -> Self {
        NodeInfo { id, reader, status, local_addr }
    }

    /// This node's key.
    #[must_use]
    pub fn id(&self) -> PublicKey {
        self.id
    }

    /// The address the network listens on, if it does.
    #[must_use]
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// A read handle on the committed state (clonable, any thread).
    #[must_use]
    pub fn reader(&self) -> Reader {
        self.reader.clone()
    }

    /// The replica's progress.
    #[must_use]
    pub fn status(&self) -> Status {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A function returning the replica's progress, for other threads.
    pub fn status_handle(&self) -> impl Fn() -> Status + Send + Sync + 'static {
        let status = self.status.clone();
        move || *status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running replica. Dropping it shuts it down. Its key, address, reader and status are
/// those of its [`NodeInfo`] (it derefs to it).
pub struct Node {
    info: NodeInfo,
    tx: SyncSender<CoreMsg>,
    core: Option<JoinHandle<Result<(), NodeError>>>,
}

impl std::ops::Deref for Node {
    type Target = NodeInfo;

    fn deref(&self) -> &NodeInfo {
        &self.info
    }
}

/// Wakes a node's leader that waits out its idle delay (see
/// [`crate::NodeBuilder::idle_block_delay`]): call it when the app gets something to propose.
/// Cheap, never blocks, any thread.
#[derive(Clone)]
pub struct Waker(SyncSender<CoreMsg>);

impl Waker {
    /// Asks the node to call its app's `produce_block` again at once if it is waiting to
    /// propose an empty block. Dropped if the inbox is full (the node is busy then anyway).
    pub fn wake(&self) {
        let _ = self.0.try_send(CoreMsg::Wake);
    }
}

impl Node {
    /// A [`Waker`] for this node.
    #[must_use]
    pub fn waker(&self) -> Waker {
        Waker(self.tx.clone())
    }

    /// Stops the consensus loop and the network and joins every thread. Returns the error the
    /// loop stopped on, if it stopped on its own.
    pub fn shutdown(mut self) -> Result<Duration, NodeError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<Duration, NodeError> {
        let started = Instant::now();
        let Some(core) = self.core.take() else { return Ok(Duration::ZERO) };
        // Fails only if the loop already ended.
        let _ = self.tx.send(CoreMsg::Shutdown);
        let result = core.join().map_err(|_| NodeError::Panicked)?;
        let took = started.elapsed();
        tracing::info!(node = %self.info.id, ?took, "node stopped");
        result.map(|()| took)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(node = %self.info.id, error = %e, "node stopped with an error");
        }
    }
}

/// Longest a [`Reader::app_state_digest`] waits for the store to hold what the reader saw.
pub const DIGEST_WAIT: Duration = Duration::from_secs(2);

/// A read handle on a node's committed state: blocks by height, app state by key, the tip and
/// the validator set. Clonable and usable from any thread while the node runs.
///
/// A running node's reader sees a commit as soon as the consensus loop hands it to the
/// background store writer: it looks at the commits not yet written ([`Unwritten`]) before the
/// store.
#[derive(Clone)]
pub struct Reader {
    store: Arc<dyn Storage>,
    unwritten: Option<Arc<Unwritten>>,
}

impl Reader {
    /// A reader over `store` (for example a store opened while no node runs).
    #[must_use]
    pub fn new(store: Arc<dyn Storage>) -> Self {
        Reader { store, unwritten: None }
    }

    /// A reader over `store` and the commits a background writer has not yet written to it.
    #[must_use]
    pub fn with_unwritten(store: Arc<dyn Storage>, unwritten: Option<Arc<Unwritten>>) -> Self {
        Reader { store, unwritten }
    }

    /// The committed block at `height`, a certificate for it, and the epoch proof if it ended
    /// an epoch.
    pub fn block(&self, height: Height) -> Result<Option<CommittedEntry>, StoreError> {
        match self.unwritten.as_ref().and_then(|u| u.block(height)) {
            Some(entry) => Ok(Some(entry)),
            None => self.store.committed_block(height),
        }
    }

    /// The committed app state of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.unwritten.as_ref().and_then(|u| u.get(key)) {
            Some(value) => Ok(value),
            None => self.store.app_get(key),
        }
    }

    /// The committed app state of `key` and the tip it belongs to, as of one moment: the tip
    /// is read before and after the value, again while a commit came in between (a commit
    /// writes its app state and the tip in one transaction, and every commit moves the tip).
    pub fn get_with_tip(&self, key: &[u8]) -> Result<(CommittedTip, Option<Vec<u8>>), StoreError> {
        let mut before = self.tip()?;
        loop {
            let value = self.get(key)?;
            let after = self.tip()?;
            if after == before {
                return Ok((after, value));
            }
            before = after;
        }
    }

    /// The committed tip.
    pub fn tip(&self) -> Result<CommittedTip, StoreError> {
        if let Some(tip) = self.unwritten.as_ref().and_then(|u| u.tip()) {
            return Ok(tip);
        }
        Ok(self.store.tip()?.ok_or(StoreError::NotInitialised)?.0)
    }

    /// The validator set in force.
    pub fn validators(&self) -> Result<ValidatorSet, StoreError> {
        Ok(self.store.tip()?.ok_or(StoreError::NotInitialised)?.1)
    }

    /// A blake3 digest of the whole committed app state and the tip it belongs to, from one
    /// consistent snapshot of the store, taken once the store holds the commits this reader
    /// saw when called (the background writer's window, a few ms; after [`DIGEST_WAIT`] it
    /// takes the store as it is, with its own tip).
    pub fn app_state_digest(&self) -> Result<(CommittedTip, [u8; 32]), StoreError> {
        if let Some(seen) = self.unwritten.as_ref().and_then(|u| u.tip()) {
            let deadline = Instant::now() + DIGEST_WAIT;
            while self.store.tip()?.is_none_or(|(t, _)| t.height < seen.height) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let mut h = blake3::Hasher::new();
        let tip = self.store.scan_app_state(&mut |k, v| {
            h.update(&(k.len() as u64).to_le_bytes());
            h.update(k);
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v);
        })?;
        Ok((tip, *h.finalize().as_bytes()))
    }
}
