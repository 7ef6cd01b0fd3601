//! [`StateCommitted`]: an [`App`] wrapper that makes every block with a payload carry the
//! [`commitment`](super::commitment) root of the state after its parent, checked by every
//! validator, so that a block's QC certifies that root.
//!
//! # Construction
//! A block whose payload is not empty carries `root || inner payload`, where `root` (32 bytes)
//! is the [`StateTree`] root of the app state after the block's parent (committed state plus
//! the updates of the uncommitted ancestors). `validate_block` recomputes that root and rejects
//! the block if it differs, before the inner app sees the rest of the payload. A QC on the
//! block (2f+1 votes, at least f+1 of them honest, and honest validators vote only for blocks
//! they validated) therefore certifies the root: a node that verifies the QC can check any
//! key's value (or absence) in that state, or a snapshot chunk, against it with a
//! [`Proof`](super::commitment::Proof), whatever peer sent it.
//!
//! Empty blocks (what an idle chain proposes) stay empty, so that the node's idle delay still
//! applies; they carry no root and change no state in the kv app. The state after height `h`
//! is therefore certified by the first block with a payload above `h`, provided that the
//! blocks between are empty.
//!
//! # Cost
//! The wrapper keeps the committed state's tree, updated with every commit, and the tree after
//! each block it validated (trees share their unchanged nodes, so each costs what its updates
//! touch: one hash per level, about 21 levels at a million keys). A block whose parent it did
//! not validate (its own proposal, or the first block after a start) replays the uncommitted
//! ancestors' updates onto the committed tree.
//!
//! Not yet done: the committed tree is built from a scan of the whole committed state on first
//! use (O(state) once per start: about 14 s for a million keys on the development machine), not
//! stored with it.

use super::commitment::{Hash, StateTree};
use crate::app::{App, BlockContext, Produced};
use hotstuff_core::{AppOutcome, AppStateUpdates, Block, BlockHash, CommittedBlock, Height};
use std::collections::HashMap;

/// The length of the root prefix of a block payload.
pub const ROOT_LEN: usize = 32;

/// An app whose blocks certify the state root (see the [module docs](self)).
pub struct StateCommitted<A: App> {
    inner: A,
    /// The tree of the committed state (`None` until first used).
    committed: Option<StateTree>,
    /// The committed height the tree is at.
    committed_height: Height,
    /// The tree of the state after each block validated and not yet committed.
    after: HashMap<BlockHash, (Height, StateTree)>,
}

impl<A: App> StateCommitted<A> {
    /// Wraps `inner`.
    pub fn new(inner: A) -> Self {
        StateCommitted { inner, committed: None, committed_height: Height(0), after: HashMap::new() }
    }

    /// The wrapped app.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// The root of the committed state (`None` before the first block was produced, validated
    /// or committed).
    #[must_use]
    pub fn committed_root(&self) -> Option<Hash> {
        self.committed.as_ref().map(StateTree::root)
    }

    /// The committed tree, built from the store on first use.
    fn committed_tree(&mut self, ctx: &BlockContext<'_>) -> Option<&mut StateTree> {
        if self.committed.is_none() {
            // In bulk (each node hashed once): a scan of a million keys builds in ~2 s, where
            // inserting them one by one took ~11 s on the consensus thread at every start.
            let mut hashed = Vec::new();
            let scanned = ctx.scan_committed(&mut |k, v| {
                hashed.push((*blake3::hash(k).as_bytes(), *blake3::hash(v).as_bytes()));
            });
            match scanned {
                Ok(height) => {
                    self.committed = Some(StateTree::from_hashed(hashed));
                    self.committed_height = height.unwrap_or(Height(0));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read the app state to build its commitment");
                    return None;
                }
            }
        }
        self.committed.as_mut()
    }

