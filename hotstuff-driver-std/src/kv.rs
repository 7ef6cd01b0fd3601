//! A replicated key-value store: the example app of this crate (used by the `kv_cluster`
//! example and the `hotstuff-node` binary).
//!
//! Transactions put or delete a key. A block's payload is a borsh `Vec<Tx>`; its outcome sets
//! `kv/<key>` for each put, deletes it for each delete, and adds the number of transactions to
//! the counter `meta/txs` (read through the speculative state, so it exercises
//! [`BlockContext::get`]). Clients submit to one node's [`Mempool`]; that node proposes the
//! transactions when it leads, and proposes them again if their block is abandoned.
//!
//! [`ClientServer`] and [`Client`] speak a small line protocol over TCP:
//! `PUT <key> <value>`, `DEL <key>`, `GET <key>` and `STATUS`, answered by `OK`, `VALUE <v>`,
//! `NONE`, `STATUS view=.. leader=.. height=.. txs=..` or `ERR <reason>`. Keys and values are
//! whitespace-free UTF-8.

use crate::app::{App, BlockContext, Produced};
use crate::error::StoreError;
use crate::node::{Reader, Status};
use borsh::{BorshDeserialize, BorshSerialize};
use hotstuff_core::{AppOutcome, AppStateUpdates, Block, CommittedBlock, PublicKey, View};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest key, in bytes.
pub const MAX_KEY: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE: usize = 4096;
/// Most transactions in one block. Validation checks this constant, never a local setting:
/// every replica must reach the same verdict.
pub const MAX_BLOCK_TXS: usize = 10_000;
/// The app-state key of the committed transaction counter (u64 LE).
pub const TX_COUNT_KEY: &[u8] = b"meta/txs";

