//! A fault-injecting TCP proxy for tests, in the style of toxiproxy, in-process and on
//! loopback: one listener per ordered pair of nodes, so that node `i` reaches node `j` through
//! [`Proxy::addr`]`(i, j)` and each direction of each pair is controlled on its own, at run time.
//!
//! Per link it can add latency with jitter (seeded: the same seed gives the same delays),
//! [`Fault::Blackhole`] it (accept bytes, forward none, keep both sockets open and send no FIN:
//! what a cloud network failure looks like, TCP on either side sees nothing wrong),
//! [`Fault::Cut`] it (reset every connection: `SO_LINGER` 0 and close, on both sides; new
//! connections are reset at once while the cut lasts) and [`Fault::Pass`] (heal) it.
//!
//! A connection that lost bytes in a blackhole stays silent after the link heals: its byte
//! stream has a hole, so nothing it carried afterwards could be read correctly (real TCP would
//! have retransmitted, or given up). Both ends must notice the silence themselves, as they
//! would have to on a real network; connections opened after the heal pass normally.
//!
//! Threads: an acceptor per link, and per connection a reader and a writer in each direction
//! (the writer holds chunks until their delivery time, so latency does not limit throughput).
//! Dropping the [`Proxy`] closes everything and joins every thread.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a link does to the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything (after the link's latency): the healthy state, and what healing sets.
    Pass,
    /// Accept bytes and forward none, keep sockets open, forward no FIN.
    Blackhole,
    /// Reset every connection (`SO_LINGER` 0, close), and every new one while it lasts.
    Cut,
}

/// Counters of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections accepted.
    pub connections: u64,
    /// Bytes forwarded from the dialling node to the target.
    pub to_target: u64,
    /// Bytes forwarded from the target back to the dialling node.
    pub from_target: u64,
    /// Bytes dropped (blackholed).
    pub dropped: u64,
    /// Connections reset by a cut.
    pub resets: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Shape {
    fault: Fault,
    latency: Duration,
    jitter: Duration,
    rng: ChaCha8Rng,
}

/// One direction of a pair: its listener's settings, counters and live connections.
struct Link {
    upstream: SocketAddr,
    shape: Mutex<Shape>,
    conns: Mutex<Vec<Weak<Conn>>>,
    connections: AtomicU64,
    to_target: AtomicU64,
    from_target: AtomicU64,
    dropped: AtomicU64,
    resets: AtomicU64,
}

impl Link {
    fn fault(&self) -> Fault {
        lock(&self.shape).fault
    }

    /// The delivery delay of the next chunk.
    fn delay(&self) -> Duration {
        let mut s = lock(&self.shape);
        let jitter = if s.jitter.is_zero() {
            Duration::ZERO
        } else {
            let nanos = u64::try_from(s.jitter.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(s.rng.gen_range(0..=nanos))
        };
        s.latency + jitter
    }
}

/// A proxied connection: the client's socket and the upstream one.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    /// Lost bytes in a blackhole: silent for good.
    holed: AtomicBool,
    /// Reset by a cut.
    cut: AtomicBool,
}

