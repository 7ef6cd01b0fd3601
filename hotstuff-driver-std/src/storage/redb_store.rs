//! The default store: one redb database file.

use super::safety_log::{self, LogFile, SafetyLog};
use super::{CommittedEntry, Genesis, Storage, Stored, WriteBatch};
use crate::error::StoreError;
use borsh::{BorshDeserialize, BorshSerialize};
use hotstuff_core::{
    genesis_hash, BlockRecord, ChainId, CommittedTip, EpochState, Height, SafetyState, ValidatorSet, View,
};
use redb::{Database, Durability, ReadTransaction, ReadableTable, TableDefinition, TableError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Settings and tip: `chain`, `initial_validators`, `epoch` (once the set changed), `tip`,
/// `safety`, `format`, `retained_from` (once pruned: the lowest height below which only
/// epochs' last blocks are kept), `log_seq` (with a safety log: the highest log record whose
/// writes this database holds).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Uncommitted blocks: key `height (u64 BE) || hash`, value a borsh `BlockRecord`.
const PENDING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pending");
/// Committed blocks by height: a borsh `(Block, QuorumCertificate, Option<EpochProof>)`.
const COMMITTED: TableDefinition<u64, &[u8]> = TableDefinition::new("committed");
/// The committed app state.
const APP: TableDefinition<&[u8], &[u8]> = TableDefinition::new("app");

/// The staging area of a snapshot being fetched: its entries (key -> value).
const STAGE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("stage");
/// The staging area's chunks: key `depth << 32 | index`; the target under `u64::MAX`.
const STAGE_CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("stage_chunks");
/// The key of the staged target in [`STAGE_CHUNKS`].
const STAGE_TARGET: u64 = u64::MAX;

/// The layout version written by this code.
const FORMAT: u32 = 1;

/// A [`Storage`] in a redb database.
///
/// redb is the default because it is pure Rust (no C toolchain, no unsafe FFI surface), ACID,
/// and crash-safe by design: copy-on-write B-trees with a checksummed two-phase commit, so a
/// crash at any point leaves the last committed transaction intact, and a write transaction
/// with the default `Durability::Immediate` returns from `commit` only after fsync. Each
/// [`WriteBatch`] is one such transaction.
///
/// redb trusts its file: a damaged one (bytes changed outside redb) can make it panic, in
/// release builds too, at many places, or read damaged pages as they are. So [`RedbStore::open`]
/// checks every page's checksum once (`Database::check_integrity`), and every call into the
/// engine is guarded: a panic inside it becomes [`StoreError::Corrupt`] naming the operation,
/// never a crash of the caller (the node stops with that error, as for any store failure).
pub struct RedbStore {
    engine: Engine,
}

/// The redb-backed implementation that [`RedbStore`] guards. `db` is `None` only while the
/// store is dropped.
struct Engine {
    db: Option<Database>,
    /// In memory only ([`RedbStore::in_memory`]): nothing survives the process, so a durable
    /// commit buys nothing but the pages it frees (redb frees pages only in durable commits).
    /// Such a store commits with `Durability::None` and makes every [`VOLATILE_SYNC_EVERY`]-th
    /// write durable, which keeps its memory bounded.
    volatile: bool,
    /// Writes since the last durable one (a volatile store only).
    undurable: AtomicU32,
    /// A volatile store's safety state, kept here rather than in the `meta` table: most
    /// writes of the consensus loop (one per vote) carry nothing else, and then cost no
    /// transaction at all.
    safety: Mutex<Option<SafetyState>>,
    /// A volatile store's own blocks (a proposal's, written by the consensus loop before it is
    /// sent): held here, as its safety state is, until the next write transaction (the
    /// background writer's, within a few milliseconds) takes them before its own writes; `load`
    /// reads them as if stored. So no write of the consensus loop costs a transaction.
    held: Mutex<WriteBatch>,
    /// Write transactions in the order redb ran them (it runs one at a time), to know when a
    /// sync has nothing to do: `sync` is a no-op while no non-durable commit is numbered above
    /// the last durable one (a durable commit makes every earlier commit durable too).
    txns: TxnOrder,
    /// The safety log of a store on disk (`None`: in memory, or a custom backend without one).
    log: Option<Log>,
}

/// A store's safety log ([`safety_log`]) and the logged writes redb does not hold yet.
struct Log {
    /// Written by the consensus thread only (its durable writes without commits).
    file: Mutex<SafetyLog>,
    unfolded: Mutex<Unfolded>,
}

/// Logged writes on their way into redb: the next write transaction (of either thread) takes
/// them, before its own writes, and records `log_seq`. The log is rewound once no logged write
/// waits here and the last transaction that took some is durable.
#[derive(Default)]
struct Unfolded {
    /// Logged writes not yet in any redb transaction, merged in order.
    batch: WriteBatch,
    /// The highest sequence number among them.
    seq: u64,
    /// The highest redb transaction (see [`TxnOrder`]) that took logged writes.
    covered_by: u64,
    /// A transaction that took logged writes failed: the log is never rewound (a restart
    /// replays it).
    broken: bool,
}

/// See [`Engine::txns`].
#[derive(Default)]
struct TxnOrder {
    /// The number of the last write transaction begun.
    begun: AtomicU64,
    /// The highest number of a committed durable transaction.
    durable: AtomicU64,
    /// The highest number of a committed non-durable transaction.
    undurable: AtomicU64,
}

impl TxnOrder {
    /// Numbers a transaction; call it while holding redb's write transaction.
    fn begin(&self) -> u64 {
        self.begun.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Records transaction `n`, committed with `durability`.
    fn committed(&self, n: u64, durability: Durability) {
        match durability {
            Durability::None => self.undurable.fetch_max(n, Ordering::AcqRel),
            _ => self.durable.fetch_max(n, Ordering::AcqRel),
        };
    }

    /// True if every committed transaction is durable.
    fn all_durable(&self) -> bool {
        self.undurable.load(Ordering::Acquire) <= self.durable.load(Ordering::Acquire)
    }
}

/// A volatile store makes every this many writes durable (to free pages).
const VOLATILE_SYNC_EVERY: u32 = 64;

impl Drop for RedbStore {
    fn drop(&mut self) {
        // A store closed cleanly leaves redb holding everything (the safety log is for
        // crashes): tools that read the database file alone see the last writes.
        if self.engine.has_unfolded() {
            if let Err(error) = guarded("close", || self.engine.sync()) {
                tracing::warn!(%error, "the safety log's last records stay in the log only");
            }
        }
        // Closing a damaged database can panic too.
        if let Some(db) = self.engine.db.take() {
            let _ = guarded("close", move || {
                drop(db);
                Ok(())
            });
        }
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the database file at `path`, creating it (and fsyncing its directory) if it does
    /// not exist.
    ///
    /// Beside it lives the store's safety log, `<path>.safetylog` ([`RedbStore::log_path`],
    /// created with it, 4 MiB): a durable [`Storage::write`] without commits (the consensus
    /// loop's safety state and own proposal, which gate its votes and proposals) is one
    /// record appended there and `fdatasync`ed, instead of a durable redb commit; redb takes the
    /// record with its next transaction, and the log starts over once that is durable. Opening
    /// replays the records redb does not hold yet; a torn last record (a crash while it was
    /// written, never acknowledged) ends the log.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        guarded("open", || {
            let existed = path.exists();
            let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
            let mut store = Self::checked(db, &path.display().to_string())?;
            if !existed {
                // Make the new file's directory entry durable too.
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::File::open(dir)?.sync_all()?;
                }
            }
            let log_path = Self::log_path(path);
            if !existed || !log_path.exists() {
                if existed {
                    tracing::info!(log = %log_path.display(), "no safety log beside the store: a new one is created");
                }
                // A new database starts a new log (with a new key: nothing left from an
                // earlier one can be read as its records).
                safety_log::create_file(&log_path, safety_log::CAPACITY)?;
            }
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&log_path)?;
            store.attach_log(Box::new(LogFile(file)))?;
            Ok(store)
        })
    }

    /// The safety log of the store at `path`: `<path>.safetylog`.
    #[must_use]
    pub fn log_path(path: impl AsRef<Path>) -> PathBuf {
        let mut name = path.as_ref().as_os_str().to_owned();
        name.push(".safetylog");
        PathBuf::from(name)
    }

    /// A store on a redb backend with a safety log on a second backend (as [`RedbStore::open`]
    /// has on disk): for tests that take crash images of both, and custom backends. An empty
    /// `log` is formatted as a new log.
    pub fn with_backend_and_log(
        backend: impl redb::StorageBackend,
        log: impl redb::StorageBackend,
    ) -> Result<Self, StoreError> {
        let mut store = Self::with_backend(backend)?;
        guarded("open log", || {
            safety_log::format_device(&log, safety_log::CAPACITY)?;
            store.attach_log(Box::new(log))
        })?;
        Ok(store)
    }

    /// Reads the safety log on `device`; the records redb does not hold yet wait to be folded
    /// into its next transaction (and [`Storage::load`] reads them over redb's state).
    fn attach_log(&mut self, device: Box<dyn redb::StorageBackend>) -> Result<(), StoreError> {
        let (floor, initialised) = {
            let txn = self.engine.read()?;
            match open_read(&txn, META)? {
                Some(meta) => (
                    meta_get::<u64>(&meta, "log_seq")?.unwrap_or(0),
                    meta_get::<u64>(&meta, "chain")?.is_some(),
                ),
                None => (0, false),
            }
        };
        let (file, mut records) = SafetyLog::open(device, floor)?;
        if !initialised && records.iter().any(|(seq, _)| *seq > floor) {
            // A log left from another database (this one was never initialised): never read
            // over it, now or after it is initialised.
            tracing::warn!("the safety log holds records of another store: they are ignored");
            let txn = self.engine.db()?.begin_write()?;
            txn.open_table(META)?.insert("log_seq", &encode(&file.last_seq())[..])?;
            txn.commit()?;
            records.clear();
        }
        let mut unfolded = Unfolded::default();
        for (seq, entry) in records.into_iter().filter(|(seq, _)| *seq > floor) {
            unfolded.batch.append(WriteBatch {
                safety: entry.safety,
                blocks: entry.blocks,
                commits: Vec::new(),
            });
            unfolded.seq = seq;
        }
        if unfolded.seq > 0 {
            tracing::info!(records = unfolded.seq - floor, "safety log records replayed over the store");
        }
        self.engine.log = Some(Log { file: Mutex::new(file), unfolded: Mutex::new(unfolded) });
        Ok(())
    }

    /// The bytes of the safety log in use (its header page included; `None` without a log):
    /// how far it got since it last started over.
    #[must_use]
    pub fn safety_log_used(&self) -> Option<u64> {
        self.engine.log.as_ref().map(|l| lock(&l.file).used())
    }

    /// A store that lives in memory only (for tests and throw-away nodes): the same code as the
    /// file store, on an in-memory backend.
    /// Its writes skip redb's durable commit most of the time (there is no disk to make them
    /// durable on), and the consensus loop's own writes (safety state, own proposals) are held
    /// outside redb until the background writer's next transaction, so it costs less per write
    /// than a file store.
    pub fn in_memory() -> Result<Self, StoreError> {
        let mut store = Self::with_backend(MemoryBackend::default())?;
        store.engine.volatile = true;
        Ok(store)
    }

    /// A store on any redb storage backend (its bytes checked as by [`RedbStore::open`]).
    pub fn with_backend(backend: impl redb::StorageBackend) -> Result<Self, StoreError> {
        guarded("open", || {
            let db = Database::builder().set_cache_size(CACHE_BYTES).create_with_backend(backend)?;
            Self::checked(db, "custom backend")
        })
    }

    /// redb recovers from crashes by itself, but reads pages without checking their checksums:
    /// a file damaged outside redb would be read as it is. So every page is checked once when
    /// the store opens (about 0.2 s for a 257 MB store with a warm page cache).
    fn checked(db: Database, name: &str) -> Result<Self, StoreError> {
        // Owned by the store at once, so that closing it on an error below goes through the
        // store's guarded `Drop`: a panic while closing a damaged file is caught there, not
        // unwound past the error being returned (which would leak it).
        let mut store = RedbStore {
            engine: Engine {
                db: Some(db),
                volatile: false,
                undurable: AtomicU32::new(0),
                safety: Mutex::new(None),
                held: Mutex::new(WriteBatch::default()),
                txns: TxnOrder::default(),
                log: None,
            },
        };
        let db = store
            .engine
            .db
            .as_mut()
            .ok_or_else(|| StoreError::Corrupt { what: "database".into(), reason: "closed".into() })?;
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                store = name,
                "the store failed its integrity check and was repaired: if a commit slot was \
                 damaged, the last writes (and the safety state with them) may be rolled back"
            ),
            Err(e) => {
                return Err(StoreError::Corrupt {
                    what: "database file".into(),
                    reason: format!("integrity check failed: {e}"),
                })
            }
        }
        Ok(store)
    }
}