    /// The tree of the state after `ctx.parent`.
    fn tree_after_parent(&mut self, ctx: &BlockContext<'_>) -> Option<StateTree> {
        if let Some((_, tree)) = self.after.get(&ctx.parent) {
            return Some(tree.clone());
        }
        let mut tree = self.committed_tree(ctx)?.clone();
        // Oldest first. Commits still being written are in `pending` and (via `committed`)
        // already in the tree: replaying them is harmless, as updates are assignments and the
        // replay ends with the newest.
        for updates in ctx.pending.iter().rev() {
            apply(&mut tree, updates);
        }
        Some(tree)
    }
}

fn apply(tree: &mut StateTree, updates: &AppStateUpdates) {
    for (k, v) in updates.0.iter() {
        tree.set(k, v.as_deref());
    }
}

impl<A: App> App for StateCommitted<A> {
    fn produce_block(&mut self, ctx: &BlockContext<'_>) -> Produced {
        let Some(root) = self.tree_after_parent(ctx).map(|t| t.root()) else { return Produced::default() };
        let inner_ctx = BlockContext {
            view: ctx.view,
            height: ctx.height,
            parent: ctx.parent,
            me: ctx.me,
            waits_if_empty: ctx.waits_if_empty,
            validators: ctx.validators,
            max_payload: ctx.max_payload.saturating_sub(ROOT_LEN),
            schedule: ctx.schedule,
            committed: ctx.committed,
            pending: ctx.pending.clone(),
        };
        let produced = self.inner.produce_block(&inner_ctx);
        if produced.is_empty() {
            return produced;
        }
        let mut payload = Vec::with_capacity(ROOT_LEN + produced.payload.len());
        payload.extend_from_slice(&root);
        payload.extend_from_slice(&produced.payload);
        Produced { payload, outcome: produced.outcome }
    }

    fn validate_block(&mut self, ctx: &BlockContext<'_>, block: &Block) -> Option<AppOutcome> {
        self.validate(ctx, block, false)
    }

    fn validate_block_for_sync(&mut self, ctx: &BlockContext<'_>, block: &Block) -> Option<AppOutcome> {
        self.validate(ctx, block, true)
    }

    fn committed(&mut self, blocks: &[CommittedBlock]) {
        if let Some(tree) = self.committed.as_mut() {
            for b in blocks {
                apply(tree, &b.outcome.app_updates);
                self.committed_height = self.committed_height.max(b.block.height);
            }
        }
        let height = self.committed_height.max(blocks.last().map_or(Height(0), |b| b.block.height));
        self.after.retain(|_, (h, _)| *h > height);
        let inner: Vec<CommittedBlock> = blocks
            .iter()
            .map(|b| {
                let mut b = b.clone();
                b.block.payload = strip(&b.block.payload).to_vec();
                b
            })
            .collect();
        self.inner.committed(&inner);
    }

    fn peer_book(
        &self,
        state: &crate::app::StateReader<'_>,
        validators: &hotstuff_core::ValidatorSet,
    ) -> Vec<(hotstuff_core::PublicKey, String)> {
        self.inner.peer_book(state, validators)
    }

    fn snapshot_root(&self, block: &Block) -> Option<[u8; 32]> {
        block.payload.get(..ROOT_LEN)?.try_into().ok()
    }

    fn outgoing(&mut self) -> Vec<(hotstuff_core::PublicKey, Vec<u8>)> {
        self.inner.outgoing()
    }

    fn on_message(&mut self, from: hotstuff_core::PublicKey, bytes: Vec<u8>) {
        self.inner.on_message(from, bytes);
    }

    fn state_installed(&mut self) {
        self.committed = None;
        self.committed_height = Height(0);
        self.after.clear();
        self.inner.state_installed();
    }
}

/// The inner app's payload of a block payload (an empty payload stays empty).
fn strip(payload: &[u8]) -> &[u8] {
    payload.get(ROOT_LEN..).unwrap_or(&[])
}

