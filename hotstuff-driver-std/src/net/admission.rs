//! Admission of inbound connections, shared by both drivers' consensus ports and the kv
//! client port: a cap on connections pending at once, in total and per source address; a
//! deadline for a whole exchange (not per read, so a peer trickling bytes cannot hold a slot);
//! and [`Refusals`], which counts refused connections and logs them at a bounded rate instead
//! of a line (or an inbox message) per refusal.

use crate::error::NetError;
use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often [`Refusals`] logs its summary line (at most once per interval).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts refused connections (and refused requests) by kind, and decides what is reported:
/// the first refusal of each kind in a window of [`REFUSAL_LOG_INTERVAL`] is reported in full
/// (a log line, and an event for the node's handlers); the rest are only counted, and one
/// summary line with the counts of the previous window is logged when the next window starts.
/// So a flood of refusals costs at most a few log lines and inbox messages per interval.
pub struct Refusals {
    what: &'static str,
    interval: Duration,
    window: Mutex<Window>,
    total: AtomicU64,
}

struct Window {
    started: Instant,
    counts: BTreeMap<&'static str, u64>,
}

impl Refusals {
    /// Refusals of `what` (e.g. "consensus port"), summarized every [`REFUSAL_LOG_INTERVAL`].
    #[must_use]
    pub fn new(what: &'static str) -> Self {
        Self::with_interval(what, REFUSAL_LOG_INTERVAL)
    }

    /// Like [`Refusals::new`] with another summary interval.
    #[must_use]
    pub fn with_interval(what: &'static str, interval: Duration) -> Self {
        Refusals {
            what,
            interval,
            window: Mutex::new(Window { started: Instant::now(), counts: BTreeMap::new() }),
            total: AtomicU64::new(0),
        }
    }

    /// Counts one refusal of `kind`. Returns true if it is the first of its kind in the current
    /// window: the caller reports that one in full; the others are only counted.
    pub fn record(&self, kind: &'static str) -> bool {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut w = lock(&self.window);
        let now = Instant::now();
        if now.duration_since(w.started) >= self.interval {
            let counts = std::mem::take(&mut w.counts);
            let seconds = now.duration_since(w.started).as_secs();
            w.started = now;
            let refused: u64 = counts.values().sum();
            // Kinds reported in full were already logged once; a window with only those has
            // nothing to summarize.
            if counts.values().any(|n| *n > 1) {
                let by_kind: Vec<String> = counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
                tracing::warn!(
                    port = self.what,
                    refused,
                    seconds,
                    by_kind = %by_kind.join(" "),
                    "refused connections in the last window (the first of each kind was logged in full)"
                );
            }
        }
        let n = w.counts.entry(kind).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Refusals counted since this was made.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// A connection over a limit of [`Admission`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// As many connections as allowed are pending.
    #[error("too many connections (limit {limit})")]
    Total {
        /// The limit.
        limit: usize,
    },
    /// This source address failed too many handshakes lately; it may retry in a moment.
    #[error("too many failed handshakes from {addr} lately (at most {per_second} per second)")]
    Penalized {
        /// The source address.
        addr: IpAddr,
        /// The sustained rate of failures allowed.
        per_second: u32,
    },
    /// As many connections as allowed are pending from this source address.
    #[error("too many connections from {addr} (limit {limit} per address)")]
    PerAddress {
        /// The source address.
        addr: IpAddr,
        /// The limit per address.
        limit: usize,
    },
}

impl AdmitError {
    /// A short name of the limit, for counting refusals by kind.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            AdmitError::Total { .. } => "too_many_connections",
            AdmitError::PerAddress { .. } => "too_many_connections_from_address",
            AdmitError::Penalized { .. } => "too_many_failures_from_address",
        }
    }
}

impl From<AdmitError> for NetError {
    fn from(e: AdmitError) -> Self {
        match e {
            AdmitError::Total { limit } => NetError::TooManyHandshakes(limit),
            AdmitError::PerAddress { addr, limit } => NetError::TooManyHandshakesFrom { addr, limit },
            AdmitError::Penalized { addr, per_second } => NetError::TooManyFailures { addr, per_second },
        }
    }
}

/// Caps connections that are pending (in their handshake, or served) at once: in total and
/// per source address. [`Admission::admit`] hands out a [`Pending`] slot that frees itself
/// when dropped.
///
/// It also rate-limits failures per source address (a token bucket of
/// [`FAILURE_BURST`] failed exchanges, refilled at [`FAILURES_PER_SECOND`]): an address that
/// keeps failing handshakes (bad signatures, garbage, connect-and-close churn) is refused at
/// accept, before any thread, read or signature check is spent on it, until it has waited.
pub struct Admission {
    max: usize,
    max_per_ip: usize,
    pending: Mutex<HashMap<IpAddr, usize>>,
    failures: Mutex<HashMap<IpAddr, Bucket>>,
    refusals: Refusals,
}

/// Failed exchanges allowed from one address in a burst.
pub const FAILURE_BURST: f64 = 32.0;
/// Failed exchanges allowed from one address per second, sustained.
pub const FAILURES_PER_SECOND: u32 = 16;
/// Addresses whose failures are remembered at once (the oldest are forgotten first).
const MAX_FAILING_ADDRESSES: usize = 4096;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> Bucket {
        let gained = now.duration_since(self.at).as_secs_f64() * f64::from(FAILURES_PER_SECOND);
        Bucket { tokens: (self.tokens + gained).min(FAILURE_BURST), at: now }
    }
}

