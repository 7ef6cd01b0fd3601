//! Snapshot sync in the simulator: the serving side, a faithful model of the std driver's
//! `snapshot::Server` (which builds snapshots on a thread of its own and keeps them by wall
//! clock, so it cannot run under the virtual clock), and the Byzantine server's distortions.
//! The fetching side is not modelled: every node runs the driver's own
//! [`hotstuff_driver_std::snapshot::Client`] over a [`RedbStore::in_memory`] staging store (see
//! [`crate::sim`]).
//!
//! What the model keeps from the driver: snapshots are taken of the committed state at every
//! multiple of the interval (here exactly at the height, as every node then offers the same
//! heights); a snapshot is certified by the first committed block with a payload above its
//! height, the blocks between being empty and that block in the view after its parent and
//! carrying the snapshot's root ([`App::snapshot_root`](hotstuff_driver_std::App::snapshot_root),
//! the kv app's [`StateCommitted`](hotstuff_driver_std::kv::certified::StateCommitted) root);
//! an offer is the newest certified snapshot; chunks are cut by key-hash prefix and proved
//! with the real [`StateTree::prove_chunk`]; a chunk over the size limit is answered
//! `too_large`. What it drops: the build thread and the one-minute keep rule (the newest and
//! the newest certified snapshot are kept, and the two before them); snapshots are lost when
//! the node crashes, as the driver's in-memory ones are.

use hotstuff_core::message::MAX_CHUNK_ENTRIES;
use hotstuff_core::{
    Block, BlockHash, ChunkSibling, CommittedTip, EpochProof, Height, Message, QuorumCertificate,
    SnapshotCertificate, SnapshotChunk, SnapshotOffer,
};
use hotstuff_driver_std::kv::commitment::{Hash, StateTree};
use hotstuff_driver_std::kv::snapshot::{chunk_range, MAX_CHUNK_DEPTH};
use hotstuff_driver_std::snapshot::MAX_CHUNK_BYTES;
use rand::Rng;
use std::collections::BTreeMap;

/// The committed chain a node keeps: height -> (block, its QC, epoch proof).
pub(crate) type Chain = BTreeMap<u64, (Block, QuorumCertificate, Option<EpochProof>)>;

/// A snapshot a node took.
pub(crate) struct Checkpoint {
    tip: CommittedTip,
    /// `(blake3(key), key, value)`, sorted by key hash.
    entries: Vec<(Hash, Vec<u8>, Vec<u8>)>,
    tree: StateTree,
    bytes: u64,
    cert: Option<SnapshotCertificate>,
    /// No block can certify it.
    never: bool,
}

/// A node's serving side.
#[derive(Default)]
pub(crate) struct SnapServer {
    ready: Vec<Checkpoint>,
}

/// How many snapshots a server keeps.
const KEPT: usize = 4;
/// How many committed blocks above a snapshot are searched for its certifying block.
const CERT_SEARCH: u64 = 256;

