//! Inputs: block-sync requests and responses. Also the server-side response builder.
//!
//! A replica that sees a certificate for a block it does not have (a proposal whose parent is
//! unknown, a QC or TC from a vote, timeout or proposal) asks one peer at a time for the
//! certified blocks above its committed height. A response is checked as a whole (blocks chain
//! from a known block, heights and views consistent, every QC verified) before anything is
//! taken in; the blocks then go through the same commit rule and app validation (`for_sync`) as
//! proposals. If the peer does not answer within a view timeout, the next peer is asked.

use super::Replica;
use crate::action::{Action, EpochProof, SyncTimer};
use crate::block::Block;
use crate::block_tree::Validity;
use crate::certificate::QuorumCertificate;
use crate::error::InputError;
use crate::event::Event;
use crate::message::{Message, SyncPruned, SyncRequest, SyncResponse};
use crate::pacemaker::Pacemaker;
use crate::types::{BlockHash, Height, PublicKey, View};
use alloc::vec::Vec;

/// What checking a sync response yields: the blocks' hashes and the digests of their QCs (each
/// block's justify, then the response's certificate).
struct CheckedSync {
    hashes: Vec<BlockHash>,
    digests: Vec<BlockHash>,
}

impl<P: Pacemaker> Replica<P> {
    /// Whether the replica knows of a certified block it does not have.
    pub(super) fn needs_sync(&self) -> bool {
        let qc = &self.safety.high_qc;
        qc.view > self.tree.root().view && !self.tree.contains(&qc.block)
    }

    /// Asks `preferred` (or the next peer in rotation) for blocks, unless a request is out.
    /// Avoided peers are skipped until their avoidance expires.
    pub(super) fn request_sync(&mut self, preferred: Option<PublicKey>) {
        if self.sync_peer.is_some() {
            return;
        }
        let me = self.key.public();
        let peer = match preferred.filter(|p| *p != me && !self.avoided.contains_key(p)) {
            Some(p) => p,
            None => {
                let others = self.epoch.validators.members().iter().map(|v| v.key).filter(|k| *k != me);
                let mut peers: Vec<PublicKey> =
                    others.clone().filter(|k| !self.avoided.contains_key(k)).collect();
                if peers.is_empty() {
                    // Every peer is avoided: asking one of them beats not syncing at all.
                    peers = others.collect();
                }
                if peers.is_empty() {
                    return;
                }
                let i = (self.sync_rotation % peers.len() as u64) as usize;
                self.sync_rotation = self.sync_rotation.wrapping_add(1);
                match peers.get(i) {
                    Some(p) => *p,
                    None => return,
                }
            }
        };
        let from_height = Height(self.tree.root().height.0.saturating_add(1));
        let max_blocks = u32::try_from(self.config.limits.max_sync_blocks).unwrap_or(u32::MAX);
        self.sync_request_id = self.sync_request_id.wrapping_add(1);
        let id = self.sync_request_id;
        self.sync_peer = Some((peer, id));
        self.emit(Action::Event(Event::SyncRequested { peer, from_height }));
        self.emit(Action::Send {
            to: peer,
            message: Message::SyncRequest(SyncRequest { id, from_height, max_blocks }),
        });
    }

    /// After a failed response: ask a peer not yet avoided, if there is one. Once every peer is
    /// avoided, the timers retry (view timer, no-progress timer, avoidance expiry), so bad or
    /// empty responses can never drive a request loop at network speed.
    fn retry_elsewhere(&mut self) {
        let me = self.key.public();
        let any =
            self.epoch.validators.members().iter().any(|v| v.key != me && !self.avoided.contains_key(&v.key));
        if any {
            self.request_sync(None);
        }
    }

    /// The view timer fired: if blocks are still missing, the next peer is asked (an unanswered
    /// request is dropped; a lost message is no proof of a bad server, so it is not avoided).
    pub(super) fn retry_sync(&mut self) {
        self.sync_peer = None;
        if self.needs_sync() {
            self.request_sync(None);
        }
    }

