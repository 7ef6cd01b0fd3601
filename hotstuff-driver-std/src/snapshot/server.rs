//! The serving side: snapshots taken at multiples of the interval, built at once,
//! offered once certified, served chunk by chunk at a bounded rate ([`super::pacing`]).

use super::pacing::{Pacer, BURST_KIB, KIB_PER_SECOND};
use super::MAX_CHUNK_BYTES;
use crate::error::StoreError;
use crate::kv::commitment::{Hash, StateTree};
use crate::kv::snapshot::{chunk_of, chunk_of_hash, chunk_range, MAX_CHUNK_DEPTH};
use crate::storage::{AppStateView, Storage};
use hotstuff_core::message::MAX_CHUNK_ENTRIES;
use hotstuff_core::{
    Block, CommittedTip, Height, Message, PublicKey, SnapshotAsk, SnapshotCertificate, SnapshotChunk,
    SnapshotOffer, SnapshotRequest,
};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

/// A snapshot fetched from within this long is kept even when newer ones are built.
const KEEP_WHILE_USED: Duration = Duration::from_secs(60);
/// The most snapshots held in memory.
const MAX_KEPT: usize = 4;

/// How many committed blocks above a snapshot are searched for the block certifying its root.
const CERT_SEARCH: u64 = 256;

/// A built snapshot.
struct Checkpoint {
    tip: CommittedTip,
    /// `(blake3(key), key, value)`, sorted by key hash.
    entries: Vec<(Hash, Vec<u8>, Vec<u8>)>,
    tree: StateTree,
    bytes: u64,
    /// What certifies it, once found.
    cert: Option<SnapshotCertificate>,
    /// When a chunk of it was last asked for (a snapshot being fetched is kept).
    last_used: Option<Instant>,
    /// No block can certify it (the first block with a payload above it is not in the next
    /// view, or carries another root).
    never: bool,
}

/// Whether a snapshot is certified.
enum Certified {
    Yes(Box<SnapshotCertificate>),
    /// The blocks above it are not all committed (or written) yet.
    NotYet,
    Never,
}

pub(crate) struct Server {
    interval: u64,
    /// `committed height / interval` when the last view was taken.
    mark: u64,
    /// The newest view, not built yet.
    pending: Option<Box<dyn AppStateView>>,
    building: Option<Receiver<Result<Checkpoint, StoreError>>>,
    /// Built snapshots, oldest first (at most two).
    ready: Vec<Checkpoint>,
    /// Requests waiting to be answered.
    pacer: Pacer,
}

impl Server {
    pub(crate) fn new(interval: u64) -> Self {
        Server {
            interval,
            mark: 0,
            pending: None,
            building: None,
            ready: Vec::new(),
            pacer: Pacer::new(KIB_PER_SECOND, BURST_KIB),
        }
    }

    /// Whether the committed height crossed a multiple of the interval since the last view.
    pub(crate) fn due(&self, height: Height) -> bool {
        self.interval > 0 && height.0 / self.interval > self.mark
    }

    /// Whether [`Server::poll`] or [`Server::after_commit`] has work (they read the store).
    pub(crate) fn has_work(&self, height: Height) -> bool {
        self.due(height)
            || self.pending.is_some()
            || self.building.is_some()
            || self.ready.iter().any(|c| c.cert.is_none() && !c.never)
    }

    /// After a turn whose commits are all in the store (`height` the committed height): takes
    /// a view of the state if the height crossed a multiple of the interval.
    pub(crate) fn after_commit(&mut self, store: &dyn Storage, height: Height) -> Result<(), StoreError> {
        let mark = height.0 / self.interval.max(1);
        if self.interval == 0 || mark <= self.mark {
            return Ok(());
        }
        self.mark = mark;
        self.pending = store.app_state_view()?;
        Ok(())
    }

    /// A build finished? Starts the next one if a view waits.
    fn poll_build(&mut self) {
        if let Some(rx) = &self.building {
            match rx.try_recv() {
                Ok(Ok(c)) => {
                    tracing::info!(height = %c.tip.height, entries = c.entries.len(), "snapshot built");
                    self.ready.push(c);
                    self.trim();
                    self.building = None;
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "building a snapshot failed");
                    self.building = None;
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.building = None,
            }
        }
        if let Some(view) = self.pending.take() {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new().name("hotstuff-snapshot".into()).spawn(move || {
                let start = Instant::now();
                let built = build(view.as_ref());
                tracing::info!(height = %view.tip().height, took = ?start.elapsed(), "snapshot build ended");
                let _ = tx.send(built);
            });
            match spawned {
                Ok(_) => self.building = Some(rx),
                Err(error) => tracing::error!(%error, "cannot start a snapshot build"),
            }
        }
    }

