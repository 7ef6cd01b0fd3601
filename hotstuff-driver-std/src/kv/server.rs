//! The client port: serves the line protocol of [`super::client`] over TCP.

use super::mempool::Mempool;
use super::payload::{hex, state_key, tx_count, Tx, TX_COUNT_KEY};
use super::MAX_LINE;
use crate::node::{Reader, Status};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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

#[cfg(test)]
mod client_protocol_tests {
    use super::*;
    use crate::storage::RedbStore;
    use hotstuff_core::{PublicKey, View};

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