    /// Stops asking `peer` for blocks until `config.sync_avoid` has passed (a
    /// [`SyncTimer::Avoid`] with a fresh generation lifts it; an older timer does not).
    pub(super) fn avoid(&mut self, peer: PublicKey, reason: &'static str) {
        self.avoid_generation = self.avoid_generation.wrapping_add(1);
        let generation = self.avoid_generation;
        self.avoided.insert(peer, generation);
        self.emit(Action::Event(Event::SyncPeerAvoided { peer, reason }));
        self.emit(Action::SetSyncTimer {
            timer: SyncTimer::Avoid { peer, generation },
            after: self.config.sync_avoid,
        });
    }

    /// Arms the no-progress timer (block sync starts if nothing commits for
    /// `config.sync_no_progress`).
    pub(super) fn arm_no_progress_timer(&mut self) {
        self.emit(Action::SetSyncTimer { timer: SyncTimer::NoProgress, after: self.config.sync_no_progress });
    }

    /// A sync timer fired: lift an avoidance (if it is still the one the timer was set for), or
    /// check for progress.
    pub(super) fn handle_sync_timer(&mut self, timer: SyncTimer) -> Result<(), InputError> {
        match timer {
            SyncTimer::Avoid { peer, generation } => {
                if self.avoided.get(&peer) == Some(&generation) {
                    self.avoided.remove(&peer);
                    if self.needs_sync() {
                        self.request_sync(Some(peer));
                    }
                }
            }
            SyncTimer::NoProgress => {
                let height = self.tree.root().height;
                if height == self.progress_mark {
                    // Nothing committed for a whole period: some peer may have what is missing.
                    // A request still out is given up (its server may be silent, and while views
                    // advance by QCs the view timer that would retry it never fires).
                    self.emit(Action::Event(Event::NoProgress { height }));
                    self.sync_peer = None;
                    self.request_sync(None);
                }
                self.progress_mark = height;
                self.arm_no_progress_timer();
            }
            SyncTimer::Fetch => self.fetch_tick(),
        }
        Ok(())
    }

    /// A peer asks for blocks: hand the request, bounded by our limit, to the driver to serve.
    pub(super) fn handle_sync_request(
        &mut self,
        from: PublicKey,
        req: SyncRequest,
    ) -> Result<(), InputError> {
        if req.from_height.0 == 0 {
            return Err(InputError::MalformedBlock("sync request from height 0"));
        }
        let limit = u32::try_from(self.config.limits.max_sync_blocks).unwrap_or(u32::MAX);
        let request =
            SyncRequest { id: req.id, from_height: req.from_height, max_blocks: req.max_blocks.min(limit) };
        self.emit(Action::ServeSync { to: from, request });
        Ok(())
    }

    /// Checks a sync response completely, then adds its blocks and takes in its certificates.
    /// A response to a request this replica made is always accepted as an input: if it is bad
    /// (or empty while blocks are missing), nothing of it is taken in and its server is avoided
    /// for `config.sync_avoid` (an [`Event::SyncPeerAvoided`] says why).
    ///
    /// Blocks at or below the committed height are dropped first: the replica may have committed
    /// further (through proposals) while the request was out, and then an honest server's answer
    /// starts below what it now holds. An answer that brings nothing above the committed height
    /// is stale, not bad: its server is not avoided, and the next peer in rotation is asked if
    /// blocks are still missing.
    pub(super) fn handle_sync_response(
        &mut self,
        from: PublicKey,
        mut resp: SyncResponse,
    ) -> Result<(), InputError> {
        if self.sync_peer != Some((from, resp.id)) {
            return Err(InputError::UnexpectedSync(from));
        }
        let committed = self.tree.root().height;
        let stale = resp.blocks.iter().take_while(|b| b.height <= committed).count();
        if stale > 0 {
            if stale == resp.blocks.len() {
                self.sync_peer = None;
                self.emit(Action::Event(Event::SyncReceived { peer: from, blocks: 0 }));
                if self.needs_sync() {
                    self.request_sync(None);
                }
                return Ok(());
            }
            resp.blocks.drain(..stale);
        }
        if resp.blocks.is_empty() && resp.certificate.is_none() {
            // The peer has nothing for us. That is a failure only if we know blocks exist.
            self.sync_peer = None;
            if self.needs_sync() {
                self.avoid(from, "empty sync response while blocks are missing");
                self.retry_elsewhere();
            }
            return Ok(());
        }
        match self.check_sync_response(&resp) {
            Ok(checked) => {
                self.accept_sync_response(from, resp, checked);
                Ok(())
            }
            Err(reason) => {
                self.sync_peer = None;
                self.avoid(from, reason);
                self.retry_elsewhere();
                Ok(())
            }
        }
    }