/// Runs `f`, turning a panic inside the database engine into [`StoreError::Corrupt`].
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        tracing::error!(operation = what, reason, "the database engine panicked: the file is damaged");
        Err(StoreError::Corrupt {
            what: format!("database file ({what})"),
            reason: format!("the database engine failed: {reason}"),
        })
    })
}

impl Storage for RedbStore {
    fn initialise(&self, genesis: &Genesis) -> Result<(), StoreError> {
        guarded("initialise", || self.engine.initialise(genesis))
    }
    fn load(&self) -> Result<Option<Stored>, StoreError> {
        guarded("load", || self.engine.load())
    }
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        guarded("write", || Storage::write(&self.engine, batch))
    }
    /// A transaction with `Durability::None`: redb keeps it out of the file's commit slots
    /// until the next durable commit, which makes it durable together with everything before
    /// it (one file, one order of transactions: a crash loses a suffix, never a hole).
    fn write_deferred(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        guarded("write_deferred", || self.engine.write_with(batch, Durability::None))
    }
    fn sync(&self) -> Result<(), StoreError> {
        guarded("sync", || self.engine.sync())
    }
    fn committed_block(&self, height: Height) -> Result<Option<CommittedEntry>, StoreError> {
        guarded("committed_block", || self.engine.committed_block(height))
    }
    fn retained_from(&self) -> Result<Height, StoreError> {
        guarded("retained_from", || self.engine.retained_from())
    }
    /// One transaction with `Durability::None`: it becomes durable with the next durable write
    /// (the consensus loop's), and a crash before that undoes it whole.
    fn prune(&self, below: Height, max_blocks: usize) -> Result<Height, StoreError> {
        guarded("prune", || self.engine.prune(below, max_blocks))
    }
    fn app_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        guarded("app_get", || self.engine.app_get(key))
    }
    fn tip(&self) -> Result<Option<(CommittedTip, ValidatorSet)>, StoreError> {
        guarded("tip", || self.engine.tip())
    }
    fn scan_app_state(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<CommittedTip, StoreError> {
        guarded("scan_app_state", || self.engine.scan_app_state(visit))
    }
    /// A redb read transaction: a consistent snapshot (pages it reads are not reused while it
    /// is open, so the file may grow by what is written meanwhile).
    fn app_state_view(&self) -> Result<Option<Box<dyn super::AppStateView>>, StoreError> {
        guarded("app_state_view", || {
            let txn = self.engine.read()?;
            let meta = open_read(&txn, META)?.ok_or(StoreError::NotInitialised)?;
            let tip = meta_require(&meta, "tip")?;
            drop(meta);
            Ok(Some(Box::new(RedbView { txn, tip }) as Box<dyn super::AppStateView>))
        })
    }
    fn staged(&self) -> Result<Option<super::Staged>, StoreError> {
        guarded("staged", || self.engine.staged())
    }
    fn stage_reset(&self, target: Option<&[u8]>) -> Result<(), StoreError> {
        guarded("stage_reset", || self.engine.stage_reset(target))
    }
    fn stage_chunk(&self, depth: u8, index: u32, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        guarded("stage_chunk", || self.engine.stage_chunk(depth, index, entries))
    }
    fn install_staged(&self, install: &super::SnapshotInstall) -> Result<(), StoreError> {
        guarded("install_staged", || self.engine.install_staged(install))
    }
}

