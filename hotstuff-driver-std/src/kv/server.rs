//! The client port: serves the line protocol of [`super::client`] over TCP, a thread per
//! connection, within [`ClientLimits`]: connections in total and per source address, a
//! deadline for each whole request line (a client trickling bytes is cut off when it runs out,
//! not when it stops sending), an idle timeout, a write timeout, and a share of the mempool per
//! connection; a connection whose writes are refused as busy is read more and more slowly
//! (5 ms after a refusal, doubling up to 500 ms while they go on), so a client that floods a
//! full node costs it little. The last few connection slots are kept for reads: a connection accepted into
//! them serves `GET`, `WAIT` and `STATUS`, and answers writes with `ERR busy`. Refused connections get
//! one `ERR busy: too many connections ...` line and are counted; they are logged at a bounded rate.

use super::mempool::{Mempool, Quota};
use super::payload::{hex, state_key, tx_count, tx_id, Tx, MAX_KEY, MAX_VALUE, TX_COUNT_KEY};
use super::protocol::{check_key, check_value, parse_id, MAX_LINE, MAX_WAIT};
use super::receipt::{wait_for_commit, Receipt};
use crate::net::admission::Admission;
use crate::node::{Reader, Status};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Limits of the client port (see each field for its default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Connections served at once (default 64).
    pub max_clients: usize,
    /// Connections served at once from one source address (default 16).
    pub max_clients_per_ip: usize,
    /// Of `max_clients`, the slots kept for reads (default 8): a connection accepted while only
    /// these are free serves `GET`, `WAIT` and `STATUS`, and answers `PUT` and `DEL` with
    /// `ERR busy`.
    pub read_reserve: usize,
    /// Time a request line may take to arrive whole, from its first byte (default 10 s).
    pub line_timeout: Duration,
    /// Time a connection may stay without a request (default 60 s). While only the read
    /// reserve is free, idle connections get `line_timeout` instead, so idle clients cannot
    /// keep every slot.
    pub idle_timeout: Duration,
    /// Time a reply may take to be written (default 10 s); a client that does not read its
    /// replies is disconnected.
    pub write_timeout: Duration,
    /// Transactions one connection may hold in the mempool at once (default 10,000).
    pub max_pending_txs: usize,
    /// Bytes one connection may hold in the mempool at once (default 8 MiB, counted as the
    /// mempool counts them).
    pub max_pending_bytes: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_clients: 64,
            max_clients_per_ip: 16,
            read_reserve: 8,
            line_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_pending_txs: 10_000,
            max_pending_bytes: 8 << 20,
        }
    }
}

/// Serves the line protocol on a listener: a thread per client, within [`ClientLimits`].
pub struct ClientServer {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    admission: Arc<Admission>,
    thread: Option<JoinHandle<()>>,
}

/// What every connection's thread shares.
struct Shared {
    mempool: Mempool,
    reader: Reader,
    status: Box<dyn Fn() -> Status + Send + Sync>,
    limits: ClientLimits,
    next_id: AtomicU64,
    admission: Arc<Admission>,
    /// Idle connections closing to relieve a crowded port, whose slots are not yet free.
    shedding: std::sync::Mutex<usize>,
    /// Signed transactions queued here, not yet committed (per-client sequence).
    submissions: super::auth::Submissions,
}

impl Shared {
    /// True when only the read reserve is left: idle connections then get the line timeout
    /// instead of the idle timeout, so that idle clients cannot keep every slot.
    fn crowded(&self) -> bool {
        self.crowded_with(*self.lock_shedding())
    }

    fn crowded_with(&self, shedding: usize) -> bool {
        let l = &self.limits;
        self.admission.pending().saturating_sub(shedding) + l.read_reserve.max(1) >= l.max_clients
    }

    fn lock_shedding(&self) -> std::sync::MutexGuard<'_, usize> {
        self.shedding.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides, atomically with the other connections, that an idle connection is closed to
    /// relieve a crowded port; false if the connections already closing relieve it.
    fn try_shed(&self) -> bool {
        let mut shedding = self.lock_shedding();
        let crowded = self.crowded_with(*shedding);
        if crowded {
            *shedding += 1;
        }
        crowded
    }
}