impl<A: App> StateCommitted<A> {
    fn validate(&mut self, ctx: &BlockContext<'_>, block: &Block, for_sync: bool) -> Option<AppOutcome> {
        let mut tree = self.tree_after_parent(ctx)?;
        let inner_outcome = |inner: &mut A, b: &Block| {
            if for_sync {
                inner.validate_block_for_sync(ctx, b)
            } else {
                inner.validate_block(ctx, b)
            }
        };
        let outcome = if block.payload.is_empty() {
            inner_outcome(&mut self.inner, block)?
        } else {
            let claimed = block.payload.get(..ROOT_LEN)?;
            if claimed != &tree.root()[..] {
                tracing::warn!(height = %block.height, "a block carries a wrong state root");
                return None;
            }
            let inner_block = Block { payload: strip(&block.payload).to_vec(), ..block.clone() };
            inner_outcome(&mut self.inner, &inner_block)?
        };
        apply(&mut tree, &outcome.app_updates);
        self.after.insert(block.hash(), (block.height, tree));
        Some(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{state_key, KvApp, Mempool, Tx, TX_COUNT_KEY};
    use crate::storage::{Genesis, RedbStore, Storage, WriteBatch};
    use hotstuff_core::{genesis_hash, ChainId, Epoch, Keypair, QuorumCertificate, ValidatorSet, View};

    struct Fixture {
        store: RedbStore,
        validators: ValidatorSet,
        me: hotstuff_core::PublicKey,
        leader: Box<dyn Fn(View) -> hotstuff_core::PublicKey>,
    }

    impl Fixture {
        fn new() -> Self {
            let key = Keypair::from_secret(&[9; 32]);
            let validators = ValidatorSet::new([(key.public(), 1)]).unwrap();
            let store = RedbStore::in_memory().unwrap();
            let genesis = Genesis::new(ChainId(3), validators.clone())
                .with_app_state([(b"kv/seed".to_vec(), b"1".to_vec())]);
            store.initialise(&genesis).unwrap();
            let me = key.public();
            Fixture { store, validators, me, leader: Box::new(move |_| me) }
        }

        fn ctx<'a>(
            &'a self,
            parent: BlockHash,
            height: u64,
            pending: Vec<&'a AppStateUpdates>,
        ) -> BlockContext<'a> {
            BlockContext {
                view: View(height),
                height: Height(height),
                parent,
                me: self.me,
                waits_if_empty: false,
                validators: &self.validators,
                max_payload: 1 << 20,
                schedule: crate::app::Schedule::Fn(&*self.leader),
                committed: crate::app::Committed::Store(&self.store),
                pending,
            }
        }

        fn block(&self, parent: BlockHash, height: u64, payload: Vec<u8>) -> Block {
            Block {
                epoch: Epoch(0),
                view: View(height),
                height: Height(height),
                justify: QuorumCertificate::genesis(parent),
                proposer: self.me,
                payload,
            }
        }
    }

    fn app(txs: &[Tx]) -> StateCommitted<KvApp> {
        let pool = Mempool::new(1000);
        for tx in txs {
            pool.submit(tx.clone()).unwrap();
        }
        StateCommitted::new(KvApp::new(pool, 100))
    }

    fn put(k: &str, v: &str) -> Tx {
        Tx::Put { key: k.as_bytes().to_vec(), value: v.as_bytes().to_vec() }
    }

