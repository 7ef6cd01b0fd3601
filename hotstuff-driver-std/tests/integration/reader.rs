//! A node's `Reader` sees commits the background store writer has not yet written: with the
//! writer held up inside the store, a lone validator goes on committing, and its reader's tip,
//! blocks and app state follow the consensus loop, not the store. Once the writer goes on, the
//! store catches up and both agree.

use hotstuff_core::{
    AppOutcome, AppStateUpdates, Block, ChainId, CommittedTip, Height, Keypair, ValidatorSet,
};
use hotstuff_driver_std::{
    App, BlockContext, CommittedEntry, Genesis, NodeBuilder, Produced, RedbStore, Storage, StoreError,
    Stored, WriteBatch,
};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Writes the height of each block under the key `height`.
struct HeightApp;

fn outcome(height: Height) -> AppOutcome {
    let mut updates = AppStateUpdates::default();
    updates.insert(b"height".to_vec(), height.0.to_le_bytes().to_vec());
    AppOutcome { app_updates: updates, ..AppOutcome::default() }
}

impl App for HeightApp {
    fn produce_block(&mut self, ctx: &BlockContext<'_>) -> Produced {
        Produced { payload: ctx.height.0.to_le_bytes().to_vec(), outcome: outcome(ctx.height) }
    }
    fn validate_block(&mut self, ctx: &BlockContext<'_>, _: &Block) -> Option<AppOutcome> {
        Some(outcome(ctx.height))
    }
}

/// A store whose writes of commits wait while the gate is closed (the consensus loop writes
/// none here: a lone validator's commits all go to the background writer).
struct Gated {
    inner: RedbStore,
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gated {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = closed;
        self.opened.notify_all();
    }
    fn wait_open(&self, batch: &WriteBatch) {
        if batch.commits.is_empty() {
            return;
        }
        let mut closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        while *closed {
            closed = self.opened.wait(closed).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Storage for Gated {
    fn initialise(&self, genesis: &Genesis) -> Result<(), StoreError> {
        self.inner.initialise(genesis)
    }
    fn load(&self) -> Result<Option<Stored>, StoreError> {
        self.inner.load()
    }
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.wait_open(batch);
        self.inner.write(batch)
    }
    fn write_deferred(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.wait_open(batch);
        self.inner.write_deferred(batch)
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }
    fn committed_block(&self, height: Height) -> Result<Option<CommittedEntry>, StoreError> {
        self.inner.committed_block(height)
    }
    fn app_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.app_get(key)
    }
    fn tip(&self) -> Result<Option<(CommittedTip, ValidatorSet)>, StoreError> {
        self.inner.tip()
    }
    fn scan_app_state(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<CommittedTip, StoreError> {
        self.inner.scan_app_state(visit)
    }
}

struct OpenOnDrop(Arc<Gated>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn height_value(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|v| v.try_into().ok()).map_or(0, u64::from_le_bytes)
}

#[test]
fn a_reader_sees_commits_the_background_writer_has_not_yet_written() {
    let key = Keypair::from_secret(&[7; 32]);
    let genesis = Genesis::new(ChainId(41), ValidatorSet::new([(key.public(), 1)]).expect("set"));
    let store = Arc::new(Gated {
        inner: RedbStore::in_memory().expect("store"),
        closed: Mutex::new(false),
        opened: Condvar::new(),
    });
    let node = NodeBuilder::with_shared_store(key, genesis, HeightApp, store.clone()).start().expect("start");
    // Dropped before the node (a failed assertion must not leave the writer held up, or the
    // node's shutdown would wait for it forever).
    let _open_on_drop = OpenOnDrop(store.clone());
    let reader = node.reader();
    let store_tip = || store.tip().expect("tip").map_or(0, |(t, _)| t.height.0);
    wait_until("the first commits in the store", || store_tip() >= 3);

    store.set(true);
    // A write the writer already began may still land; after that the store stands still.
    std::thread::sleep(Duration::from_millis(200));
    let stuck = store_tip();
    wait_until("the reader's tip to pass the held-up store", || {
        reader.tip().expect("reader tip").height.0 >= stuck + 20
    });
    assert_eq!(store_tip(), stuck, "the store moved while its writes were held up");
    let seen = reader.tip().expect("reader tip").height.0;
    let value = height_value(reader.get(b"height").expect("get"));
    assert!(
        value > stuck,
        "the reader's app state ({value}) is the store's ({stuck}), not the committed one"
    );
    assert!(height_value(store.app_get(b"height").expect("get")) <= stuck);
    for h in stuck + 1..=seen {
        let (block, _, _) = reader.block(Height(h)).expect("block").unwrap_or_else(|| panic!("no block {h}"));
        assert_eq!((block.height, block.payload), (Height(h), h.to_le_bytes().to_vec()));
        assert!(store.committed_block(Height(h)).expect("block").is_none());
    }
    let (tip, v) = reader.get_with_tip(b"height").expect("get with tip");
    assert_eq!(height_value(v), tip.height.0, "a value and its tip from one moment");

    store.set(false);
    wait_until("the store to catch up", || store_tip() >= seen);
    let (tip, v) = reader.get_with_tip(b"height").expect("get with tip");
    assert_eq!(height_value(v), tip.height.0);
    node.shutdown().expect("shutdown");
    let (tip, _) = store.tip().expect("tip").expect("initialised");
    assert_eq!(
        height_value(store.app_get(b"height").expect("get")),
        tip.height.0,
        "the store agrees after a clean stop"
    );
}