impl Conn {
    /// Resets both sides: `SO_LINGER` 0, and the readers woken so the last handle closes.
    fn reset(&self) {
        self.cut.store(true, Ordering::Release);
        for s in [&self.client, &self.upstream] {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            let _ = s.shutdown(Shutdown::Read);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The sockets close with the handles; a cut connection closes with a reset.
        if self.cut.load(Ordering::Acquire) {
            for s in [&self.client, &self.upstream] {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
        }
    }
}

/// What a reader hands its writer.
enum Chunk {
    Data(Instant, Vec<u8>),
    /// The source ended; forward its FIN if true.
    End(bool),
}

struct Inner {
    links: BTreeMap<(usize, usize), Arc<Link>>,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    fn spawn(self: &Arc<Self>, f: impl FnOnce(Arc<Inner>) + Send + 'static) {
        let mut threads = lock(&self.threads);
        if self.stop.load(Ordering::Acquire) {
            return;
        }
        threads.retain(|t| !t.is_finished());
        let me = self.clone();
        match std::thread::Builder::new().name("test-proxy".into()).spawn(move || f(me)) {
            Ok(t) => threads.push(t),
            Err(e) => eprintln!("proxy: cannot spawn a thread: {e}"),
        }
    }
}

/// The proxy between every ordered pair of a set of nodes (see the module docs).
pub struct Proxy {
    inner: Arc<Inner>,
    addrs: BTreeMap<(usize, usize), SocketAddr>,
    seed: u64,
}

impl Proxy {
    /// A listener on `127.0.0.1:0` for every ordered pair `(from, to)` of distinct indices
    /// into `targets`, forwarding to `targets[to]`; jitter is drawn from `seed`.
    pub fn start(targets: &[SocketAddr], seed: u64) -> std::io::Result<Proxy> {
        let mut listeners = Vec::new();
        let mut links = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for (from, _) in targets.iter().enumerate() {
            for (to, upstream) in targets.iter().enumerate() {
                if from == to {
                    continue;
                }
                let l = TcpListener::bind("127.0.0.1:0")?;
                addrs.insert((from, to), l.local_addr()?);
                let link_seed = seed ^ ((from as u64) << 32 | to as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                links.insert(
                    (from, to),
                    Arc::new(Link {
                        upstream: *upstream,
                        shape: Mutex::new(Shape {
                            fault: Fault::Pass,
                            latency: Duration::ZERO,
                            jitter: Duration::ZERO,
                            rng: ChaCha8Rng::seed_from_u64(link_seed),
                        }),
                        conns: Mutex::new(Vec::new()),
                        connections: AtomicU64::new(0),
                        to_target: AtomicU64::new(0),
                        from_target: AtomicU64::new(0),
                        dropped: AtomicU64::new(0),
                        resets: AtomicU64::new(0),
                    }),
                );
                listeners.push(((from, to), l));
            }
        }
        let inner = Arc::new(Inner { links, stop: AtomicBool::new(false), threads: Mutex::new(Vec::new()) });
        for (pair, l) in listeners {
            let link = inner.links.get(&pair).cloned().ok_or(ErrorKind::NotFound)?;
            inner.spawn(move |inner| accept_loop(&inner, &l, &link));
        }
        Ok(Proxy { inner, addrs, seed })
    }

    /// The seed the jitter is drawn from.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Where node `from` must dial node `to`.
    ///
    /// # Panics
    /// If the pair is not one of the proxy's (equal or out of range).
    #[must_use]
    pub fn addr(&self, from: usize, to: usize) -> SocketAddr {
        *self.addrs.get(&(from, to)).unwrap_or_else(|| panic!("no link {from} -> {to}"))
    }

    fn link(&self, from: usize, to: usize) -> &Arc<Link> {
        self.inner.links.get(&(from, to)).unwrap_or_else(|| panic!("no link {from} -> {to}"))
    }

    /// Both directions of every pair that includes `node`.
    fn pairs_of(&self, node: usize) -> Vec<(usize, usize)> {
        self.inner.links.keys().copied().filter(|(a, b)| *a == node || *b == node).collect()
    }

    /// Sets the fault of the link `from -> to` (the connections node `from` opens to node
    /// `to`, both directions of their bytes). [`Fault::Cut`] resets its connections now.
    pub fn set(&self, from: usize, to: usize, fault: Fault) {
        let link = self.link(from, to);
        lock(&link.shape).fault = fault;
        if fault == Fault::Cut {
            let conns: Vec<Arc<Conn>> = lock(&link.conns).iter().filter_map(Weak::upgrade).collect();
            for c in conns {
                link.resets.fetch_add(1, Ordering::Relaxed);
                c.reset();
            }
        }
    }

    /// Sets `fault` on every link to and from `node`.
    pub fn isolate(&self, node: usize, fault: Fault) {
        for (a, b) in self.pairs_of(node) {
            self.set(a, b, fault);
        }
    }

    /// Heals every link to and from `node` ([`Fault::Pass`]).
    pub fn heal(&self, node: usize) {
        self.isolate(node, Fault::Pass);
    }

    /// Delays every chunk on the link `from -> to` (both directions) by `latency` plus a
    /// uniform draw from `0..=jitter`; order is kept.
    pub fn set_latency(&self, from: usize, to: usize, latency: Duration, jitter: Duration) {
        let mut s = lock(&self.link(from, to).shape);
        s.latency = latency;
        s.jitter = jitter;
    }

    /// [`Proxy::set_latency`] on every link.
    pub fn set_latency_all(&self, latency: Duration, jitter: Duration) {
        for &(a, b) in self.inner.links.keys() {
            self.set_latency(a, b, latency, jitter);
        }
    }

    /// The counters of the link `from -> to`.
    #[must_use]
    pub fn stats(&self, from: usize, to: usize) -> LinkStats {
        let l = self.link(from, to);
        LinkStats {
            connections: l.connections.load(Ordering::Relaxed),
            to_target: l.to_target.load(Ordering::Relaxed),
            from_target: l.from_target.load(Ordering::Relaxed),
            dropped: l.dropped.load(Ordering::Relaxed),
            resets: l.resets.load(Ordering::Relaxed),
        }
    }

    /// The counters summed over every link to and from `node`.
    #[must_use]
    pub fn node_stats(&self, node: usize) -> LinkStats {
        self.pairs_of(node).into_iter().fold(LinkStats::default(), |acc, (a, b)| {
            let s = self.stats(a, b);
            LinkStats {
                connections: acc.connections + s.connections,
                to_target: acc.to_target + s.to_target,
                from_target: acc.from_target + s.from_target,
                dropped: acc.dropped + s.dropped,
                resets: acc.resets + s.resets,
            }
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        for (pair, link) in &self.inner.links {
            for c in lock(&link.conns).iter().filter_map(Weak::upgrade) {
                let _ = c.client.shutdown(Shutdown::Both);
                let _ = c.upstream.shutdown(Shutdown::Both);
            }
            // Wake the acceptor.
            if let Some(addr) = self.addrs.get(pair) {
                let _ = TcpStream::connect_timeout(addr, Duration::from_millis(200));
            }
        }
        loop {
            let threads = std::mem::take(&mut *lock(&self.inner.threads));
            if threads.is_empty() {
                break;
            }
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

fn reset_now(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

fn accept_loop(inner: &Arc<Inner>, listener: &TcpListener, link: &Arc<Link>) {
    for conn in listener.incoming() {
        if inner.stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(client) = conn else { continue };
        if link.fault() == Fault::Cut {
            link.resets.fetch_add(1, Ordering::Relaxed);
            reset_now(&client);
            continue;
        }
        // As toxiproxy: the upstream connection is opened when the client's is accepted (a
        // blackholed link still connects; it only forwards nothing).
        let Ok(upstream) = TcpStream::connect_timeout(&link.upstream, Duration::from_secs(1)) else {
            reset_now(&client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (Ok(c_read), Ok(u_read)) = (client.try_clone(), upstream.try_clone()) else { continue };
        let conn =
            Arc::new(Conn { client, upstream, holed: AtomicBool::new(false), cut: AtomicBool::new(false) });
        link.connections.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = lock(&link.conns);
            conns.retain(|w| w.strong_count() > 0);
            conns.push(Arc::downgrade(&conn));
        }
        for (src, to_upstream) in [(c_read, true), (u_read, false)] {
            let (tx, rx) = channel();
            let (c, l) = (conn.clone(), link.clone());
            inner.spawn(move |_| pump_in(&c, &l, src, &tx));
            let (c, l) = (conn.clone(), link.clone());
            inner.spawn(move |_| pump_out(&c, &l, to_upstream, &rx));
        }
    }
}

/// Reads one side and hands its bytes, stamped with their delivery time, to the writer (or
/// drops them in a blackhole).
fn pump_in(conn: &Conn, link: &Link, mut src: TcpStream, tx: &Sender<Chunk>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut last = Instant::now();
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if conn.cut.load(Ordering::Acquire) {
            break;
        }
        if link.fault() == Fault::Blackhole {
            conn.holed.store(true, Ordering::Release);
        }
        if conn.holed.load(Ordering::Acquire) {
            link.dropped.fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        // Delivery times never go backwards: the stream stays in order.
        last = last.max(Instant::now() + link.delay());
        if tx.send(Chunk::Data(last, buf.get(..n).unwrap_or_default().to_vec())).is_err() {
            // The other side is gone: end this one too.
            let _ = src.shutdown(Shutdown::Both);
            return;
        }
    }
    let fin = !conn.cut.load(Ordering::Acquire) && !conn.holed.load(Ordering::Acquire);
    let _ = tx.send(Chunk::End(fin));
}

/// Writes the chunks of one direction at their delivery time.
fn pump_out(conn: &Conn, link: &Link, to_upstream: bool, rx: &Receiver<Chunk>) {
    let dst = if to_upstream { &conn.upstream } else { &conn.client };
    while let Ok(chunk) = rx.recv() {
        match chunk {
            Chunk::Data(at, bytes) => {
                let wait = at.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                if conn.cut.load(Ordering::Acquire) || conn.holed.load(Ordering::Acquire) {
                    link.dropped.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    continue;
                }
                if (&*dst).write_all(&bytes).is_err() {
                    let _ = dst.shutdown(Shutdown::Both);
                    break;
                }
                let counter = if to_upstream { &link.to_target } else { &link.from_target };
                counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Chunk::End(fin) => {
                if fin && !conn.holed.load(Ordering::Acquire) {
                    let _ = dst.shutdown(Shutdown::Write);
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { break };
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        addr
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back)?;
        Ok(back)
    }

    #[test]
    fn forwards_delays_blackholes_cuts_and_heals() {
        let targets = [echo(), echo()];
        let p = Proxy::start(&targets, 7).unwrap();
        let mut s = TcpStream::connect(p.addr(0, 1)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        assert_eq!(roundtrip(&mut s, b"hello").unwrap(), b"hello");

        p.set_latency(0, 1, Duration::from_millis(50), Duration::from_millis(10));
        let t = Instant::now();
        assert_eq!(roundtrip(&mut s, b"slow").unwrap(), b"slow");
        assert!(t.elapsed() >= Duration::from_millis(100), "two legs of >= 50 ms: {:?}", t.elapsed());
        p.set_latency(0, 1, Duration::ZERO, Duration::ZERO);

        // Blackhole: the write is accepted, nothing comes back, the socket stays open.
        p.set(0, 1, Fault::Blackhole);
        let err = roundtrip(&mut s, b"lost").unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
        assert!(p.stats(0, 1).dropped >= 4);
        // Healed: the holed connection stays silent, a new one passes.
        p.set(0, 1, Fault::Pass);
        assert!(roundtrip(&mut s, b"after").is_err());
        let mut s2 = TcpStream::connect(p.addr(0, 1)).unwrap();
        s2.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        assert_eq!(roundtrip(&mut s2, b"fresh").unwrap(), b"fresh");

        // Cut: the open connection is reset, and so is a new one while the cut lasts.
        p.set(0, 1, Fault::Cut);
        let mut byte = [0u8; 1];
        let err = s2.read(&mut byte).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
        let mut s3 = TcpStream::connect(p.addr(0, 1)).unwrap();
        s3.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        assert!(roundtrip(&mut s3, b"x").is_err());
        p.set(0, 1, Fault::Pass);
        let mut s4 = TcpStream::connect(p.addr(0, 1)).unwrap();
        s4.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        assert_eq!(roundtrip(&mut s4, b"healed").unwrap(), b"healed");
        // The other direction was never touched.
        let mut r = TcpStream::connect(p.addr(1, 0)).unwrap();
        r.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        assert_eq!(roundtrip(&mut r, b"other").unwrap(), b"other");
        drop(p);
    }
}