impl ClientServer {
    /// Serves clients of `mempool` (writes), `reader` (reads) and `status` on `listener`, with
    /// the default [`ClientLimits`].
    pub fn start(
        listener: TcpListener,
        mempool: Mempool,
        reader: Reader,
        status: impl Fn() -> Status + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        Self::start_with(listener, mempool, reader, status, ClientLimits::default())
    }

    /// Like [`ClientServer::start`] with these limits.
    pub fn start_with(
        listener: TcpListener,
        mempool: Mempool,
        reader: Reader,
        status: impl Fn() -> Status + Send + Sync + 'static,
        limits: ClientLimits,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let admission = Admission::new("client", limits.max_clients, limits.max_clients_per_ip);
        let adm = admission.clone();
        let shared = Arc::new(Shared {
            mempool,
            reader,
            status: Box::new(status),
            limits,
            next_id: AtomicU64::new(0),
            admission: admission.clone(),
            shedding: std::sync::Mutex::new(0),
            submissions: super::auth::Submissions::default(),
        });
        let thread = std::thread::Builder::new().name("kv-clients".into()).spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Acquire) {
                    break;
                }
                match conn {
                    Ok(stream) => accept(&shared, &adm, stream),
                    Err(e) => {
                        tracing::debug!(error = %e, "client accept failed");
                        // Out of file descriptors and the like: do not spin on it.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        })?;
        Ok(ClientServer { stop, addr, admission, thread: Some(thread) })
    }

    /// The address it serves on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections served now.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.admission.pending()
    }