    /// After every turn: starts building a view taken, takes in a finished build, and looks
    /// for the block certifying a built snapshot (while the blocks above it are still stored:
    /// `app_root` reads a block's root). Cheap when there is nothing to do.
    pub(crate) fn poll(&mut self, store: &dyn Storage, app_root: &dyn Fn(&Block) -> Option<Hash>) {
        self.poll_build();
        let Some(tip) = self.tip_hint(store) else { return };
        for c in self.ready.iter_mut().filter(|c| c.cert.is_none() && !c.never && tip > c.tip.height) {
            match certify(c, store, app_root) {
                Ok(Certified::Yes(cert)) => {
                    tracing::info!(height = %cert.tip.height, "snapshot certified; serving it");
                    c.cert = Some(*cert);
                }
                Ok(Certified::NotYet) => {}
                Ok(Certified::Never) => {
                    tracing::info!(height = %c.tip.height, "no block certifies this snapshot; dropping it");
                    c.never = true;
                }
                Err(error) => tracing::warn!(%error, "cannot read the blocks above a snapshot"),
            }
        }
        self.ready.retain(|c| !c.never);
        self.trim();
    }

    fn tip_hint(&self, store: &dyn Storage) -> Option<Height> {
        if self.ready.iter().all(|c| c.cert.is_some()) {
            return None;
        }
        store.tip().ok().flatten().map(|(t, _)| t.height)
    }

    /// Keeps the newest snapshot (certified or not), the newest certified one, and any
    /// fetched from in the last [`KEEP_WHILE_USED`] (at most [`MAX_KEPT`] in all).
    fn trim(&mut self) {
        let now = Instant::now();
        let newest_certified = self.ready.iter().rposition(|c| c.cert.is_some());
        let last = self.ready.len().saturating_sub(1);
        let mut i = 0;
        self.ready.retain(|c| {
            let keep = i == last
                || Some(i) == newest_certified
                || c.last_used.is_some_and(|t| now.saturating_duration_since(t) < KEEP_WHILE_USED);
            i += 1;
            keep
        });
        while self.ready.len() > MAX_KEPT {
            self.ready.remove(0);
        }
    }

    /// Queues a peer's request (see [`super::pacing`]); `false` if its queue was full.
    pub(crate) fn request(&mut self, from: PublicKey, r: SnapshotRequest) -> bool {
        self.pacer.push(from, r)
    }

    /// Answers the queued requests the budget covers now, in turn between peers.
    pub(crate) fn serve(&mut self, now: Instant) -> Vec<(PublicKey, Message)> {
        let mut answers = Vec::new();
        while let Some((peer, r)) = self.pacer.peek() {
            let answer = match r.ask {
                SnapshotAsk::Offer => Answer::Offer,
                SnapshotAsk::Chunk { height, depth, index } => self.locate(height, depth, index),
            };
            if !self.pacer.charge(now, peer, answer.kib(&self.ready)) {
                break;
            }
            if let Some(m) = self.answer(r, answer) {
                answers.push((peer, m));
            }
        }
        answers
    }

    /// When queued requests can next be served ([`Server::serve`]).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.pacer.deadline()
    }

    /// Requests dropped so far because their peer had too many queued.
    pub(crate) fn dropped(&self) -> u64 {
        self.pacer.dropped
    }

    /// What the answer to a chunk request is, without building it.
    fn locate(&self, height: Height, depth: u8, index: u32) -> Answer {
        if depth > MAX_CHUNK_DEPTH || (depth < 32 && u64::from(index) >> depth != 0) {
            return Answer::Invalid;
        }
        let Some(at) =
            self.ready.iter().position(|c| c.cert.as_ref().is_some_and(|s| s.tip.height == height))
        else {
            return Answer::Unavailable { height, depth, index };
        };
        let Some(c) = self.ready.get(at) else { return Answer::Unavailable { height, depth, index } };
        let range = chunk_range(&c.entries, |(h, _, _)| h, depth, index);
        let (start, end) = (range.start, range.end);
        let slice = c.entries.get(start..end).unwrap_or(&[]);
        let bytes: usize = slice.iter().map(|(_, k, v)| k.len() + v.len()).sum();
        let too_large =
            (bytes > MAX_CHUNK_BYTES || slice.len() > MAX_CHUNK_ENTRIES) && depth < MAX_CHUNK_DEPTH;
        Answer::Chunk { at, height, depth, index, start, end, bytes, too_large }
    }

    /// Builds the answer to `r` (`None`: a request for a chunk that cannot exist, dropped).
    fn answer(&mut self, r: SnapshotRequest, answer: Answer) -> Option<Message> {
        let empty = |height, depth, index| SnapshotChunk {
            id: r.id,
            height,
            depth,
            index,
            too_large: false,
            available: false,
            entries: Vec::new(),
            proof: Vec::new(),
        };
        match answer {
            Answer::Offer => {
                let snapshot = self.ready.iter().rev().find_map(|c| c.cert.clone());
                Some(Message::SnapshotOffer(SnapshotOffer { id: r.id, snapshot }))
            }
            Answer::Invalid => None,
            Answer::Unavailable { height, depth, index } => {
                Some(Message::SnapshotChunk(empty(height, depth, index)))
            }
            Answer::Chunk { at, height, depth, index, start, end, too_large, .. } => {
                let c = self.ready.get_mut(at)?;
                c.last_used = Some(Instant::now());
                let mut chunk = empty(height, depth, index);
                chunk.available = true;
                if too_large {
                    chunk.too_large = true;
                    return Some(Message::SnapshotChunk(chunk));
                }
                let slice = c.entries.get(start..end).unwrap_or(&[]);
                chunk.entries = slice.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect();
                chunk.proof = c.tree.prove_chunk(depth, index).into_iter().map(Into::into).collect();
                Some(Message::SnapshotChunk(chunk))
            }
        }
    }
}