/// A slot held by one pending connection; dropping it frees the slot.
pub struct Pending {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = lock(&self.admission.pending);
        if let Some(n) = pending.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    /// At most `max` pending connections, `max_per_ip` of them from one source address (each
    /// at least 1); refusals of `what` are counted in [`Admission::refusals`].
    #[must_use]
    pub fn new(what: &'static str, max: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Admission {
            max: max.max(1),
            max_per_ip: max_per_ip.max(1),
            pending: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            refusals: Refusals::new(what),
        })
    }

    /// A slot for a connection from `ip`, or the limit it would break.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Pending, AdmitError> {
        if let Some(b) = lock(&self.failures).get(&ip) {
            if b.refilled(Instant::now()).tokens < 1.0 {
                return Err(AdmitError::Penalized { addr: ip, per_second: FAILURES_PER_SECOND });
            }
        }
        let mut pending = lock(&self.pending);
        let total: usize = pending.values().sum();
        if total >= self.max {
            return Err(AdmitError::Total { limit: self.max });
        }
        let n = pending.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(AdmitError::PerAddress { addr: ip, limit: self.max_per_ip });
        }
        *n += 1;
        Ok(Pending { admission: self.clone(), ip })
    }

    /// Records a failed exchange (handshake) of a connection from `ip`: enough of them and
    /// the address is refused at accept for a while.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_FAILING_ADDRESSES && !failures.contains_key(&ip) {
            // Forget addresses that have earned their tokens back, or else the stalest.
            failures.retain(|_, b| b.refilled(now).tokens < FAILURE_BURST);
            if failures.len() >= MAX_FAILING_ADDRESSES {
                if let Some(oldest) = failures.iter().min_by_key(|(_, b)| b.at).map(|(ip, _)| *ip) {
                    failures.remove(&oldest);
                }
            }
        }
        let b = failures.entry(ip).or_insert(Bucket { tokens: FAILURE_BURST, at: now });
        let refilled = b.refilled(now);
        *b = Bucket { tokens: (refilled.tokens - 1.0).max(0.0), at: now };
    }

    /// Connections pending now.
    #[must_use]
    pub fn pending(&self) -> usize {
        lock(&self.pending).values().sum()
    }

    /// The refusal counter of this port.
    #[must_use]
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }
}

/// A stream whose reads and writes must all finish by one deadline: each read or write waits
/// at most the time left, so a peer that trickles a byte at a time still runs out of time.
pub struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Instant,
}

impl<'a> Deadline<'a> {
    /// `stream` with `timeout` from now for everything done through it.
    #[must_use]
    pub fn new(stream: &'a TcpStream, timeout: Duration) -> Self {
        Deadline { stream, until: Instant::now() + timeout }
    }

    fn left(&self) -> std::io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(ErrorKind::TimedOut, "deadline passed"));
        }
        Ok(left)
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        match (&mut &*self.stream).read(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(ErrorKind::TimedOut.into()),
            other => other,
        }
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        match (&mut &*self.stream).write(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(ErrorKind::TimedOut.into()),
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    #[test]
    fn slots_are_capped_in_total_and_per_source_address_and_freed_on_drop() {
        let a = Admission::new("test", 3, 2);
        let (x, y) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        let x1 = a.admit(x).unwrap();
        let _x2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).err(), Some(AdmitError::PerAddress { limit: 2, addr: x }));
        // Another address still gets in while `x` is at its limit.
        let _y1 = a.admit(y).unwrap();
        assert_eq!(a.admit(y).err(), Some(AdmitError::Total { limit: 3 }));
        drop(x1);
        assert_eq!(a.pending(), 2);
        let _x3 = a.admit(x).unwrap();
    }

    #[test]
    fn an_address_that_keeps_failing_is_refused_for_a_while() {
        let a = Admission::new("test", 100, 100);
        let (x, y) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        for _ in 0..FAILURE_BURST as usize {
            drop(a.admit(x).unwrap());
            a.failed(x);
        }
        assert!(matches!(a.admit(x), Err(AdmitError::Penalized { addr, .. }) if addr == x));
        assert!(a.admit(y).is_ok(), "other addresses are not affected");
        std::thread::sleep(Duration::from_millis(1000 / u64::from(FAILURES_PER_SECOND) + 20));
        assert!(a.admit(x).is_ok(), "the bucket refills");
    }

    #[test]
    fn only_the_first_refusal_of_a_kind_per_window_is_reported() {
        let r = Refusals::with_interval("test", Duration::from_millis(50));
        assert!(r.record("a"));
        assert!(!r.record("a"));
        assert!(r.record("b"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(r.record("a"), "a new window reports again");
        assert_eq!(r.total(), 4);
    }

    #[test]
    fn a_deadline_covers_the_whole_exchange_not_each_read() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let trickle = std::thread::spawn(move || {
            for _ in 0..20 {
                if client.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        let start = Instant::now();
        let mut buf = [0u8; 100];
        let err = Deadline::new(&server, Duration::from_millis(200)).read_exact(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_millis(600), "took {:?}", start.elapsed());
        drop(server);
        trickle.join().unwrap();
    }
}
