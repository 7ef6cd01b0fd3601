//! The fetching side: offers, then chunks from every peer that offered the same snapshot,
//! each verified and staged, then the install (see the [module docs](super)).

use super::{CHUNK_TIMEOUT, MAX_CHUNK_BYTES, OFFER_WAIT, PER_SERVER, RETRY_AFTER, TARGET_CHUNK_BYTES};
use crate::error::StoreError;
use crate::kv::commitment::Hash;
use crate::kv::snapshot::{verify_chunk, MAX_CHUNK_DEPTH};
use crate::storage::{SnapshotInstall, Storage};
use borsh::BorshDeserialize;
use hotstuff_core::message::MAX_CHUNK_ENTRIES;
use hotstuff_core::{
    certificate::verify_qc, Block, CommittedTip, DefaultPacemaker, Height, Message, Pacemaker, PublicKey,
    Replica, SnapshotAsk, SnapshotCertificate, SnapshotChunk, SnapshotOffer, SnapshotRequest,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

/// What the client needs from the engine for one step.
///
/// Generic over the replica's pacemaker so that the deterministic simulator (`hotstuff-tests`,
/// whose replicas run a scripted pacemaker) drives this same client under its virtual clock.
pub struct Ctx<'a, P: Pacemaker = DefaultPacemaker> {
    /// The node's store: the client stages verified chunks in it (and reads what a crash left).
    pub store: &'a dyn Storage,
    /// The node's replica: its key, validator set, epoch, committed height and safety state.
    pub replica: &'a Replica<P>,
    /// The state root a block certifies ([`App::snapshot_root`](crate::App::snapshot_root)).
    pub app_root: &'a dyn Fn(&Block) -> Option<Hash>,
    /// The time now (a virtual one in the simulator: only differences are used).
    pub now: Instant,
}

/// What the engine must do after a step.
#[derive(Default)]
pub struct Out {
    /// Messages to send.
    pub send: Vec<(PublicKey, Message)>,
    /// Events for the handlers.
    pub events: Vec<crate::Event>,
    /// Every chunk is staged: install this (verified against this root).
    pub install: Option<([u8; 32], SnapshotInstall)>,
}

/// Counters of a fetch, for logs and tests.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FetchStats {
    pub chunks: u64,
    pub entries: u64,
    pub bytes: u64,
}

struct Fetch {
    target: SnapshotCertificate,
    root: Hash,
    servers: Vec<PublicKey>,
    avoided: BTreeSet<PublicKey>,
    strikes: BTreeMap<PublicKey, u32>,
    todo: VecDeque<(u8, u32)>,
    /// Requests out: id -> (server, chunk, sent at).
    out: BTreeMap<u64, (PublicKey, (u8, u32), Instant)>,
    rotation: usize,
    stats: FetchStats,
    started: Instant,
}

enum Phase {
    Idle,
    /// Paused until then (after a failure); a trigger meanwhile is ignored.
    Wait(Instant),
    Offers {
        id: u64,
        until: Instant,
        asked: usize,
        answered: BTreeSet<PublicKey>,
        offers: Vec<(PublicKey, SnapshotCertificate, Hash)>,
    },
    Fetch(Box<Fetch>),
}

/// The fetching side's state machine (see the [module docs](super)). A node's engine calls
/// [`Client::below_retained`] on a pruned block-sync answer, hands it every
/// [`Message::SnapshotOffer`] and [`Message::SnapshotChunk`], calls [`Client::tick`] at
/// [`Client::deadline`], and performs each [`Out`]: sends, events, and the install (one store
/// transaction, [`Storage::install_staged`], then a replica re-created from the store). Public
/// so that the deterministic simulator runs this code rather than a model of it.
pub struct Client {
    phase: Phase,
    next_id: u64,
    /// The highest `retained_from` a block-sync server reported: a snapshot below it would
    /// leave a gap block sync cannot fill.
    retained_hint: Height,
    /// A staged snapshot left by an earlier run: its target and staged chunks.
    staged: Option<(SnapshotCertificate, BTreeSet<(u8, u32)>)>,
}

impl Client {
    /// A client; picks up what an earlier run staged (and then starts at the first tick).
    pub fn new(store: &dyn Storage, now: Instant) -> Self {
        let staged = load_staged(store);
        let phase = if staged.is_some() { Phase::Wait(now) } else { Phase::Idle };
        if let Some((t, c)) = &staged {
            tracing::info!(height = %t.tip.height, chunks = c.len(), "a staged snapshot was found; resuming");
        }
        Client { phase, next_id: 0, retained_hint: Height(0), staged }
    }