    /// Connections refused so far (over a limit).
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.admission.refusals().total()
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

/// Admits a connection (or refuses it with one line) and starts its thread.
fn accept(shared: &Arc<Shared>, admission: &Arc<Admission>, mut stream: TcpStream) {
    let Ok(addr) = stream.peer_addr() else { return };
    let limits = &shared.limits;
    let writable = admission.pending() + limits.read_reserve.min(limits.max_clients - 1) < limits.max_clients;
    let slot = match admission.admit(addr.ip()) {
        Ok(slot) => slot,
        Err(error) => {
            let reply = format!("ERR busy: {error}\n");
            if admission.refusals().record(error.kind()) {
                tracing::warn!(%addr, %error, "client connection refused (further refusals are counted)");
            }
            // Never wait on a refused client: the reply fits the socket's send buffer.
            let _ = stream.set_nonblocking(true);
            let _ = stream.write_all(reply.as_bytes());
            return;
        }
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let sh = shared.clone();
    let spawned = std::thread::Builder::new().name("kv-client".into()).spawn(move || {
        let mut shed = false;
        if let Err(e) = serve(&stream, &sh, id, writable, &mut shed) {
            tracing::debug!(%addr, error = %e, "client connection ended");
        }
        drop(slot);
        if shed {
            let mut shedding = sh.lock_shedding();
            *shedding = shedding.saturating_sub(1);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot spawn a client thread");
    }
}

/// The first pause after a write refused as busy; it doubles per further refusal.
const BUSY_PAUSE_MIN: Duration = Duration::from_millis(5);
/// The longest pause after a write refused as busy.
const BUSY_PAUSE_MAX: Duration = Duration::from_millis(500);

/// Why a connection is closed by the server.
enum Close {
    LineTimeout,
    Idle,
    TooLong,
}

/// Serves one connection: reads request lines within their deadlines, answers each.
/// `shed` is set if it is closed to relieve a crowded port.
fn serve(stream: &TcpStream, sh: &Shared, id: u64, writable: bool, shed: &mut bool) -> std::io::Result<()> {
    let limits = &sh.limits;
    stream.set_write_timeout(Some(limits.write_timeout))?;
    let quota = Quota { id, max_txs: limits.max_pending_txs, max_bytes: limits.max_pending_bytes };
    let mut out = stream;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8 << 10];
    // When the first byte of the line in `buf` arrived, and when the last request was answered.
    let mut line_start: Option<Instant> = None;
    let mut last_request = Instant::now();
    // While its writes are refused as busy, the connection is read more and more slowly (TCP
    // pushes back on the client): a flood of refused writes costs the node little.
    let mut pause = Duration::ZERO;
    let close = loop {
        let mut answered = false;
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            if end + 1 > MAX_LINE {
                break;
            }
            let mut reply = match std::str::from_utf8(buf.get(..end).unwrap_or_default()) {
                Ok(text) => answer(text.strip_suffix('\r').unwrap_or(text), sh, &quota, writable),
                Err(_) => "ERR not UTF-8".to_string(),
            };
            buf.drain(..=end);
            let busy = reply.starts_with("ERR busy");
            reply.push('\n');
            out.write_all(reply.as_bytes())?;
            answered = true;
            pause = if busy { (pause * 2).clamp(BUSY_PAUSE_MIN, BUSY_PAUSE_MAX) } else { Duration::ZERO };
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        let pending_line_len = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
        if pending_line_len >= MAX_LINE {
            break Close::TooLong;
        }
        let now = Instant::now();
        if answered {
            last_request = now;
            line_start = (!buf.is_empty()).then_some(now);
        } else if buf.is_empty() {
            line_start = None;
        }
        let idle_timeout =
            if sh.crowded() { limits.idle_timeout.min(limits.line_timeout) } else { limits.idle_timeout };
        let (deadline, why) = match line_start {
            Some(t) => (t + limits.line_timeout, Close::LineTimeout),
            None => (last_request + idle_timeout, Close::Idle),
        };
        let mut left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            let idle_until = last_request + limits.idle_timeout;
            if !matches!(why, Close::Idle) || now >= idle_until {
                break why;
            }
            // Due only because the port is crowded.
            if sh.try_shed() {
                *shed = true;
                break why;
            }
            left = idle_until.saturating_duration_since(now);
        }
        // Wake at least once a second to see whether the port got crowded.
        stream.set_read_timeout(Some(left.min(Duration::from_secs(1))))?;
        match (&mut &*stream).read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if buf.is_empty() {
                    line_start = Some(Instant::now());
                }
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let reply = match close {
        Close::TooLong => line_too_long(),
        Close::LineTimeout => "ERR timeout: the request line did not arrive whole in time\n".to_string(),
        Close::Idle => "ERR timeout: idle connection closed\n".to_string(),
    };
    // The rest of the line is not a command: say why and close the connection.
    out.write_all(reply.as_bytes())
}

/// The answer to a line over [`MAX_LINE`] (the connection is then closed).
fn line_too_long() -> String {
    format!(
        "ERR line too long: a request line is at most {MAX_LINE} bytes (key <= {MAX_KEY} bytes, value <= {MAX_VALUE} bytes)\n"
    )
}

const USAGE: &str =
    "ERR unknown command (PUT <key> <value> | DEL <key> | TX <hex> | SEQ <client> | WAIT <id> <since> <timeout_ms> | GET <key> | STATUS | DIGEST)";

fn answer(line: &str, sh: &Shared, quota: &Quota, writable: bool) -> String {
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    let submitted = |tx: Tx| {
        if !writable {
            return format!(
                "ERR busy: the write slots are full ({} connections); this connection serves GET, WAIT and STATUS only",
                sh.limits.max_clients - sh.limits.read_reserve.min(sh.limits.max_clients - 1)
            );
        }
        if let Err(e) = sh.submissions.check(&sh.reader, &tx) {
            return format!("ERR refused: {e}");
        }
        let id = tx_id(&tx);
        let queued = if matches!(tx, Tx::Signed(_)) { Some(tx.clone()) } else { None };
        // Read before the submission: no block at or below it can hold the transaction.
        let since = (sh.status)().committed.0;
        match sh.mempool.submit_as(tx, quota) {
            Ok(()) => {
                if let Some(tx) = queued {
                    sh.submissions.queued(&tx);
                }
                format!("OK {} {since}", hex(&id))
            }
            Err(e) => format!("ERR {e}"),
        }
    };
    let key = |key: &str| check_key(key).map(|()| key.as_bytes().to_vec());
    let reply = match command {
        "PUT" => match rest.split_once(' ') {
            Some((k, value)) => key(k).and_then(|k| {
                check_value(value)?;
                Ok(submitted(Tx::Put { key: k, value: value.as_bytes().to_vec() }))
            }),
            None => {
                Err("PUT takes a key and a value: PUT <key> <value> (the value is the rest of the line; \
                         for an empty value end the line with a space after the key)"
                    .to_string())
            }
        },
        "DEL" => key(rest).map(|k| submitted(Tx::Delete { key: k })),
        "TX" => Ok(match super::auth::SignedTx::from_hex(rest) {
            Ok(tx) => submitted(Tx::Signed(Box::new(tx))),
            Err(e) => format!("ERR refused: {e}"),
        }),
        "SEQ" => Ok(super::auth::seq_answer(&sh.reader, rest)),
        "GET" => key(rest).map(|k| match sh.reader.get(&state_key(&k)) {
            Ok(Some(v)) => format!("VALUE {}", String::from_utf8_lossy(&v)),
            Ok(None) => "NONE".to_string(),
            Err(e) => format!("ERR {e}"),
        }),
        "WAIT" => wait(rest, sh),
        "STATUS" if rest.is_empty() => {
            let s = (sh.status)();
            // Height and count from one snapshot of the committed state.
            Ok(match sh.reader.get_with_tip(TX_COUNT_KEY) {
                Ok((tip, txs)) => format!(
                    "STATUS view={} leader={} height={} txs={} running={}",
                    s.view.0,
                    hex(&s.leader.0),
                    tip.height.0,
                    tx_count(txs.as_deref()),
                    s.running
                ),
                Err(e) => format!("ERR {e}"),
            })
        }
        // A digest of the whole committed app state (it reads every key: for checks, not polling).
        "DIGEST" if rest.is_empty() => Ok(match sh.reader.app_state_digest() {
            Ok((tip, digest)) => format!("DIGEST height={} digest={}", tip.height.0, hex(&digest)),
            Err(e) => format!("ERR {e}"),
        }),
        _ => Ok(USAGE.to_string()),
    };
    reply.unwrap_or_else(|e| format!("ERR {e}"))
}

/// `WAIT <id> <since> <timeout_ms>`: blocks this connection until the transaction commits after
/// `since`, or the timeout (at most [`MAX_WAIT`]) passes.
fn wait(args: &str, sh: &Shared) -> Result<String, String> {
    let usage =
        "WAIT takes <id> <since> <timeout_ms>: the id and height of an OK answer, and a timeout in ms";
    let [id, since, timeout] = args.split(' ').collect::<Vec<_>>()[..] else { return Err(usage.into()) };
    let (Some(id_bytes), Ok(since), Ok(timeout_ms)) =
        (parse_id(id), since.parse::<u64>(), timeout.parse::<u64>())
    else {
        return Err(usage.into());
    };
    let timeout = Duration::from_millis(timeout_ms).min(MAX_WAIT);
    Ok(match wait_for_commit(&sh.reader, &id_bytes, since, timeout) {
        Ok(Receipt::Committed(height)) => format!("COMMITTED {id} {height}"),
        Ok(Receipt::Unknown { scanned }) => format!("UNKNOWN {id} {scanned}"),
        Err(e) => format!("ERR {e}"),
    })
}

#[cfg(test)]
mod client_protocol_tests {
    use super::*;
    use crate::storage::RedbStore;
    use hotstuff_core::{PublicKey, View};

    fn server() -> ClientServer {
        server_with(Mempool::new(16), ClientLimits::default())
    }

    fn server_with(mempool: Mempool, limits: ClientLimits) -> ClientServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let store = RedbStore::in_memory().unwrap();
        let validators = hotstuff_core::ValidatorSet::new([(PublicKey([1; 32]), 1)]).unwrap();
        crate::Storage::initialise(&store, &crate::Genesis::new(hotstuff_core::ChainId(1), validators))
            .unwrap();
        let reader = Reader::new(Arc::new(store));
        let status = || Status {
            view: View(1),
            leader: PublicKey([0; 32]),
            committed: hotstuff_core::Height(0),
            high_qc: View(0),
            running: true,
        };
        ClientServer::start_with(listener, mempool, reader, status, limits).unwrap()
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

    /// The `OK <id> <since>` answer to a put of `key` and `value` at committed height 0.
    fn ok_put(key: &str, value: &str) -> String {
        let id = tx_id(&Tx::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() });
        format!("OK {} 0\n", hex(&id))
    }

    #[test]
    fn bad_lines_get_an_error_and_an_overlong_line_ends_the_connection() {
        let server = server();
        let addr = server.local_addr();
        // Invalid UTF-8 is answered, and the connection goes on.
        assert_eq!(
            exchange(addr, b"PUT k \xff\xfe\nPUT a b\n"),
            format!("ERR not UTF-8\n{}", ok_put("a", "b"))
        );
        // An overlong line is refused, naming the limits, and its rest never read as commands.
        let mut long = b"PUT k ".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE));
        long.extend_from_slice(b"\nPUT c d\n");
        assert_eq!(
            exchange(addr, &long),
            format!(
                "ERR line too long: a request line is at most {MAX_LINE} bytes (key <= 256 bytes, value <= 4096 bytes)\n"
            )
        );
        // A line of exactly the limit is served.
        let mut exact = b"DEL ".to_vec();
        exact.extend(std::iter::repeat_n(b'k', MAX_LINE - 5));
        exact.push(b'\n');
        assert_eq!(exact.len(), MAX_LINE);
        assert_eq!(
            exchange(addr, &exact),
            format!("ERR key of {} bytes is over the limit of 256 bytes\n", MAX_LINE - 5)
        );
        assert_eq!(exchange(addr, b"NOPE\n"), format!("{USAGE}\n"));
    }