/// A transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize)]
pub enum Tx {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Deletes `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl BorshDeserialize for Tx {
    /// The derived layout, with the key and value read within [`MAX_KEY`] and [`MAX_VALUE`]:
    /// an oversized length prefix is refused before anything is allocated for it.
    fn deserialize_reader<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<Self> {
        let key = |r: &mut R| hotstuff_core::codec::read_bytes(r, MAX_KEY);
        match u8::deserialize_reader(reader)? {
            0 => {
                Ok(Tx::Put { key: key(reader)?, value: hotstuff_core::codec::read_bytes(reader, MAX_VALUE)? })
            }
            1 => Ok(Tx::Delete { key: key(reader)? }),
            _ => Err(borsh::io::Error::new(borsh::io::ErrorKind::InvalidData, "unknown transaction kind")),
        }
    }
}

/// Decodes a block payload into its transactions: `None` unless it is a canonical borsh
/// `Vec<Tx>` of 1 to [`MAX_BLOCK_TXS`] valid transactions (the count is checked before any
/// transaction is read). An empty payload is an empty block, not a payload: the caller
/// handles it.
#[must_use]
pub fn decode_payload(payload: &[u8]) -> Option<Vec<Tx>> {
    let mut reader = payload;
    let txs: Vec<Tx> = hotstuff_core::codec::read_vec(&mut reader, MAX_BLOCK_TXS).ok()?;
    (reader.is_empty() && !txs.is_empty() && txs.iter().all(Tx::valid)).then_some(txs)
}

impl Tx {
    fn valid(&self) -> bool {
        match self {
            Tx::Put { key, value } => !key.is_empty() && key.len() <= MAX_KEY && value.len() <= MAX_VALUE,
            Tx::Delete { key } => !key.is_empty() && key.len() <= MAX_KEY,
        }
    }
}

/// The app-state key that holds the kv key `key`.
#[must_use]
pub fn state_key(key: &[u8]) -> Vec<u8> {
    let mut k = b"kv/".to_vec();
    k.extend_from_slice(key);
    k
}

/// The committed transaction count in a state value (`None`: 0).
#[must_use]
pub fn tx_count(value: Option<&[u8]>) -> u64 {
    value.and_then(|v| v.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Why a transaction was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The mempool holds its capacity.
    #[error("mempool full")]
    Full,
    /// An empty or oversized key or value.
    #[error("invalid transaction (key 1..={MAX_KEY} bytes, value <= {MAX_VALUE} bytes)")]
    Invalid,
}

/// Transactions waiting to be proposed by this node, and its commit statistics. Clone it to
/// submit from other threads.
#[derive(Clone)]
pub struct Mempool(Arc<Mutex<Pool>>);

struct Pool {
    queue: VecDeque<(Tx, Instant)>,
    /// Transactions this node proposed, by the view of their block.
    in_flight: BTreeMap<View, Vec<(Tx, Instant)>>,
    me: Option<PublicKey>,
    capacity: usize,
    committed: u64,
    latencies: Vec<Duration>,
}

/// Commit statistics of the transactions a node proposed.
#[derive(Clone, Debug, Default)]
pub struct MempoolStats {
    /// Transactions committed so far.
    pub committed: u64,
    /// Submit-to-commit latencies since the last call (at the proposer).
    pub latencies: Vec<Duration>,
    /// Transactions waiting or in uncommitted blocks.
    pub pending: usize,
}

impl Mempool {
    /// An empty mempool holding at most `capacity` transactions.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Mempool(Arc::new(Mutex::new(Pool {
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            me: None,
            capacity,
            committed: 0,
            latencies: Vec::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a transaction.
    pub fn submit(&self, tx: Tx) -> Result<(), SubmitError> {
        if !tx.valid() {
            return Err(SubmitError::Invalid);
        }
        let mut p = self.lock();
        if p.queue.len() + p.in_flight.values().map(Vec::len).sum::<usize>() >= p.capacity {
            return Err(SubmitError::Full);
        }
        p.queue.push_back((tx, Instant::now()));
        Ok(())
    }

    /// Commit counts and the latencies recorded since the last call.
    pub fn take_stats(&self) -> MempoolStats {
        let mut p = self.lock();
        let pending = p.queue.len() + p.in_flight.values().map(Vec::len).sum::<usize>();
        MempoolStats { committed: p.committed, latencies: std::mem::take(&mut p.latencies), pending }
    }

    /// Takes up to `max` transactions for a block of `view`.
    fn take(&self, me: PublicKey, view: View, max: usize) -> Vec<Tx> {
        let mut p = self.lock();
        p.me = Some(me);
        let n = p.queue.len().min(max);
        let batch: Vec<(Tx, Instant)> = p.queue.drain(..n).collect();
        let txs = batch.iter().map(|(t, _)| t.clone()).collect();
        if !batch.is_empty() {
            p.in_flight.insert(view, batch);
        }
        txs
    }

    /// Records committed blocks; transactions of our blocks that can no longer commit (a view
    /// at or below the committed one that is not on the chain) go back to the queue.
    fn committed(&self, blocks: &[CommittedBlock]) {
        let mut p = self.lock();
        let now = Instant::now();
        for b in blocks {
            if Some(b.block.proposer) == p.me {
                if let Some(batch) = p.in_flight.remove(&b.block.view) {
                    p.committed += batch.len() as u64;
                    let lat = batch.iter().map(|(_, at)| now.duration_since(*at));
                    p.latencies.extend(lat);
                }
            }
        }
        if let Some(last) = blocks.last() {
            let keep = p.in_flight.split_off(&last.block.view.next());
            let abandoned = std::mem::replace(&mut p.in_flight, keep);
            for (_, batch) in abandoned.into_iter().rev() {
                for item in batch.into_iter().rev() {
                    p.queue.push_front(item);
                }
            }
        }
    }
}

/// The key-value app.
pub struct KvApp {
    mempool: Mempool,
    max_block_txs: usize,
}

impl KvApp {
    /// An app proposing from `mempool`, at most `max_block_txs` transactions per block (and
    /// never more than [`MAX_BLOCK_TXS`]).
    #[must_use]
    pub fn new(mempool: Mempool, max_block_txs: usize) -> Self {
        KvApp { mempool, max_block_txs: max_block_txs.clamp(1, MAX_BLOCK_TXS) }
    }
}

/// The outcome of `txs` on the state of `ctx`'s parent.
fn apply(ctx: &BlockContext<'_>, txs: &[Tx]) -> Result<AppOutcome, StoreError> {
    let mut updates = AppStateUpdates::default();
    for tx in txs {
        match tx {
            Tx::Put { key, value } => updates.insert(state_key(key), value.clone()),
            Tx::Delete { key } => updates.delete(state_key(key)),
        }
    }
    let count = tx_count(ctx.get(TX_COUNT_KEY)?.as_deref()) + txs.len() as u64;
    updates.insert(TX_COUNT_KEY.to_vec(), count.to_le_bytes().to_vec());
    Ok(AppOutcome { app_updates: updates, validator_updates: Default::default() })
}

impl App for KvApp {
    fn produce_block(&mut self, ctx: &BlockContext<'_>) -> Produced {
        let txs = self.mempool.take(ctx.me, ctx.view, self.max_block_txs);
        if txs.is_empty() {
            return Produced::default();
        }
        match apply(ctx, &txs) {
            Ok(outcome) => Produced { payload: borsh::to_vec(&txs).unwrap_or_default(), outcome },
            Err(error) => {
                tracing::error!(%error, "cannot read app state; proposing an empty block");
                Produced::default()
            }
        }
    }

    fn validate_block(&mut self, ctx: &BlockContext<'_>, block: &Block) -> Option<AppOutcome> {
        if block.payload.is_empty() {
            return Some(AppOutcome::default());
        }
        let txs = decode_payload(&block.payload)?;
        apply(ctx, &txs).map_err(|error| tracing::error!(%error, "cannot read app state")).ok()
    }

    fn committed(&mut self, blocks: &[CommittedBlock]) {
        self.mempool.committed(blocks);
    }
}

/// Lowercase hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Longest request line, in bytes.
const MAX_LINE: usize = MAX_KEY + MAX_VALUE + 16;

/// Most clients served at once.
const MAX_CLIENTS: usize = 64;

/// Serves the line protocol on a listener: a thread per client (at most 64 at once).
pub struct ClientServer {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl ClientServer {
    /// Serves clients of `mempool` (writes), `reader` (reads) and `status` on `listener`.
    pub fn start(
        listener: TcpListener,
        mempool: Mempool,
        reader: Reader,
        status: impl Fn() -> Status + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let status = Arc::new(status);
        let active = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new().name("kv-clients".into()).spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Acquire) {
                    break;
                }
                let Ok(mut stream) = conn else { continue };
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    tracing::warn!("too many clients; connection refused");
                    let _ = stream.write_all(b"ERR too many clients\n");
                    continue;
                }
                let (m, r, s, a) = (mempool.clone(), reader.clone(), status.clone(), active.clone());
                let spawned = std::thread::Builder::new().name("kv-client".into()).spawn(move || {
                    if let Err(e) = serve(stream, &m, &r, &*s) {
                        tracing::debug!(error = %e, "client connection ended");
                    }
                    a.fetch_sub(1, Ordering::AcqRel);
                });
                if spawned.is_err() {
                    tracing::warn!("cannot spawn a client thread");
                }
            }
        })?;
        Ok(ClientServer { stop, addr, thread: Some(thread) })
    }

    /// The address it serves on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ClientServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    mempool: &Mempool,
    reader: &Reader,
    status: &dyn Fn() -> Status,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut lines).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if n > MAX_LINE && line.last() != Some(&b'\n') {
            // The rest of the line is not a command: say why and close the connection.
            out.write_all(b"ERR line too long\n")?;
            return Ok(());
        }
        let reply = match std::str::from_utf8(&line) {
            Ok(text) => answer(text.trim(), mempool, reader, status),
            Err(_) => "ERR not UTF-8".to_string(),
        };
        out.write_all(reply.as_bytes())?;
        out.write_all(b"\n")?;
    }
}

fn answer(line: &str, mempool: &Mempool, reader: &Reader, status: &dyn Fn() -> Status) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let submitted = |tx| match mempool.submit(tx) {
        Ok(()) => "OK".to_string(),
        Err(e) => format!("ERR {e}"),
    };
    match words.as_slice() {
        ["PUT", key, value] => {
            submitted(Tx::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() })
        }
        ["DEL", key] => submitted(Tx::Delete { key: key.as_bytes().to_vec() }),
        ["GET", key] => match reader.get(&state_key(key.as_bytes())) {
            Ok(Some(v)) => format!("VALUE {}", String::from_utf8_lossy(&v)),
            Ok(None) => "NONE".to_string(),
            Err(e) => format!("ERR {e}"),
        },
        ["STATUS"] => {
            let s = status();
            let txs = reader.get(TX_COUNT_KEY).ok().flatten();
            format!(
                "STATUS view={} leader={} height={} txs={} running={}",
                s.view.0,
                hex(&s.leader.0),
                s.committed.0,
                tx_count(txs.as_deref()),
                s.running
            )
        }
        _ => "ERR unknown command (PUT k v | DEL k | GET k | STATUS)".to_string(),
    }
}

/// A client of [`ClientServer`].
pub struct Client {
    out: TcpStream,
    lines: BufReader<TcpStream>,
}

/// A node's answer to `STATUS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteStatus {
    /// The node's view.
    pub view: u64,
    /// The leader of that view (hex).
    pub leader: String,
    /// The committed height.
    pub height: u64,
    /// Committed transactions.
    pub txs: u64,
}

impl Client {
    /// Connects (with a timeout on every request).
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> std::io::Result<Self> {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
        let out = TcpStream::connect_timeout(&addr, timeout)?;
        out.set_read_timeout(Some(timeout))?;
        out.set_write_timeout(Some(timeout))?;
        let lines = BufReader::new(out.try_clone()?);
        Ok(Client { out, lines })
    }