/// The answer to a queued request, located but not built (its size is what it is charged).
enum Answer {
    Offer,
    Invalid,
    Unavailable {
        height: Height,
        depth: u8,
        index: u32,
    },
    Chunk {
        at: usize,
        height: Height,
        depth: u8,
        index: u32,
        start: usize,
        end: usize,
        bytes: usize,
        too_large: bool,
    },
}

impl Answer {
    /// The answer's size on the wire in KiB, rounded up (at least 1): an offer carries two
    /// blocks; a chunk its keys and values with a length prefix each (borsh: 4 bytes), and a
    /// proof sibling per level (a tag and up to 64 bytes). Charging the payload alone let a
    /// flood of chunks of small entries through about 5% over the budget.
    fn kib(&self, ready: &[Checkpoint]) -> u32 {
        const HEADER: usize = 128;
        let bytes = match self {
            Answer::Offer => ready
                .iter()
                .rev()
                .find_map(|c| c.cert.as_ref())
                .map_or(0, |s| s.tip.payload.len() + s.cert.payload.len() + 2 * HEADER),
            Answer::Chunk { bytes, start, end, depth, too_large: false, .. } => {
                bytes + 8 * (end - start) + 65 * usize::from(*depth)
            }
            _ => 0,
        };
        u32::try_from((bytes + HEADER).div_ceil(1024)).unwrap_or(u32::MAX).max(1)
    }
}

/// Reads a view whole: entries sorted by key hash, and their tree.
fn build(view: &dyn AppStateView) -> Result<Checkpoint, StoreError> {
    let mut entries = Vec::new();
    let mut bytes = 0u64;
    view.scan(&mut |k, v| {
        bytes += (k.len() + v.len()) as u64;
        entries.push((*blake3::hash(k).as_bytes(), k.to_vec(), v.to_vec()));
    })?;
    entries.sort_unstable_by_key(|e| e.0);
    debug_assert!(entries.iter().all(|(h, k, _)| chunk_of(k, 8) == chunk_of_hash(h, 8)));
    let tree =
        StateTree::from_hashed(entries.iter().map(|(h, _, v)| (*h, *blake3::hash(v).as_bytes())).collect());
    Ok(Checkpoint { tip: view.tip(), entries, tree, bytes, cert: None, last_used: None, never: false })
}

/// Finds the committed block that certifies `c`'s root: the first block with a payload above
/// its height, the blocks between being empty (they change no state), in the view after its
/// parent's (so that parent is committed by the two-chain rule) and carrying the snapshot's
/// root. `None` if it is not committed yet or the snapshot cannot be certified.
fn certify(
    c: &Checkpoint,
    store: &dyn Storage,
    app_root: &dyn Fn(&Block) -> Option<Hash>,
) -> Result<Certified, StoreError> {
    let Some((mut parent, _, _)) = store.committed_block(c.tip.height)? else { return Ok(Certified::Never) };
    if parent.hash() != c.tip.hash {
        return Ok(Certified::Never);
    }
    let root = c.tree.root();
    for h in c.tip.height.0 + 1..=c.tip.height.0 + CERT_SEARCH {
        let Some((block, qc, _)) = store.committed_block(Height(h))? else { return Ok(Certified::NotYet) };
        if block.parent() != parent.hash() {
            return Ok(Certified::Never);
        }
        if block.payload.is_empty() {
            parent = block;
            continue;
        }
        if block.view != parent.view.next() || app_root(&block) != Some(root) || qc.block != block.hash() {
            return Ok(Certified::Never);
        }
        return Ok(Certified::Yes(Box::new(SnapshotCertificate {
            tip: parent,
            cert: block,
            qc,
            entries: c.entries.len() as u64,
            bytes: c.bytes,
        })));
    }
    Ok(Certified::Never)
}