impl SnapServer {
    /// Takes a snapshot of `state`, the committed state after `tip`.
    pub(crate) fn take(&mut self, tip: CommittedTip, state: &BTreeMap<Vec<u8>, Vec<u8>>) {
        let mut bytes = 0u64;
        let mut entries: Vec<(Hash, Vec<u8>, Vec<u8>)> = state
            .iter()
            .map(|(k, v)| {
                bytes += (k.len() + v.len()) as u64;
                (*blake3::hash(k).as_bytes(), k.clone(), v.clone())
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.0);
        let tree = StateTree::from_entries(entries.iter().map(|(_, k, v)| (&k[..], &v[..])));
        self.ready.push(Checkpoint { tip, entries, tree, bytes, cert: None, never: false });
        self.trim();
    }

    /// Looks for the block certifying each uncertified snapshot (the driver's `certify`).
    pub(crate) fn poll(&mut self, chain: &Chain, root_of: &dyn Fn(&Block) -> Option<Hash>) {
        for c in self.ready.iter_mut().filter(|c| c.cert.is_none() && !c.never) {
            match certify(c, chain, root_of) {
                Some(Some(cert)) => c.cert = Some(cert),
                Some(None) => c.never = true,
                None => {}
            }
        }
        self.ready.retain(|c| !c.never);
        self.trim();
    }

    fn trim(&mut self) {
        let newest_certified = self.ready.iter().rposition(|c| c.cert.is_some());
        while self.ready.len() > KEPT {
            let drop = (0..self.ready.len()).find(|i| Some(*i) != newest_certified).unwrap_or(0);
            self.ready.remove(drop);
        }
    }

    /// The newest certified snapshot (`stale`: the oldest).
    pub(crate) fn offer(&self, id: u64, stale: bool) -> Message {
        let mut certified = self.ready.iter().filter_map(|c| c.cert.clone());
        let snapshot = if stale { certified.next() } else { certified.next_back() };
        Message::SnapshotOffer(SnapshotOffer { id, snapshot })
    }

    /// Answers a chunk request as the driver's server does (`None`: no such chunk, dropped).
    /// `state_of`: serve the entries and proof of the snapshot at that height instead (a
    /// Byzantine server serving another state than the one asked for).
    pub(crate) fn chunk(
        &self,
        id: u64,
        height: Height,
        depth: u8,
        index: u32,
        state_of: Option<Height>,
    ) -> Option<SnapshotChunk> {
        if depth > MAX_CHUNK_DEPTH || (depth < 32 && u64::from(index) >> depth != 0) {
            return None;
        }
        let mut answer = SnapshotChunk {
            id,
            height,
            depth,
            index,
            too_large: false,
            available: false,
            entries: Vec::new(),
            proof: Vec::new(),
        };
        let source = state_of.unwrap_or(height);
        let Some(c) = self.ready.iter().find(|c| c.cert.as_ref().is_some_and(|s| s.tip.height == source))
        else {
            return Some(answer);
        };
        answer.available = true;
        let slice = c.entries.get(chunk_range(&c.entries, |(h, _, _)| h, depth, index)).unwrap_or(&[]);
        let bytes: usize = slice.iter().map(|(_, k, v)| k.len() + v.len()).sum();
        if (bytes > MAX_CHUNK_BYTES || slice.len() > MAX_CHUNK_ENTRIES) && depth < MAX_CHUNK_DEPTH {
            answer.too_large = true;
            return Some(answer);
        }
        answer.entries = slice.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect();
        answer.proof = c.tree.prove_chunk(depth, index).into_iter().map(Into::into).collect();
        Some(answer)
    }

    /// Heights of the certified snapshots, oldest first.
    pub(crate) fn certified_heights(&self) -> Vec<Height> {
        self.ready.iter().filter_map(|c| c.cert.as_ref().map(|s| s.tip.height)).collect()
    }

    /// Forgets every snapshot (a crash: they live in memory).
    pub(crate) fn clear(&mut self) {
        self.ready.clear();
    }
}

/// `Some(Some(cert))`: certified; `Some(None)`: never; `None`: not yet.
fn certify(
    c: &Checkpoint,
    chain: &Chain,
    root_of: &dyn Fn(&Block) -> Option<Hash>,
) -> Option<Option<SnapshotCertificate>> {
    let Some((mut parent, _, _)) = chain.get(&c.tip.height.0).cloned() else { return Some(None) };
    if parent.hash() != c.tip.hash {
        return Some(None);
    }
    let root = c.tree.root();
    for h in c.tip.height.0 + 1..=c.tip.height.0 + CERT_SEARCH {
        let (block, qc, _) = chain.get(&h)?;
        if block.parent() != parent.hash() {
            return Some(None);
        }
        if block.payload.is_empty() {
            parent = block.clone();
            continue;
        }
        if block.view != parent.view.next() || root_of(block) != Some(root) || qc.block != block.hash() {
            return Some(None);
        }
        return Some(Some(SnapshotCertificate {
            tip: parent,
            cert: block.clone(),
            qc: qc.clone(),
            entries: c.entries.len() as u64,
            bytes: c.bytes,
        }));
    }
    Some(None)
}

/// What a Byzantine snapshot server does with an offer request (`None`: no answer).
pub(crate) fn bad_offer(rng: &mut impl Rng, server: &SnapServer, id: u64) -> (Option<Message>, &'static str) {
    match rng.gen_range(0..5) {
        0 => (Some(server.offer(id, false)), "honest offer"),
        1 => (None, "silent"),
        2 => (Some(Message::SnapshotOffer(SnapshotOffer { id, snapshot: None })), "offers none"),
        3 => {
            // A forged root: the certifying block altered (its QC no longer matches it).
            let Message::SnapshotOffer(mut o) = server.offer(id, false) else { return (None, "silent") };
            if let Some(s) = &mut o.snapshot {
                if let Some(b) = s.cert.payload.first_mut() {
                    *b ^= 1;
                } else {
                    s.cert.payload.push(1);
                }
            }
            (Some(Message::SnapshotOffer(o)), "forged root")
        }
        _ => (Some(server.offer(id, true)), "stale offer"),
    }
}

/// What a Byzantine snapshot server does with a chunk request (`None`: no answer).
pub(crate) fn bad_chunk(
    rng: &mut impl Rng,
    server: &SnapServer,
    id: u64,
    (height, depth, index): (Height, u8, u32),
) -> (Option<SnapshotChunk>, &'static str) {
    let honest = server.chunk(id, height, depth, index, None);
    let Some(mut c) = honest else { return (None, "silent") };
    if !c.available {
        return (Some(c), "has none");
    }
    match rng.gen_range(0..10) {
        0 => (Some(c), "honest chunk"),
        1 => (None, "silent"),
        2 => {
            // A wrong value (or an invented entry in an empty chunk).
            match c.entries.first_mut() {
                Some((_, v)) => v.push(0xee),
                None => c.entries.push((invent_key(depth, index), b"forged".to_vec())),
            }
            (Some(c), "wrong value")
        }
        3 => {
            // Truncated: an entry dropped (or, with none, a sibling).
            if c.entries.pop().is_none() {
                c.proof.pop();
            }
            (Some(c), "truncated")
        }
        4 => {
            match c.proof.first_mut() {
                Some(s) => *s = ChunkSibling::Inner([7; 32]),
                None => c.entries.push((invent_key(depth, index), b"forged".to_vec())),
            }
            (Some(c), "wrong proof")
        }
        5 => {
            // The chunk of an older snapshot: a correct proof against another root.
            let older = server.certified_heights().into_iter().find(|h| *h != height);
            match older.and_then(|h| server.chunk(id, height, depth, index, Some(h))) {
                Some(o) => (Some(o), "another snapshot's chunk"),
                None => {
                    c.index ^= 1;
                    (Some(c), "another chunk")
                }
            }
        }
        6 => {
            c.height = Height(c.height.0.saturating_sub(1));
            (Some(c), "another height")
        }
        7 => {
            // Oversized: claims too large and sends entries anyway.
            c.too_large = true;
            if c.entries.is_empty() {
                c.entries.push((invent_key(depth, index), Vec::new()));
            }
            (Some(c), "too large with entries")
        }
        8 => {
            // Over the chunk size limit (the frame limit, 64 MiB, lets it through).
            c.entries.push((invent_key(depth, index), vec![0; MAX_CHUNK_BYTES + 1]));
            (Some(c), "oversized")
        }
        _ => {
            c.available = false;
            c.entries.clear();
            c.proof.clear();
            (Some(c), "claims it has no longer")
        }
    }
}

/// A key that falls in chunk `index` at `depth`.
fn invent_key(depth: u8, index: u32) -> Vec<u8> {
    (0u32..)
        .map(|i| format!("forged/{i}").into_bytes())
        .find(|k| hotstuff_driver_std::kv::snapshot::chunk_of(k, depth) == index)
        .unwrap_or_default()
}

/// A digest of a whole app state (the oracle compares replicas' states by it).
pub(crate) fn state_digest(state: &BTreeMap<Vec<u8>, Vec<u8>>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for (k, v) in state {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k);
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    }
    *h.finalize().as_bytes()
}

/// A placeholder for heights a node adopted with a snapshot but no committed block of is known.
pub(crate) const UNKNOWN: BlockHash = BlockHash([0; 32]);