/// A read transaction over the app state ([`Storage::app_state_view`]).
struct RedbView {
    txn: ReadTransaction,
    tip: CommittedTip,
}

impl super::AppStateView for RedbView {
    fn tip(&self) -> CommittedTip {
        self.tip
    }
    fn scan(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        guarded("scan view", || {
            if let Some(app) = open_read(&self.txn, APP)? {
                for item in app.iter()? {
                    let (k, v) = item?;
                    visit(k.value(), v.value());
                }
            }
            Ok(())
        })
    }
}

fn chunk_key(depth: u8, index: u32) -> u64 {
    (u64::from(depth) << 32) | u64::from(index)
}

impl Engine {
    fn staged(&self) -> Result<Option<super::Staged>, StoreError> {
        let txn = self.read()?;
        let Some(chunks) = open_read(&txn, STAGE_CHUNKS)? else { return Ok(None) };
        let Some(target) = chunks.get(STAGE_TARGET)?.map(|v| v.value().to_vec()) else { return Ok(None) };
        let mut done = Vec::new();
        for item in chunks.range(..STAGE_TARGET)? {
            let (k, _) = item?;
            let k = k.value();
            done.push(((k >> 32) as u8, k as u32));
        }
        Ok(Some((target, done)))
    }

    fn stage_reset(&self, target: Option<&[u8]>) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        {
            txn.delete_table(STAGE)?;
            txn.delete_table(STAGE_CHUNKS)?;
            let mut chunks = txn.open_table(STAGE_CHUNKS)?;
            txn.open_table(STAGE)?;
            if let Some(t) = target {
                chunks.insert(STAGE_TARGET, t)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn stage_chunk(&self, depth: u8, index: u32, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        // Durable at once (one fsync per chunk of about a megabyte), so a restart resumes
        // from every chunk staged; a crash never leaves half of one.
        let txn = self.db()?.begin_write()?;
        {
            let mut chunks = txn.open_table(STAGE_CHUNKS)?;
            if chunks.get(STAGE_TARGET)?.is_none() {
                return Err(StoreError::Corrupt { what: "stage".into(), reason: "no target staged".into() });
            }
            let mut stage = txn.open_table(STAGE)?;
            for (k, v) in entries {
                stage.insert(&k[..], &v[..])?;
            }
            chunks.insert(chunk_key(depth, index), &[][..])?;
        }
        txn.commit()?;
        Ok(())
    }

    fn install_staged(&self, install: &super::SnapshotInstall) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        let n = self.txns.begin();
        // The logged writes are replaced too (the safety state by the installed one, the
        // blocks dropped with the other uncommitted ones): redb is marked as holding every
        // record, and the log starts over after this durable commit.
        // Held until the commit: no other transaction can take them meanwhile (none can begin
        // before this one ends anyway).
        let mut logged = self.log.as_ref().map(|log| (lock(&log.file).last_seq(), lock(&log.unfolded)));
        {
            if let Some((seq, _)) = &logged {
                txn.open_table(META)?.insert("log_seq", &encode(seq)[..])?;
            }
            let mut meta = txn.open_table(META)?;
            {
                let chunks = txn.open_table(STAGE_CHUNKS)?;
                if chunks.get(STAGE_TARGET)?.is_none() {
                    return Err(StoreError::Corrupt {
                        what: "stage".into(),
                        reason: "nothing staged".into(),
                    });
                }
            }
            txn.delete_table(APP)?;
            let mut app = txn.open_table(APP)?;
            {
                let stage = txn.open_table(STAGE)?;
                for item in stage.iter()? {
                    let (k, v) = item?;
                    app.insert(k.value(), v.value())?;
                }
            }
            txn.delete_table(PENDING)?;
            txn.open_table(PENDING)?;
            let mut committed = txn.open_table(COMMITTED)?;
            // Every block below the new tip goes, except epochs' last blocks (with proofs).
            committed.retain(|_, v| {
                borsh::from_slice::<CommittedEntry>(v).is_ok_and(|(_, _, proof)| proof.is_some())
            })?;
            let none: Option<&hotstuff_core::EpochProof> = None;
            committed.insert(install.tip.height.0, &encode(&(&install.block, &install.qc, none))[..])?;
            meta.insert("tip", &encode(&install.tip)[..])?;
            meta.insert("retained_from", &encode(&install.tip.height.0)[..])?;
            meta.insert("safety", &encode(&install.safety)[..])?;
            txn.delete_table(STAGE)?;
            txn.delete_table(STAGE_CHUNKS)?;
        }
        txn.commit()?;
        self.txns.committed(n, Durability::Immediate);
        if let Some((seq, u)) = logged.as_mut() {
            u.batch = WriteBatch::default();
            u.seq = *seq;
            u.covered_by = u.covered_by.max(n);
        }
        Ok(())
    }
}

impl Engine {
    /// The durability of a write the caller needs durable: `Immediate`, except in a volatile
    /// store (see [`Engine::volatile`]).
    fn durable(&self) -> Durability {
        if self.volatile && self.undurable.fetch_add(1, Ordering::Relaxed) + 1 < VOLATILE_SYNC_EVERY {
            return Durability::None;
        }
        self.undurable.store(0, Ordering::Relaxed);
        Durability::Immediate
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt { what: "database".into(), reason: "closed".into() })
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db()?.begin_read()?)
    }
}

