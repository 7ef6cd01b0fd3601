//! Inputs: block-sync requests and responses. Also the server-side response builder.
//!
//! A replica that sees a certificate for a block it does not have (a proposal whose parent is
//! unknown, a QC or TC from a vote, timeout or proposal) asks one peer at a time for the
//! certified blocks above its committed height. A response is checked as a whole (blocks chain
//! from a known block, heights and views consistent, every QC verified) before anything is
//! taken in; the blocks then go through the same commit rule and app validation (`for_sync`) as
//! proposals. If the peer does not answer within a view timeout, the next peer is asked.

use super::Replica;
use crate::action::Action;
use crate::block::Block;
use crate::block_tree::Validity;
use crate::certificate::QuorumCertificate;
use crate::error::InputError;
use crate::event::Event;
use crate::message::{Message, SyncRequest, SyncResponse};
use crate::pacemaker::Pacemaker;
use crate::types::{BlockHash, Height, PublicKey, View};
use alloc::vec::Vec;

impl<P: Pacemaker> Replica<P> {
    /// Whether the replica knows of a certified block it does not have.
    pub(super) fn needs_sync(&self) -> bool {
        let qc = &self.safety.high_qc;
        qc.view > self.tree.root().view && !self.tree.contains(&qc.block)
    }

    /// Asks `preferred` (or the next peer in rotation) for blocks, unless a request is out.
    pub(super) fn request_sync(&mut self, preferred: Option<PublicKey>) {
        if self.sync_peer.is_some() {
            return;
        }
        let me = self.key.public();
        let peer = match preferred.filter(|p| *p != me) {
            Some(p) => p,
            None => {
                let peers: Vec<PublicKey> =
                    self.validators.members().iter().map(|v| v.key).filter(|k| *k != me).collect();
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

    /// The current sync request (if any) got no answer in time: ask the next peer.
    pub(super) fn retry_sync(&mut self) {
        if self.needs_sync() {
            self.sync_peer = None;
            self.request_sync(None);
        }
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
    pub(super) fn handle_sync_response(
        &mut self,
        from: PublicKey,
        resp: SyncResponse,
    ) -> Result<(), InputError> {
        if self.sync_peer != Some((from, resp.id)) {
            return Err(InputError::UnexpectedSync(from));
        }
        let Some(first) = resp.blocks.first() else {
            if resp.certificate.is_some() {
                return Err(InputError::BadSyncResponse("certificate without blocks"));
            }
            // The peer has nothing for us; the next timer tries another.
            self.sync_peer = None;
            return Ok(());
        };
        let cert = resp.certificate.as_ref().ok_or(InputError::BadSyncResponse("no certificate"))?;
        let mut prev = first.parent();
        let (mut prev_view, mut prev_height) = self
            .tree
            .position(&prev)
            .ok_or(InputError::BadSyncResponse("first block's parent is unknown"))?;
        let mut hashes = Vec::with_capacity(resp.blocks.len());
        for b in &resp.blocks {
            if b.parent() != prev {
                return Err(InputError::BadSyncResponse("blocks do not chain"));
            }
            if b.height.0 != prev_height.0.saturating_add(1) {
                return Err(InputError::BadSyncResponse("heights not consecutive"));
            }
            if b.justify.view != prev_view || b.view <= prev_view {
                return Err(InputError::BadSyncResponse("views inconsistent"));
            }
            prev = b.hash();
            hashes.push(prev);
            prev_view = b.view;
            prev_height = b.height;
        }
        if cert.block != prev || cert.view != prev_view {
            return Err(InputError::BadSyncResponse("certificate does not certify the last block"));
        }
        let mut certs: Vec<(&QuorumCertificate, BlockHash)> = Vec::with_capacity(resp.blocks.len() + 1);
        for qc in resp.blocks.iter().map(|b| &b.justify).chain(core::iter::once(cert)) {
            certs.push((qc, self.check_qc(qc)?));
        }

        // Accepted.
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
        for (qc, digest) in certs {
            self.observe_qc(qc, digest);
        }
        for h in &hashes {
            self.request_validation(*h);
        }
        self.emit(Action::Event(Event::SyncReceived { peer: from, blocks: added }));
        // Keep going with this peer while it brings new blocks; otherwise the view timer
        // retries with the next peer.
        if added > 0 && (resp.blocks.len() >= self.config.limits.max_sync_blocks || self.needs_sync()) {
            self.request_sync(Some(from));
        }
        Ok(())
    }

    /// Builds the answer to a peer's [`SyncRequest`] (see [`Action::ServeSync`]): committed
    /// blocks from the driver's store (`committed(height)` gives a committed block and a QC for
    /// it, as handed over in [`Action::Commit`]), then this replica's certified uncommitted
    /// blocks up to its highest QC, at most `min(request.max_blocks, limits.max_sync_blocks)`.
    #[must_use]
    pub fn sync_response(
        &self,
        request: &SyncRequest,
        committed: impl Fn(Height) -> Option<(Block, QuorumCertificate)>,
    ) -> SyncResponse {
        let max = (request.max_blocks as usize).min(self.config.limits.max_sync_blocks);
        let root = *self.tree.root();
        let mut items: Vec<(Block, QuorumCertificate)> = Vec::new();
        let mut h = request.from_height.0.max(1);
        while h <= root.height.0 && items.len() < max {
            match committed(Height(h)) {
                Some(item) => items.push(item),
                None => break,
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
        let certificate = items.last().map(|(_, c)| c.clone());
        SyncResponse { id: request.id, blocks: items.into_iter().map(|(b, _)| b).collect(), certificate }
    }

    /// The view of the highest certified block this replica could serve.
    #[must_use]
    pub fn servable_view(&self) -> View {
        self.safety.high_qc.view
    }
}