    fn id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// When [`Client::tick`] is next due.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Idle => None,
            Phase::Wait(at) => Some(*at),
            Phase::Offers { until, .. } => Some(*until),
            Phase::Fetch(f) => f.out.values().map(|(_, _, at)| *at + CHUNK_TIMEOUT).min(),
        }
    }

    /// A block-sync server pruned the heights asked for.
    pub fn below_retained<P: Pacemaker>(&mut self, ctx: &Ctx<'_, P>, retained_from: Height, out: &mut Out) {
        self.retained_hint = self.retained_hint.max(retained_from);
        if matches!(self.phase, Phase::Idle) {
            self.ask_offers(ctx, out);
        }
    }

    fn ask_offers<P: Pacemaker>(&mut self, ctx: &Ctx<'_, P>, out: &mut Out) {
        let id = self.id();
        let me = ctx.replica.id();
        let peers: Vec<PublicKey> =
            ctx.replica.validators().members().iter().map(|v| v.key).filter(|k| *k != me).collect();
        for p in &peers {
            out.send.push((*p, Message::SnapshotRequest(SnapshotRequest { id, ask: SnapshotAsk::Offer })));
        }
        tracing::info!(peers = peers.len(), "asking for snapshot offers");
        self.phase = Phase::Offers {
            id,
            until: ctx.now + OFFER_WAIT,
            asked: peers.len(),
            answered: BTreeSet::new(),
            offers: Vec::new(),
        };
    }

    /// Checks an offer (see the [module docs](super)): the root it certifies, or why not.
    fn check_offer<P: Pacemaker>(
        &self,
        ctx: &Ctx<'_, P>,
        s: &SnapshotCertificate,
    ) -> Result<Hash, &'static str> {
        let r = ctx.replica;
        let epoch = r.epoch();
        if s.tip.epoch != epoch || s.cert.epoch != epoch || s.qc.epoch != epoch {
            return Err("snapshot of another epoch");
        }
        if s.cert.parent() != s.tip.hash() || s.cert.height.0 != s.tip.height.0.saturating_add(1) {
            return Err("certifying block is not the tip's child");
        }
        if s.cert.view != s.tip.view.next() {
            return Err("certifying block is not in the view after the tip's");
        }
        if s.qc.block != s.cert.hash() || s.qc.view != s.cert.view {
            return Err("QC is not for the certifying block");
        }
        if s.tip.height <= r.committed_height() {
            return Err("stale: at or below our committed height");
        }
        if s.tip.height.0.saturating_add(1) < self.retained_hint.0 {
            return Err("stale: below what block-sync servers retain");
        }
        let root = (ctx.app_root)(&s.cert).ok_or("certifying block carries no state root")?;
        verify_qc(&s.qc, r.config().chain, r.validators(), &r.genesis()).map_err(|_| "invalid QC")?;
        Ok(root)
    }

    /// An offer arrived.
    pub fn on_offer<P: Pacemaker>(
        &mut self,
        ctx: &Ctx<'_, P>,
        from: PublicKey,
        offer: SnapshotOffer,
        out: &mut Out,
    ) {
        let checked = offer.snapshot.as_ref().map(|s| self.check_offer(ctx, s));
        let Phase::Offers { id, answered, offers, asked, .. } = &mut self.phase else { return };
        if offer.id != *id || !answered.insert(from) {
            return;
        }
        match (offer.snapshot, checked) {
            (Some(s), Some(Ok(root))) => offers.push((from, s, root)),
            (Some(s), Some(Err(reason))) => {
                tracing::warn!(peer = %from, height = %s.tip.height, reason, "snapshot offer refused")
            }
            _ => tracing::debug!(peer = %from, "no snapshot offered"),
        }
        if answered.len() >= *asked {
            self.choose(ctx, out);
        }
    }

    /// Offers collected: pick the snapshot the most peers offer (the staged one first, then
    /// the highest), and start fetching it.
    fn choose<P: Pacemaker>(&mut self, ctx: &Ctx<'_, P>, out: &mut Out) {
        let Phase::Offers { offers, .. } = std::mem::replace(&mut self.phase, Phase::Idle) else { return };
        let mut groups: BTreeMap<[u8; 32], (SnapshotCertificate, Hash, Vec<PublicKey>)> = BTreeMap::new();
        for (peer, s, root) in offers {
            groups.entry(s.tip.hash().0).or_insert_with(|| (s, root, Vec::new())).2.push(peer);
        }
        let staged_hash = self.staged.as_ref().map(|(t, _)| t.tip.hash().0);
        let best = groups
            .into_iter()
            .max_by_key(|(h, (s, _, peers))| (Some(*h) == staged_hash, peers.len(), s.tip.height))
            .map(|(_, g)| g);
        let Some((target, root, servers)) = best else {
            tracing::info!("no usable snapshot offered; asking again later");
            self.phase = Phase::Wait(ctx.now + RETRY_AFTER);
            return;
        };
        let mut done = BTreeSet::new();
        let resume = self.staged.as_ref().is_some_and(|(t, _)| t.tip.hash() == target.tip.hash());
        if resume {
            if let Some((_, chunks)) = self.staged.take() {
                done = chunks;
            }
        } else if let Err(error) = ctx.store.stage_reset(Some(&borsh::to_vec(&target).unwrap_or_default())) {
            tracing::error!(%error, "cannot start staging a snapshot");
            self.phase = Phase::Wait(ctx.now + RETRY_AFTER);
            return;
        }
        self.staged = None;
        let depth = initial_depth(&target);
        let mut todo = VecDeque::new();
        cover(depth, 0, 0, &done, &mut todo);
        tracing::info!(
            height = %target.tip.height,
            servers = servers.len(),
            chunks = todo.len(),
            staged = done.len(),
            entries = target.entries,
            bytes = target.bytes,
            "fetching a snapshot"
        );
        self.phase = Phase::Fetch(Box::new(Fetch {
            target,
            root,
            servers,
            avoided: BTreeSet::new(),
            strikes: BTreeMap::new(),
            todo,
            out: BTreeMap::new(),
            rotation: 0,
            stats: FetchStats::default(),
            started: ctx.now,
        }));
        self.assign(ctx, out);
    }

    /// Hands out chunk requests; installs once everything is staged; asks for offers again if
    /// no server is left.
    fn assign<P: Pacemaker>(&mut self, ctx: &Ctx<'_, P>, out: &mut Out) {
        let Phase::Fetch(f) = &mut self.phase else { return };
        if f.todo.is_empty() && f.out.is_empty() {
            let install = install_of(ctx.replica, &f.target);
            tracing::info!(
                height = %f.target.tip.height,
                chunks = f.stats.chunks,
                entries = f.stats.entries,
                bytes = f.stats.bytes,
                took = ?ctx.now.saturating_duration_since(f.started),
                "snapshot fetched and verified; installing"
            );
            out.install = Some((f.root, install));
            self.phase = Phase::Idle;
            return;
        }
        let live: Vec<PublicKey> = f.servers.iter().filter(|s| !f.avoided.contains(s)).copied().collect();
        if live.is_empty() {
            tracing::warn!("no snapshot server left; asking for offers again");
            // What is staged stays: a later offer of the same snapshot resumes it.
            self.staged = load_staged(ctx.store);
            self.phase = Phase::Wait(ctx.now + RETRY_AFTER);
            return;
        }
        let mut idle_rounds = 0;
        while !f.todo.is_empty() && idle_rounds < live.len() {
            let server = live[f.rotation % live.len()];
            f.rotation = f.rotation.wrapping_add(1);
            let busy = f.out.values().filter(|(s, _, _)| *s == server).count();
            if busy >= PER_SERVER {
                idle_rounds += 1;
                continue;
            }
            idle_rounds = 0;
            let Some(chunk) = f.todo.pop_front() else { break };
            self.next_id = self.next_id.wrapping_add(1);
            let id = self.next_id;
            f.out.insert(id, (server, chunk, ctx.now));
            let ask = SnapshotAsk::Chunk { height: f.target.tip.height, depth: chunk.0, index: chunk.1 };
            out.send.push((server, Message::SnapshotRequest(SnapshotRequest { id, ask })));
        }
    }

    /// A chunk arrived. A bad one (see the [module docs](super)) avoids its server; its
    /// chunk goes back to the queue.
    pub fn on_chunk<P: Pacemaker>(
        &mut self,
        ctx: &Ctx<'_, P>,
        from: PublicKey,
        c: SnapshotChunk,
        out: &mut Out,
    ) {
        let Phase::Fetch(f) = &mut self.phase else { return };
        let Some((server, chunk, _)) = f.out.get(&c.id).copied() else { return };
        if server != from {
            return;
        }
        f.out.remove(&c.id);
        let verdict = check_chunk(f, chunk, &c);
        match verdict {
            Ok(Verdict::Gone) => {
                tracing::info!(peer = %from, "the server no longer has the snapshot");
                f.servers.retain(|s| *s != from);
                f.todo.push_front(chunk);
            }
            Ok(Verdict::Split) => {
                let (d, i) = chunk;
                f.todo.push_front((d + 1, i * 2 + 1));
                f.todo.push_front((d + 1, i * 2));
            }
            Ok(Verdict::Good) => match ctx.store.stage_chunk(chunk.0, chunk.1, &c.entries) {
                Ok(()) => {
                    tracing::info!(
                        depth = chunk.0,
                        index = chunk.1,
                        staged = f.stats.chunks + 1,
                        "snapshot chunk staged"
                    );
                    f.stats.chunks += 1;
                    f.stats.entries += c.entries.len() as u64;
                    f.stats.bytes += c.entries.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum::<u64>();
                }
                Err(error) => {
                    tracing::error!(%error, "cannot stage a snapshot chunk; giving up this fetch");
                    self.phase = Phase::Wait(ctx.now + RETRY_AFTER);
                    return;
                }
            },
            Err(reason) => {
                tracing::warn!(peer = %from, depth = chunk.0, index = chunk.1, reason, "bad snapshot chunk; avoiding the server");
                if f.avoided.insert(from) {
                    out.events.push(crate::Event::SnapshotPeerAvoided { peer: from, reason });
                }
                f.todo.push_front(chunk);
            }
        }
        self.assign(ctx, out);
    }

    /// Timers: the offer window closed, a pause ended, or chunk requests timed out.
    pub fn tick<P: Pacemaker>(&mut self, ctx: &Ctx<'_, P>, out: &mut Out) {
        match &mut self.phase {
            Phase::Idle => {}
            Phase::Wait(at) => {
                if *at <= ctx.now {
                    self.phase = Phase::Idle;
                    // Resume a staged snapshot at once; otherwise wait for the next trigger.
                    if self.staged.is_some() || self.retained_hint > ctx.replica.committed_height() {
                        self.ask_offers(ctx, out);
                    }
                }
            }
            Phase::Offers { until, .. } => {
                if *until <= ctx.now {
                    self.choose(ctx, out);
                }
            }
            Phase::Fetch(f) => {
                let late: Vec<u64> = f
                    .out
                    .iter()
                    .filter(|(_, (_, _, at))| *at + CHUNK_TIMEOUT <= ctx.now)
                    .map(|(id, _)| *id)
                    .collect();
                for id in late {
                    if let Some((server, chunk, _)) = f.out.remove(&id) {
                        f.todo.push_back(chunk);
                        let strikes = f.strikes.entry(server).or_insert(0);
                        *strikes += 1;
                        if *strikes >= 3 {
                            tracing::warn!(peer = %server, "snapshot server does not answer; avoiding it");
                            f.avoided.insert(server);
                            out.events.push(crate::Event::SnapshotPeerAvoided {
                                peer: server,
                                reason: "does not answer",
                            });
                        }
                    }
                }
                self.assign(ctx, out);
            }
        }
    }
}