/// The backend of [`RedbStore::in_memory`]: fixed-size chunks, so that growing it (which an
/// archive store does for as long as it runs) neither copies what it holds, as a growing `Vec`
/// does when it reallocates, nor writes the zeros of the new part: a new chunk comes zeroed
/// from the allocator (`calloc`, fresh pages from the kernel). (redb's own in-memory backend
/// grows its buffer one pushed byte at a time.)
#[derive(Debug, Default)]
struct MemoryBackend(std::sync::RwLock<Chunks>);

/// The bytes of a [`MemoryBackend`]: `len` bytes in chunks of [`Chunks::SIZE`] (the last one
/// may reach past `len`; what lies there is zero).
#[derive(Debug, Default)]
struct Chunks {
    len: usize,
    chunks: Vec<Box<[u8]>>,
}

impl Chunks {
    /// 1 MiB: growth is rare, and a chunk is a whole number of redb pages.
    const SIZE: usize = 1 << 20;

    /// The chunk pieces covering `len` bytes from `offset` of a backend of `total` bytes:
    /// (chunk, start in it, length).
    fn pieces(
        total: usize,
        offset: u64,
        len: usize,
    ) -> Result<impl Iterator<Item = (usize, usize, usize)>, std::io::Error> {
        let start = usize::try_from(offset).map_err(|_| MemoryBackend::out_of_range())?;
        let end = start.checked_add(len).ok_or_else(MemoryBackend::out_of_range)?;
        if end > total {
            return Err(MemoryBackend::out_of_range());
        }
        let mut at = start;
        Ok(std::iter::from_fn(move || {
            (at < end).then(|| {
                let (chunk, within) = (at / Self::SIZE, at % Self::SIZE);
                let n = (Self::SIZE - within).min(end - at);
                at += n;
                (chunk, within, n)
            })
        }))
    }
}