    #[test]
    fn values_may_hold_spaces_or_be_empty_and_every_limit_is_named() {
        let server = server();
        let addr = server.local_addr();
        let at_limit = "v".repeat(MAX_VALUE);
        let requests = format!("PUT a two words\r\nPUT b \nPUT c {at_limit}\n");
        assert_eq!(
            exchange(addr, requests.as_bytes()),
            [ok_put("a", "two words"), ok_put("b", ""), ok_put("c", &at_limit)].concat()
        );
        let over = format!("PUT c {at_limit}w\n");
        assert_eq!(
            exchange(addr, over.as_bytes()),
            "ERR value of 4097 bytes is over the limit of 4096 bytes\n"
        );
        let key = "k".repeat(MAX_KEY + 1);
        assert_eq!(
            exchange(addr, format!("GET {key}\n").as_bytes()),
            "ERR key of 257 bytes is over the limit of 256 bytes\n"
        );
        let r = exchange(addr, b"PUT k\n");
        assert!(r.starts_with("ERR PUT takes a key and a value: PUT <key> <value>"), "{r}");
        let r = exchange(addr, b"WAIT nothex 0 10\n");
        assert!(r.starts_with("ERR WAIT takes <id> <since> <timeout_ms>"), "{r}");
    }

    #[test]
    fn wait_answers_unknown_for_a_transaction_in_no_committed_block() {
        let server = server();
        let ok = exchange(server.local_addr(), b"PUT a b\n");
        let id = ok.split(' ').nth(1).unwrap();
        // Nothing commits on this node: no block holds it.
        let reply = exchange(server.local_addr(), format!("WAIT {id} 0 50\n").as_bytes());
        assert_eq!(reply, format!("UNKNOWN {id} 0\n"));
    }