enum Verdict {
    Good,
    Split,
    Gone,
}

fn check_chunk(f: &Fetch, (depth, index): (u8, u32), c: &SnapshotChunk) -> Result<Verdict, &'static str> {
    if c.height != f.target.tip.height || c.depth != depth || c.index != index {
        return Err("answers another chunk or height");
    }
    if !c.available {
        return Ok(Verdict::Gone);
    }
    if c.too_large {
        if depth >= MAX_CHUNK_DEPTH || !c.entries.is_empty() || !c.proof.is_empty() {
            return Err("claims a chunk too large at the deepest level");
        }
        return Ok(Verdict::Split);
    }
    let bytes: usize = c.entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_CHUNK_BYTES || c.entries.len() > MAX_CHUNK_ENTRIES {
        return Err("chunk over the size limit");
    }
    let proof: Vec<_> = c.proof.iter().copied().map(Into::into).collect();
    verify_chunk(&f.root, depth, index, &c.entries, &proof)
        .map_err(|_| "does not verify against the root")?;
    Ok(Verdict::Good)
}

/// The least depth: 16 chunks, so that even a small state is fetched from several peers.
const MIN_DEPTH: u8 = 4;

/// The depth giving about [`TARGET_CHUNK_BYTES`] per chunk for the offer's claimed size
/// (a claim only: a wrong one costs requests, never correctness).
fn initial_depth(s: &SnapshotCertificate) -> u8 {
    let by_bytes = s.bytes / TARGET_CHUNK_BYTES;
    let by_entries = s.entries / (MAX_CHUNK_ENTRIES as u64 / 2);
    let chunks = by_bytes.max(by_entries).max(1);
    let depth = 64 - (chunks - 1).leading_zeros().min(64);
    depth.clamp(u32::from(MIN_DEPTH), 16) as u8
}