    fn request(&mut self, line: &str) -> std::io::Result<String> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        let mut reply = String::new();
        (&mut self.lines).take(MAX_LINE as u64 + 1).read_line(&mut reply)?;
        if reply.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let reply = reply.trim_end().to_string();
        match reply.strip_prefix("ERR ") {
            Some(e) => Err(std::io::Error::other(e.to_string())),
            None => Ok(reply),
        }
    }

    /// Submits a put.
    pub fn put(&mut self, key: &str, value: &str) -> std::io::Result<()> {
        self.request(&format!("PUT {key} {value}")).map(drop)
    }

    /// Submits a delete.
    pub fn delete(&mut self, key: &str) -> std::io::Result<()> {
        self.request(&format!("DEL {key}")).map(drop)
    }

    /// Reads a committed value.
    pub fn get(&mut self, key: &str) -> std::io::Result<Option<String>> {
        let reply = self.request(&format!("GET {key}"))?;
        Ok(reply.strip_prefix("VALUE ").map(str::to_string))
    }

    /// The node's progress.
    pub fn status(&mut self) -> std::io::Result<RemoteStatus> {
        let reply = self.request("STATUS")?;
        let mut s = RemoteStatus::default();
        for part in reply.split_whitespace().skip(1) {
            match part.split_once('=') {
                Some(("view", v)) => s.view = v.parse().unwrap_or(0),
                Some(("leader", v)) => s.leader = v.to_string(),
                Some(("height", v)) => s.height = v.parse().unwrap_or(0),
                Some(("txs", v)) => s.txs = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotstuff_core::{BlockHash, Epoch, Height, QuorumCertificate};

    fn committed(view: u64, proposer: PublicKey) -> CommittedBlock {
        let qc = QuorumCertificate::genesis(BlockHash::default());
        CommittedBlock {
            block: Block {
                epoch: Epoch(0),
                view: View(view),
                height: Height(view),
                justify: qc.clone(),
                proposer,
                payload: Vec::new(),
            },
            hash: BlockHash::default(),
            certificate: qc,
            outcome: AppOutcome::default(),
            epoch_change: None,
        }
    }

    fn put(k: &str) -> Tx {
        Tx::Put { key: k.as_bytes().to_vec(), value: b"v".to_vec() }
    }

    #[test]
    fn mempool_requeues_transactions_of_abandoned_blocks_and_counts_committed_ones() {
        let me = PublicKey([1; 32]);
        let other = PublicKey([2; 32]);
        let pool = Mempool::new(3);
        for k in ["a", "b", "c"] {
            pool.submit(put(k)).unwrap();
        }
        assert_eq!(pool.submit(put("d")), Err(SubmitError::Full));
        assert_eq!(pool.submit(Tx::Delete { key: Vec::new() }), Err(SubmitError::Invalid));

        assert_eq!(pool.take(me, View(5), 2), vec![put("a"), put("b")]);
        assert_eq!(pool.take(me, View(9), 2), vec![put("c")]);
        assert!(pool.take(me, View(10), 2).is_empty(), "in-flight transactions are not proposed twice");

        // Another leader's block at view 7 commits: our block of view 5 can no longer commit, so
        // its transactions go back to the front of the queue; the one of view 9 stays in flight.
        pool.committed(&[committed(7, other)]);
        let s = pool.take_stats();
        assert_eq!((s.committed, s.pending), (0, 3));
        assert_eq!(pool.take(me, View(11), 5), vec![put("a"), put("b")]);

        // Our blocks of views 9 and 11 commit: three transactions with their latencies.
        pool.committed(&[committed(9, me), committed(11, me)]);
        let s = pool.take_stats();
        assert_eq!((s.committed, s.pending, s.latencies.len()), (3, 0, 3));
        assert!(pool.take_stats().latencies.is_empty(), "latencies are handed out once");
    }
}

#[cfg(test)]
mod client_protocol_tests {
    use super::*;
    use crate::storage::RedbStore;

    fn server() -> ClientServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let reader = Reader::new(Arc::new(RedbStore::in_memory().unwrap()));
        let status = || Status {
            view: View(1),
            leader: PublicKey([0; 32]),
            committed: hotstuff_core::Height(0),
            high_qc: View(0),
            running: true,
        };
        ClientServer::start(listener, Mempool::new(16), reader, status).unwrap()
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    }

    #[test]
    fn bad_lines_get_an_error_and_an_overlong_line_ends_the_connection() {
        let server = server();
        let addr = server.local_addr();
        // Invalid UTF-8 is answered, and the connection goes on.
        assert_eq!(exchange(addr, b"PUT k \xff\xfe\nPUT a b\n"), "ERR not UTF-8\nOK\n");
        // An overlong line is refused and its rest never read as commands.
        let mut long = b"PUT k ".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE));
        long.extend_from_slice(b"\nPUT c d\n");
        assert_eq!(exchange(addr, &long), "ERR line too long\n");
        // A line of exactly the limit is served.
        let mut exact = b"DEL ".to_vec();
        exact.extend(std::iter::repeat_n(b'k', MAX_LINE - 5));
        exact.push(b'\n');
        assert_eq!(exact.len(), MAX_LINE);
        assert!(exchange(addr, &exact).starts_with("ERR"), "the key is over MAX_KEY: refused by the mempool");
        assert_eq!(exchange(addr, b"NOPE\n"), "ERR unknown command (PUT k v | DEL k | GET k | STATUS)\n");
    }
}