    /// A server answers that it pruned the heights asked for. It cannot help this replica by
    /// block sync, so it is avoided for `config.sync_avoid` and another server is asked; an
    /// [`Event::SyncBelowRetained`] tells the driver (if every server says so, only a state
    /// snapshot can catch this replica up). An answer whose `retained_from` does not lie above the heights we need
    /// contradicts itself (the server would hold them) and counts as a bad response.
    pub(super) fn handle_sync_pruned(&mut self, from: PublicKey, p: SyncPruned) -> Result<(), InputError> {
        if self.sync_peer != Some((from, p.id)) {
            return Err(InputError::UnexpectedSync(from));
        }
        self.sync_peer = None;
        let from_height = Height(self.tree.root().height.0.saturating_add(1));
        if p.retained_from <= from_height {
            self.avoid(from, "claims to have pruned heights it holds");
        } else {
            self.emit(Action::Event(Event::SyncBelowRetained {
                peer: from,
                from_height,
                retained_from: p.retained_from,
            }));
            self.avoid(from, "pruned the heights asked for");
        }
        self.retry_elsewhere();
        Ok(())
    }

    /// Checks a non-empty response as a whole: blocks of this epoch chaining from a known block,
    /// heights and views consistent, every QC verified. Returns the blocks' hashes and the QC
    /// digests.
    fn check_sync_response(&self, resp: &SyncResponse) -> Result<CheckedSync, &'static str> {
        let first = resp.blocks.first().ok_or("certificate without blocks")?;
        let cert = resp.certificate.as_ref().ok_or("no certificate")?;
        let mut prev = first.parent();
        let (mut prev_view, mut prev_height) =
            self.tree.position(&prev).ok_or("first block's parent is unknown")?;
        let mut hashes = Vec::with_capacity(resp.blocks.len());
        for b in &resp.blocks {
            if b.epoch != self.epoch.epoch {
                return Err("block of another epoch");
            }
            if b.parent() != prev {
                return Err("blocks do not chain");
            }
            if b.height.0 != prev_height.0.saturating_add(1) {
                return Err("heights not consecutive");
            }
            if b.justify.view != prev_view || b.view <= prev_view {
                return Err("views inconsistent");
            }
            prev = b.hash();
            hashes.push(prev);
            prev_view = b.view;
            prev_height = b.height;
        }
        if cert.block != prev || cert.view != prev_view {
            return Err("certificate does not certify the last block");
        }
        let mut digests = Vec::with_capacity(resp.blocks.len() + 1);
        for qc in resp.blocks.iter().map(|b| &b.justify).chain(core::iter::once(cert)) {
            digests.push(self.check_qc(qc).map_err(|_| "invalid certificate")?);
        }
        Ok(CheckedSync { hashes, digests })
    }

    /// Takes in a checked response: adds its blocks, takes in its certificates, and asks the
    /// same peer for more while it brings new blocks.
    fn accept_sync_response(&mut self, from: PublicKey, resp: SyncResponse, checked: CheckedSync) {
        let CheckedSync { hashes, digests } = checked;
        let certs: Vec<(QuorumCertificate, BlockHash)> = resp
            .blocks
            .iter()
            .map(|b| b.justify.clone())
            .chain(resp.certificate.clone())
            .zip(digests)
            .collect();
        self.sync_peer = None;
        let mut added = 0;
        for (b, h) in resp.blocks.iter().zip(&hashes) {
            if self.tree.contains(h) {
                continue;
            }
            if self.tree.len() >= self.config.max_uncommitted_blocks {
                break;
            }
            self.tree.insert(*h, b.clone(), Validity::Waiting, true);
            added += 1;
        }
        let epoch = self.epoch.epoch;
        for (qc, digest) in certs {
            if self.epoch.epoch != epoch {
                break; // the response's blocks ended the epoch; the rest is of no use now
            }
            self.observe_qc(&qc, digest);
        }
        for h in &hashes {
            self.request_validation(*h);
        }
        for h in &hashes {
            if self.tree.contains(h) {
                self.block_added(*h);
            }
        }
        self.emit(Action::Event(Event::SyncReceived { peer: from, blocks: added }));
        // Keep going with this peer while it brings new blocks; otherwise the view timer
        // retries with the next peer.
        if added > 0 && (resp.blocks.len() >= self.config.limits.max_sync_blocks || self.needs_sync()) {
            self.request_sync(Some(from));
        }
    }

    /// Builds the answer to a peer's [`SyncRequest`] (see [`Action::ServeSync`]): committed
    /// blocks from the driver's store (`committed(height)` gives a committed block, a QC for it
    /// and, for a block that ended its epoch, the [`EpochProof`], all as handed over in
    /// [`Action::Commit`]), then this replica's certified uncommitted blocks up to its highest
    /// QC, at most `min(request.max_blocks, limits.max_sync_blocks)` in all. A response never
    /// crosses an epoch boundary: it ends with an epoch's last block and its proof, and the
    /// client asks again once it has switched sets.
    #[must_use]
    pub fn sync_response(
        &self,
        request: &SyncRequest,
        committed: impl Fn(Height) -> Option<(Block, QuorumCertificate, Option<EpochProof>)>,
    ) -> SyncResponse {
        let max = (request.max_blocks as usize).min(self.config.limits.max_sync_blocks);
        let root = *self.tree.root();
        let mut items: Vec<(Block, QuorumCertificate)> = Vec::new();
        let mut h = request.from_height.0.max(1);
        while h <= root.height.0 && items.len() < max {
            let Some((block, qc, proof)) = committed(Height(h)) else { break };
            match proof {
                None => items.push((block, qc)),
                Some(proof) => {
                    // The epoch's last block, then its proof. If they do not fit after other
                    // blocks, stop before them; alone they may use the whole wire limit.
                    let room = if items.is_empty() { self.config.limits.max_sync_blocks } else { max };
                    if items.len() + 1 + proof.blocks.len() > room || proof.blocks.is_empty() {
                        break;
                    }
                    items.push((block, qc));
                    let certs = proof.blocks.iter().skip(1).map(|b| b.justify.clone()).chain(Some(proof.qc));
                    items.extend(proof.blocks.iter().cloned().zip(certs));
                    return Self::response(request.id, items);
                }
            }
            h += 1;
        }
        if h > root.height.0 {
            if let Some(path) = self.tree.path_from_root(&self.safety.high_qc.block) {
                let blocks: Vec<&Block> =
                    path.iter().filter_map(|x| self.tree.get(x).map(|e| &e.block)).collect();
                for (i, b) in blocks.iter().enumerate() {
                    if items.len() >= max {
                        break;
                    }
                    if b.height.0 < h {
                        continue;
                    }
                    let cert =
                        blocks.get(i + 1).map_or_else(|| self.safety.high_qc.clone(), |n| n.justify.clone());
                    items.push(((*b).clone(), cert));
                }
            }
        }
        Self::response(request.id, items)
    }

    /// Builds the answer to a peer's [`SyncRequest`] (see [`Action::ServeSync`]) for a store
    /// that keeps every committed block from `retained_from` up (and prunes below it): a
    /// [`Message::SyncPruned`] if the request starts below `retained_from` (and within our
    /// committed chain), else the [`Message::SyncResponse`] of [`Replica::sync_response`].
    #[must_use]
    pub fn sync_answer(
        &self,
        request: &SyncRequest,
        retained_from: Height,
        committed: impl Fn(Height) -> Option<(Block, QuorumCertificate, Option<EpochProof>)>,
    ) -> Message {
        let from = request.from_height.0.max(1);
        if from < retained_from.0 && from <= self.tree.root().height.0 {
            return Message::SyncPruned(SyncPruned { id: request.id, retained_from });
        }
        Message::SyncResponse(self.sync_response(request, committed))
    }

    fn response(id: u64, items: Vec<(Block, QuorumCertificate)>) -> SyncResponse {
        let certificate = items.last().map(|(_, c)| c.clone());
        SyncResponse { id, blocks: items.into_iter().map(|(b, _)| b).collect(), certificate }
    }

    /// The view of the highest certified block this replica could serve.
    #[must_use]
    pub fn servable_view(&self) -> View {
        self.safety.high_qc.view
    }
}