    /// A proposer and a validator agree on the root a block carries, along a chain of
    /// uncommitted blocks; a wrong root, a truncated one, or a root over another parent's
    /// state is rejected; commits move the committed root to the state the chain reached.
    #[test]
    fn blocks_carry_the_parents_root_and_validators_check_it() {
        let f = Fixture::new();
        let g = genesis_hash(ChainId(3), &f.validators);
        let mut proposer = app(&[put("a", "1"), put("b", "2")]);
        let mut validator = app(&[]);

        // Block 1 on genesis: the root of the genesis state.
        let produced = proposer.produce_block(&f.ctx(g, 1, vec![]));
        let genesis_root = StateTree::from_entries([(&b"kv/seed"[..], &b"1"[..])]).root();
        assert_eq!(produced.payload.get(..ROOT_LEN), Some(&genesis_root[..]));
        let b1 = f.block(g, 1, produced.payload.clone());
        let outcome = validator.validate_block(&f.ctx(g, 1, vec![]), &b1).expect("valid");
        assert_eq!(outcome, produced.outcome);

        // Block 2 on block 1 (uncommitted): the root after block 1's updates.
        let mut proposer2 = app(&[Tx::Delete { key: b"a".to_vec() }]);
        let p2 = proposer2.produce_block(&f.ctx(b1.hash(), 2, vec![&outcome.app_updates]));
        let mut expected = StateTree::from_entries([(&b"kv/seed"[..], &b"1"[..])]);
        apply(&mut expected, &outcome.app_updates);
        assert_eq!(p2.payload.get(..ROOT_LEN), Some(&expected.root()[..]));
        let b2 = f.block(b1.hash(), 2, p2.payload.clone());
        // The validator uses the tree it kept for block 1 (no pending list needed) ...
        assert!(validator.validate_block(&f.ctx(b1.hash(), 2, vec![]), &b2).is_some());
        // ... and a fresh one replays the pending updates: the same verdict.
        assert!(app(&[]).validate_block(&f.ctx(b1.hash(), 2, vec![&outcome.app_updates]), &b2).is_some());

        // Wrong, truncated, or another parent's root: rejected.
        let mut wrong = p2.payload.clone();
        wrong[3] ^= 1;
        assert!(validator
            .validate_block(&f.ctx(b1.hash(), 2, vec![]), &f.block(b1.hash(), 2, wrong))
            .is_none());
        let short = f.block(b1.hash(), 2, p2.payload[..20].to_vec());
        assert!(validator.validate_block(&f.ctx(b1.hash(), 2, vec![]), &short).is_none());
        let stale = f.block(b1.hash(), 2, produced.payload.clone());
        assert!(
            validator.validate_block(&f.ctx(b1.hash(), 2, vec![]), &stale).is_none(),
            "block 1's root again"
        );
        // An empty block carries nothing and passes.
        assert!(validator
            .validate_block(&f.ctx(b1.hash(), 2, vec![]), &f.block(b1.hash(), 2, vec![]))
            .is_some());

        // Commit block 1 (as the node does: store first, then the app): the committed root is
        // the tree of the store's state.
        let committed = CommittedBlock {
            block: b1.clone(),
            hash: b1.hash(),
            certificate: QuorumCertificate::genesis(b1.hash()),
            outcome: outcome.clone(),
            epoch_change: None,
        };
        f.store.write(&WriteBatch { commits: vec![committed.clone()], ..WriteBatch::default() }).unwrap();
        validator.committed(std::slice::from_ref(&committed));
        let mut entries = Vec::new();
        f.store.scan_app_state(&mut |k, v| entries.push((k.to_vec(), v.to_vec()))).unwrap();
        let from_store = StateTree::from_entries(entries.iter().map(|(k, v)| (&k[..], &v[..])));
        assert_eq!(validator.committed_root(), Some(from_store.root()));
        assert!(
            entries.iter().any(|(k, _)| *k == state_key(b"a"))
                && entries.iter().any(|(k, _)| k == TX_COUNT_KEY)
        );
        // Block 2 still validates against its parent's kept tree after the commit.
        let b2b = f.block(b1.hash(), 2, p2.payload);
        assert!(
            app(&[]).validate_block(&f.ctx(b1.hash(), 2, vec![]), &b2b).is_some(),
            "from the store alone"
        );
    }

    /// An idle inner app gives an empty block (so the node's idle delay applies).
    #[test]
    fn an_idle_app_proposes_empty_blocks() {
        let f = Fixture::new();
        let g = genesis_hash(ChainId(3), &f.validators);
        assert!(app(&[]).produce_block(&f.ctx(g, 1, vec![])).is_empty());
    }
}