/// The chunks of the subtree `(depth, index)` not yet staged: the subtree itself if neither it
/// nor any chunk below it is staged, else its two halves, recursively.
fn cover(depth: u8, at: u8, index: u32, done: &BTreeSet<(u8, u32)>, todo: &mut VecDeque<(u8, u32)>) {
    if done.contains(&(at, index)) {
        return;
    }
    let below = done
        .iter()
        .any(|(d, i)| *d > at && *d <= MAX_CHUNK_DEPTH && u64::from(*i) >> (d - at) == u64::from(index));
    if at >= depth && !below {
        todo.push_back((at, index));
        return;
    }
    if at >= MAX_CHUNK_DEPTH {
        todo.push_back((at, index));
        return;
    }
    cover(depth, at + 1, index * 2, done, todo);
    cover(depth, at + 1, index * 2 + 1, done, todo);
}

/// What installing `target` writes: its tip, certified by the certifying block's justify, and
/// the safety state raised to that QC (the votes and locks are unchanged).
fn install_of<P: Pacemaker>(replica: &Replica<P>, target: &SnapshotCertificate) -> SnapshotInstall {
    let tip = CommittedTip { hash: target.tip.hash(), view: target.tip.view, height: target.tip.height };
    let qc = target.cert.justify.clone();
    let mut safety = replica.safety().clone();
    if qc.view > safety.high_qc.view {
        safety.view = safety.view.max(qc.view.next());
        safety.high_qc = qc.clone();
    }
    SnapshotInstall { tip, block: target.tip.clone(), qc, safety }
}