    fn reply(s: &mut TcpStream) -> String {
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    }

    #[test]
    fn a_trickling_client_is_cut_off_at_the_line_deadline_and_an_idle_one_at_the_idle_timeout() {
        let limits = ClientLimits {
            line_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
            ..ClientLimits::default()
        };
        let server = server_with(Mempool::new(16), limits);
        let mut slow = TcpStream::connect(server.local_addr()).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let start = std::time::Instant::now();
        // A byte every 100 ms for 2 s: each read is quick, the line never completes. The node
        // cuts it off at the line deadline (the writes then fail: the connection is closed).
        let trickle = std::thread::spawn({
            let mut w = slow.try_clone().unwrap();
            move || {
                for _ in 0..20 {
                    if w.write_all(b"P").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        assert_eq!(reply(&mut slow), "ERR timeout: the request line did not arrive whole in time\n");
        let cut = start.elapsed();
        assert!(cut < Duration::from_millis(1500), "cut off after {cut:?}, not at the line deadline");
        trickle.join().unwrap();

        let mut idle = TcpStream::connect(server.local_addr()).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        idle.write_all(b"GET a\n").unwrap();
        assert_eq!(reply(&mut idle), "NONE\n");
        assert_eq!(reply(&mut idle), "ERR timeout: idle connection closed\n");
    }

    #[test]
    fn connections_are_capped_per_address_and_the_last_slots_serve_reads_only() {
        let limits = ClientLimits {
            max_clients: 3,
            max_clients_per_ip: 3,
            read_reserve: 1,
            ..ClientLimits::default()
        };
        let server = server_with(Mempool::new(16), limits);
        let addr = server.local_addr();
        let mut held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        for s in &mut held {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"STATUS\n").unwrap();
            assert!(reply(s).starts_with("STATUS "), "every admitted connection serves STATUS");
        }
        held[0].write_all(b"PUT a b\n").unwrap();
        assert_eq!(reply(&mut held[0]), ok_put("a", "b"));
        held[2].write_all(b"PUT a b\nGET a\n").unwrap();
        let r = reply(&mut held[2]);
        assert!(r.starts_with("ERR busy: the write slots are full"), "{r}");
        let mut fourth = TcpStream::connect(addr).unwrap();
        fourth.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(reply(&mut fourth), "ERR busy: too many connections (limit 3)\n");
        assert_eq!(server.refused(), 1);
    }

    #[test]
    fn one_connection_cannot_hold_more_than_its_share_of_the_mempool() {
        let limits = ClientLimits { max_pending_txs: 2, ..ClientLimits::default() };
        let server = server_with(Mempool::new(16), limits);
        let replies = exchange(server.local_addr(), b"PUT a 1\nPUT b 2\nPUT c 3\n");
        let lines: Vec<&str> = replies.lines().collect();
        assert_eq!(lines[..2].concat(), [ok_put("a", "1"), ok_put("b", "2")].concat().replace('\n', ""));
        assert!(
            lines[2].starts_with("ERR busy: this connection holds 2 pending transactions"),
            "{}",
            lines[2]
        );
        // Another connection has its own share.
        assert_eq!(exchange(server.local_addr(), b"PUT d 4\n"), ok_put("d", "4"));
    }

    #[test]
    fn idle_connections_are_shed_sooner_when_the_port_is_crowded() {
        let limits = ClientLimits {
            max_clients: 4,
            max_clients_per_ip: 4,
            read_reserve: 1,
            line_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(60),
            ..ClientLimits::default()
        };
        let server = server_with(Mempool::new(16), limits);
        let _idle = TcpStream::connect(server.local_addr()).unwrap();
        // One of four slots in use: an idle connection may stay (60 s).
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(server.connections(), 1);
        let _more: Vec<TcpStream> =
            (0..2).map(|_| TcpStream::connect(server.local_addr()).unwrap()).collect();
        // Three in use, only the read reserve left: idle connections are cut after the line
        // timeout (checked at least once a second) until the port is no longer crowded.
        while server.connections() < 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let start = std::time::Instant::now();
        while server.connections() > 2 {
            assert!(start.elapsed() < Duration::from_millis(2500), "no idle connection was shed");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Exactly one goes (the decision is taken with the others'); then the shedding stops.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(server.connections(), 2, "the rest stay once the port is not crowded");
    }
}