impl MemoryBackend {
    fn out_of_range() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "out of the in-memory store's range")
    }

    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, Chunks> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl redb::StorageBackend for MemoryBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.read().unwrap_or_else(PoisonError::into_inner).len as u64)
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        let data = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::with_capacity(len);
        for (chunk, at, n) in Chunks::pieces(data.len, offset, len)? {
            out.extend_from_slice(&data.chunks[chunk][at..at + n]);
        }
        Ok(out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let len = usize::try_from(len).map_err(|_| Self::out_of_range())?;
        let mut data = self.lock();
        if len < data.len {
            // What is cut off must read as zeros if the store grows again.
            let keep = len.div_ceil(Chunks::SIZE);
            data.chunks.truncate(keep);
            if let Some(last) = data.chunks.last_mut().filter(|_| len % Chunks::SIZE != 0) {
                last[len % Chunks::SIZE..].fill(0);
            }
        }
        while data.chunks.len() * Chunks::SIZE < len {
            data.chunks.push(vec![0u8; Chunks::SIZE].into_boxed_slice());
        }
        data.len = len;
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), std::io::Error> {
        let mut data = self.lock();
        let mut from = 0;
        for (chunk, at, n) in Chunks::pieces(data.len, offset, bytes.len())? {
            data.chunks[chunk][at..at + n].copy_from_slice(&bytes[from..from + n]);
            from += n;
        }
        Ok(())
    }
}

/// redb's page cache; the default (1 GiB) is far more than a replica's working set.
const CACHE_BYTES: usize = 32 << 20;

fn encode<T: BorshSerialize>(value: &T) -> Vec<u8> {
    borsh::to_vec(value).unwrap_or_default()
}

fn decode<T: BorshDeserialize>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    borsh::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt { what: what.to_string(), reason: e.to_string() })
}

fn pending_key(height: Height, hash: &[u8; 32]) -> [u8; 40] {
    let mut k = [0u8; 40];
    let (h, rest) = k.split_at_mut(8);
    h.copy_from_slice(&height.0.to_be_bytes());
    rest.copy_from_slice(hash);
    k
}

/// Opens a table for reading; `None` if the store was never initialised.
fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn meta_get<T: BorshDeserialize>(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    meta.get(key)?.map(|v| decode(key, v.value())).transpose()
}