/// The staged target and chunks, if any.
fn load_staged(store: &dyn Storage) -> Option<(SnapshotCertificate, BTreeSet<(u8, u32)>)> {
    match store.staged() {
        Ok(Some((target, chunks))) => {
            SnapshotCertificate::try_from_slice(&target).ok().map(|t| (t, chunks.into_iter().collect()))
        }
        Ok(None) => None,
        Err(error) => {
            tracing::error!(%error, "cannot read the snapshot staging area");
            None
        }
    }
}

/// Reads the store's staged target, if any (for tests and tools).
pub fn staged_height(store: &dyn Storage) -> Result<Option<Height>, StoreError> {
    Ok(store.staged()?.and_then(|(t, _)| SnapshotCertificate::try_from_slice(&t).ok()).map(|t| t.tip.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunks left to fetch and the chunks staged tile the key space exactly: every key
    /// hash prefix of 32 bits falls in exactly one of them.
    #[test]
    fn what_is_left_and_what_is_staged_tile_the_key_space() {
        let staged_sets: [&[(u8, u32)]; 4] =
            [&[], &[(4, 0), (4, 15)], &[(4, 3), (5, 8), (6, 36), (6, 37)], &[(6, 1), (7, 100), (4, 9)]];
        for staged in staged_sets {
            let done: BTreeSet<(u8, u32)> = staged.iter().copied().collect();
            let mut todo = VecDeque::new();
            cover(4, 0, 0, &done, &mut todo);
            assert!(todo.iter().all(|c| !done.contains(c)));
            let all: Vec<(u8, u32)> = todo.iter().copied().chain(done.iter().copied()).collect();
            // Sample prefixes across the space (and the edges of every chunk).
            let mut samples: Vec<u32> = (0..4096u32).map(|i| i << 20).collect();
            for (d, i) in &all {
                let lo = if *d == 0 { 0 } else { i << (32 - u32::from(*d)) };
                samples.push(lo);
                samples.push(lo.wrapping_sub(1));
            }
            for p in samples {
                let holders =
                    all.iter().filter(|(d, i)| *d == 0 || (p >> (32 - u32::from(*d))) == *i).count();
                assert_eq!(holders, 1, "prefix {p:#010x} is in {holders} chunks; staged {staged:?}");
            }
        }
    }

    #[test]
    fn the_first_depth_follows_the_claimed_size_within_bounds() {
        let qc = hotstuff_core::QuorumCertificate::genesis(hotstuff_core::BlockHash([0; 32]));
        let block = Block {
            epoch: hotstuff_core::Epoch(0),
            view: hotstuff_core::View(1),
            height: Height(1),
            justify: qc.clone(),
            proposer: hotstuff_core::PublicKey([0; 32]),
            payload: Vec::new(),
        };
        let s = |entries: u64, bytes: u64| SnapshotCertificate {
            tip: block.clone(),
            cert: block.clone(),
            qc: qc.clone(),
            entries,
            bytes,
        };
        assert_eq!(initial_depth(&s(10, 100)), MIN_DEPTH);
        assert_eq!(initial_depth(&s(1_000_000, 41 << 20)), 6);
        assert_eq!(initial_depth(&s(u64::MAX, u64::MAX)), 16);
    }
}