fn meta_require<T: BorshDeserialize>(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<T, StoreError> {
    meta_get(meta, key)?
        .ok_or_else(|| StoreError::Corrupt { what: key.to_string(), reason: "missing".into() })
}

impl Storage for Engine {
    fn initialise(&self, genesis: &Genesis) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            if let Some(chain) = meta_get::<u64>(&meta, "chain")? {
                if chain != genesis.chain.0 {
                    return Err(StoreError::WrongChain { stored: ChainId(chain), expected: genesis.chain });
                }
                let initial: ValidatorSet = meta_require(&meta, "initial_validators")?;
                if initial != genesis.validators {
                    return Err(StoreError::WrongGenesis);
                }
                return Ok(());
            }
            let tip = CommittedTip {
                hash: genesis_hash(genesis.chain, &genesis.validators),
                view: View(0),
                height: Height(0),
            };
            meta.insert("format", &encode(&FORMAT)[..])?;
            meta.insert("chain", &encode(&genesis.chain.0)[..])?;
            meta.insert("initial_validators", &encode(&genesis.validators)[..])?;
            meta.insert("tip", &encode(&tip)[..])?;
            let mut app = txn.open_table(APP)?;
            for (k, v) in &genesis.app_state {
                app.insert(&k[..], &v[..])?;
            }
            txn.open_table(PENDING)?;
            txn.open_table(COMMITTED)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn load(&self) -> Result<Option<Stored>, StoreError> {
        let txn = self.read()?;
        let Some(meta) = open_read(&txn, META)? else { return Ok(None) };
        let Some(chain) = meta_get::<u64>(&meta, "chain")? else { return Ok(None) };
        let format: u32 = meta_require(&meta, "format")?;
        if format != FORMAT {
            return Err(StoreError::Corrupt {
                what: "format".into(),
                reason: format!("unknown version {format}"),
            });
        }
        let tip: CommittedTip = meta_require(&meta, "tip")?;
        let mut blocks = Vec::new();
        if let Some(pending) = open_read(&txn, PENDING)? {
            for item in pending.iter()? {
                let (key, value) = item?;
                let record: BlockRecord = decode("pending block", value.value())?;
                if key.value() != pending_key(record.block.height, &record.block.hash().0) {
                    return Err(StoreError::Corrupt {
                        what: "pending block".into(),
                        reason: "stored under a key that does not match its height and hash".into(),
                    });
                }
                blocks.push(record);
            }
        }
        let mut stored = Stored {
            chain: ChainId(chain),
            initial_validators: meta_require(&meta, "initial_validators")?,
            safety: match self.volatile {
                true => self.safety.lock().unwrap_or_else(PoisonError::into_inner).clone(),
                false => meta_get(&meta, "safety")?,
            },
            tip,
            epoch: meta_get(&meta, "epoch")?,
            blocks,
        };
        self.merge_unfolded(&mut stored);
        Ok(Some(stored))
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if self.log_write(batch)? {
            return Ok(());
        }
        self.write_with(batch, self.durable())
    }

    fn sync(&self) -> Result<(), StoreError> {
        if self.txns.all_durable() && !self.has_unfolded() {
            return Ok(());
        }
        self.transaction(Durability::Immediate, None)
    }

    fn committed_block(&self, height: Height) -> Result<Option<CommittedEntry>, StoreError> {
        let txn = self.read()?;
        let Some(table) = open_read(&txn, COMMITTED)? else { return Ok(None) };
        let value = table.get(height.0)?;
        value.map(|v| decode("committed block", v.value())).transpose()
    }

    fn retained_from(&self) -> Result<Height, StoreError> {
        let txn = self.read()?;
        let Some(meta) = open_read(&txn, META)? else { return Ok(Height(1)) };
        Ok(Height(meta_get::<u64>(&meta, "retained_from")?.unwrap_or(1)))
    }

    fn prune(&self, below: Height, max_blocks: usize) -> Result<Height, StoreError> {
        let mut txn = self.db()?.begin_write()?;
        let n = self.txns.begin();
        txn.set_durability(Durability::None);
        let now = {
            let mut meta = txn.open_table(META)?;
            let from = meta_get::<u64>(&meta, "retained_from")?.unwrap_or(1);
            let Some(tip) = meta_get::<CommittedTip>(&meta, "tip")? else { return Ok(Height(from)) };
            // Never the tip itself: the committed chain always has its last block.
            let end = below.0.min(tip.height.0).min(from.saturating_add(max_blocks as u64));
            if end <= from {
                return Ok(Height(from));
            }
            let mut committed = txn.open_table(COMMITTED)?;
            for h in from..end {
                let ends_epoch = match committed.get(h)? {
                    Some(v) => {
                        let (_, _, proof): CommittedEntry = decode("committed block", v.value())?;
                        proof.is_some()
                    }
                    None => false,
                };
                if !ends_epoch {
                    committed.remove(h)?;
                }
            }
            meta.insert("retained_from", &encode(&end)[..])?;
            end
        };
        txn.commit()?;
        self.txns.committed(n, Durability::None);
        Ok(Height(now))
    }

    fn app_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let Some(table) = open_read(&txn, APP)? else { return Ok(None) };
        let value = table.get(key)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn tip(&self) -> Result<Option<(CommittedTip, ValidatorSet)>, StoreError> {
        let txn = self.read()?;
        let Some(meta) = open_read(&txn, META)? else { return Ok(None) };
        let Some(tip) = meta_get(&meta, "tip")? else { return Ok(None) };
        let validators = match meta_get::<EpochState>(&meta, "epoch")? {
            Some(epoch) => epoch.validators,
            None => meta_require(&meta, "initial_validators")?,
        };
        Ok(Some((tip, validators)))
    }

    fn scan_app_state(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<CommittedTip, StoreError> {
        let txn = self.read()?;
        let meta = open_read(&txn, META)?.ok_or(StoreError::NotInitialised)?;
        let tip = meta_require(&meta, "tip")?;
        if let Some(app) = open_read(&txn, APP)? {
            for item in app.iter()? {
                let (k, v) = item?;
                visit(k.value(), v.value());
            }
        }
        Ok(tip)
    }
}

impl Engine {
    /// Writes `batch` in one transaction (after the logged writes redb does not hold yet);
    /// with `Durability::Immediate` (the default, stated) `commit` returns only once the data
    /// is fsynced.
    fn write_with(&self, batch: &WriteBatch, durability: Durability) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.volatile {
            if let Some(s) = &batch.safety {
                *self.safety.lock().unwrap_or_else(PoisonError::into_inner) = Some(s.clone());
            }
            if batch.commits.is_empty() {
                if !batch.blocks.is_empty() {
                    lock(&self.held).append(WriteBatch {
                        safety: None,
                        blocks: batch.blocks.clone(),
                        commits: Vec::new(),
                    });
                }
                return Ok(());
            }
        }
        self.transaction(durability, Some(batch))
    }

    /// One write transaction: the logged writes redb does not hold yet, then `batch`.
    fn transaction(&self, durability: Durability, batch: Option<&WriteBatch>) -> Result<(), StoreError> {
        let mut txn = self.db()?.begin_write()?;
        let n = self.txns.begin();
        txn.set_durability(durability);
        let logged = self.log.as_ref().and_then(|log| {
            let mut u = lock(&log.unfolded);
            if u.batch.is_empty() {
                return None;
            }
            u.covered_by = u.covered_by.max(n);
            Some((std::mem::take(&mut u.batch), u.seq))
        });
        let held = match self.volatile {
            true => std::mem::take(&mut *lock(&self.held)),
            false => WriteBatch::default(),
        };
        // The committed tip after the whole transaction: an uncommitted block at or below it
        // (an own proposal logged or held since the last transaction, most often) would be
        // inserted only to be dropped again by `batch`'s commits, so it is not written at all.
        let final_tip = batch.and_then(WriteBatch::tip).map(|t| t.height);
        let result = (|| -> Result<(), StoreError> {
            if let Some((logged, seq)) = &logged {
                self.apply(&txn, logged, final_tip)?;
                txn.open_table(META)?.insert("log_seq", &encode(seq)[..])?;
            }
            if !held.is_empty() {
                self.apply(&txn, &held, final_tip)?;
            }
            if let Some(batch) = batch {
                self.apply(&txn, batch, final_tip)?;
            }
            txn.commit()?;
            Ok(())
        })();
        if result.is_err() && logged.is_some() {
            if let Some(log) = &self.log {
                lock(&log.unfolded).broken = true;
            }
        }
        if result.is_err() && !held.is_empty() {
            // Still to be written, before anything held since.
            let mut now = lock(&self.held);
            let later = std::mem::replace(&mut *now, held);
            now.append(later);
        }
        result?;
        self.txns.committed(n, durability);
        Ok(())
    }

    /// Applies `batch` in `txn` (see [`WriteBatch`] for the order). `final_tip`: the committed
    /// height the transaction ends at, if a later batch of it commits (its uncommitted blocks
    /// at or below are skipped: the later batch would drop them).
    fn apply(
        &self,
        txn: &redb::WriteTransaction,
        batch: &WriteBatch,
        final_tip: Option<Height>,
    ) -> Result<(), StoreError> {
        let mut pending = txn.open_table(PENDING)?;
        let new_tip = batch.tip().map(|t| t.height).max(final_tip);
        // A block at or below the new tip would be dropped below: it is written once, as
        // a committed block, or not at all (a branch the commits abandoned).
        for r in batch.blocks.iter().filter(|r| new_tip.is_none_or(|t| r.block.height > t)) {
            pending.insert(&pending_key(r.block.height, &r.block.hash().0)[..], &encode(r)[..])?;
        }
        let mut meta = txn.open_table(META)?;
        if let Some(tip) = batch.tip() {
            let mut committed = txn.open_table(COMMITTED)?;
            let mut app = txn.open_table(APP)?;
            for c in &batch.commits {
                let proof = c.epoch_change.as_ref().map(|e| &e.proof);
                committed.insert(c.block.height.0, &encode(&(&c.block, &c.certificate, proof))[..])?;
                if let Some(change) = &c.epoch_change {
                    meta.insert("epoch", &encode(&change.state)[..])?;
                }
                for (k, v) in c.outcome.app_updates.0.iter() {
                    match v {
                        Some(v) => app.insert(&k[..], &v[..])?,
                        None => app.remove(&k[..])?,
                    };
                }
            }
            let end = pending_key(Height(tip.height.0.saturating_add(1)), &[0; 32]);
            // Most transactions have nothing stored at or below the tip (see `final_tip`):
            // one lookup instead of a deleting walk.
            let stale = pending.first()?.is_some_and(|(k, _)| k.value() < &end[..]);
            if stale {
                pending.retain_in::<&[u8], _>(..&end[..], |_, _| false)?;
            }
            meta.insert("tip", &encode(&tip)[..])?;
        }
        if let Some(s) = batch.safety.as_ref().filter(|_| !self.volatile) {
            meta.insert("safety", &encode(s)[..])?;
        }
        Ok(())
    }

    /// A durable write through the safety log (see [`RedbStore::open`]): `Ok(false)` if the
    /// batch is not for the log (it has commits, or no safety state) or does not fit in it.
    fn log_write(&self, batch: &WriteBatch) -> Result<bool, StoreError> {
        let Some(log) = self.log.as_ref().filter(|_| batch.commits.is_empty() && batch.safety.is_some())
        else {
            return Ok(false);
        };
        let mut file = lock(&log.file);
        {
            // Everything in the log is durable in redb: start over.
            let u = lock(&log.unfolded);
            if u.batch.is_empty() && !u.broken && self.txns.durable.load(Ordering::Acquire) >= u.covered_by {
                file.rewind();
            }
        }
        let Some(seq) = file.append(&batch.safety, &batch.blocks)? else { return Ok(false) };
        let mut u = lock(&log.unfolded);
        u.batch.append(WriteBatch {
            safety: batch.safety.clone(),
            blocks: batch.blocks.clone(),
            commits: Vec::new(),
        });
        u.seq = seq;
        Ok(true)
    }

    /// True if logged (or, in a volatile store, held) writes wait for a redb transaction.
    fn has_unfolded(&self) -> bool {
        self.log.as_ref().is_some_and(|log| !lock(&log.unfolded).batch.is_empty())
            || !lock(&self.held).is_empty()
    }

    /// Reads the logged writes redb does not hold yet over `stored`: the newer safety state
    /// (by the core's ordering; a logged one is never older unless the files were mixed up),
    /// and the logged blocks above the committed tip that redb does not have.
    fn merge_unfolded(&self, stored: &mut Stored) {
        let held = lock(&self.held);
        let more =
            held.blocks.iter().filter(|r| r.block.height > stored.tip.height).cloned().collect::<Vec<_>>();
        drop(held);
        if !more.is_empty() {
            for r in more {
                let hash = r.block.hash();
                if !stored.blocks.iter().any(|b| b.block.hash() == hash) {
                    stored.blocks.push(r);
                }
            }
            stored.blocks.sort_by_key(|r| (r.block.height, r.block.hash().0));
        }
        let Some(log) = &self.log else { return };
        let u = lock(&log.unfolded);
        if let Some(logged) = &u.batch.safety {
            match &stored.safety {
                Some(kept) if safety_log::older(logged, kept) => {
                    tracing::warn!(
                        "the safety log holds an older safety state than the store: the store's is kept"
                    )
                }
                _ => stored.safety = Some(logged.clone()),
            }
        }
        for r in &u.batch.blocks {
            let hash = r.block.hash();
            if r.block.height > stored.tip.height && !stored.blocks.iter().any(|b| b.block.hash() == hash) {
                stored.blocks.push(r.clone());
            }
        }
        stored.blocks.sort_by_key(|r| (r.block.height, r.block.hash().0));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::{Chunks, MemoryBackend};
    use redb::StorageBackend;

    #[test]
    fn the_chunked_memory_backend_reads_what_was_written_across_chunks_and_zeros_past_a_shrink() {
        let m = MemoryBackend::default();
        let size = Chunks::SIZE as u64;
        m.set_len(2 * size + 10).unwrap();
        assert_eq!(m.len().unwrap(), 2 * size + 10);
        let bytes: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8 + 1).collect();
        // Across the first chunk boundary, and up to the very end.
        m.write(size - 1000, &bytes).unwrap();
        m.write(2 * size + 10 - 5, &bytes[..5]).unwrap();
        assert_eq!(m.read(size - 1000, 3000).unwrap(), bytes);
        assert_eq!(m.read(2 * size + 5, 5).unwrap(), &bytes[..5]);
        assert_eq!(m.read(0, 4).unwrap(), vec![0; 4], "unwritten bytes are zero");
        // Past the end: an error, nothing written.
        assert!(m.read(2 * size + 6, 5).is_err());
        assert!(m.write(2 * size + 6, &bytes[..5]).is_err());
        assert!(m.read(u64::MAX, 1).is_err());
        // A shrink into a chunk, then growth: the cut-off bytes read as zeros.
        m.set_len(size - 500).unwrap();
        assert!(m.read(size - 1000, 1000).is_err());
        m.set_len(2 * size).unwrap();
        assert_eq!(m.read(size - 1000, 500).unwrap(), &bytes[..500]);
        assert_eq!(m.read(size - 500, 2500).unwrap(), vec![0; 2500]);
    }
}
