//! Prometheus metrics of a node ([`Metrics`]) and a small HTTP endpoint that serves them
//! ([`MetricsServer`], `GET /metrics`). The text format is written by `prometheus-client`.
//!
//! Give a [`Metrics`] to [`crate::NodeBuilder::metrics`]: the engine (shared by the std and
//! the tokio driver) then records the consensus numbers, the store's write latency and the
//! refused inputs; an app adds its own ([`Metrics::register`], [`Metrics::on_scrape`]; the kv
//! app's are [`crate::kv::register_metrics`]). Every metric name starts with `hotstuff_`.

use hotstuff_core::{Event as CoreEvent, InputErrorKind, ViewChange};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One label (name, value).
type Label = [(&'static str, &'static str); 1];

/// A refresh run before every scrape.
type ScrapeHook = Box<dyn Fn() + Send + Sync>;

/// The metrics of one node. Clone it freely: clones share the numbers.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Mutex<Registry>,
    hooks: Mutex<Vec<ScrapeHook>>,
    committed_height: Gauge,
    view: Gauge,
    epoch: Gauge,
    views_ended: Family<Label, Counter>,
    commit_latency: Histogram,
    peers: Gauge,
    bytes: Family<Label, Counter>,
    sync_requests: Family<Label, Counter>,
    store_write_latency: Histogram,
    refused: Family<Label, Counter>,
    /// When this node first saw each uncommitted block (proposed or received), for the
    /// commit latency.
    seen: Mutex<HashMap<hotstuff_core::BlockHash, Instant>>,
}

/// Blocks whose first sighting is kept for the commit latency (older ones are forgotten).
const MAX_SEEN: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every node metric at zero.
    #[must_use]
    pub fn new() -> Self {
        let seconds = |start| Histogram::new(exponential_buckets(start, 2.0, 16));
        let inner = Inner {
            registry: Mutex::new(Registry::default()),
            hooks: Mutex::new(Vec::new()),
            committed_height: Gauge::default(),
            view: Gauge::default(),
            epoch: Gauge::default(),
            views_ended: Family::default(),
            commit_latency: seconds(0.001),
            peers: Gauge::default(),
            bytes: Family::default(),
            sync_requests: Family::default(),
            store_write_latency: seconds(0.000_05),
            refused: Family::default(),
            seen: Mutex::new(HashMap::new()),
        };
        let m = Metrics(Arc::new(inner));
        let i = &m.0;
        m.register(
            "hotstuff_committed_height",
            "Height of the last committed block",
            i.committed_height.clone(),
        );
        m.register("hotstuff_view", "The current view", i.view.clone());
        m.register("hotstuff_epoch", "The epoch (validator set) in force", i.epoch.clone());
        m.register(
            "hotstuff_views_ended",
            "Views ended, by the certificate that ended them (qc: progress, tc: timeout)",
            i.views_ended.clone(),
        );
        m.register(
            "hotstuff_commit_latency_seconds",
            "From this node first seeing a block (proposing or receiving it) to its commit",
            i.commit_latency.clone(),
        );
        m.register(
            "hotstuff_peers_connected",
            "Peer connections open (a pair of peers may hold two: each dials the other)",
            i.peers.clone(),
        );
        m.register(
            "hotstuff_net_bytes",
            "Consensus frame bytes received (in) and handed to the network to send (out; a broadcast once per other validator)",
            i.bytes.clone(),
        );
        m.register(
            "hotstuff_sync_requests",
            "Block sync requests this node made (made) and answered (served)",
            i.sync_requests.clone(),
        );
        m.register(
            "hotstuff_store_write_latency_seconds",
            "Duration of each store write of the consensus loop (fsync included)",
            i.store_write_latency.clone(),
        );
        m.register(
            "hotstuff_inputs_refused",
            "Peer messages the core refused, by kind (stale, invalid, local)",
            i.refused.clone(),
        );
        m
    }

    /// Registers an app's own metric (its `name` is used as given).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.0.registry).register(name, help, metric);
    }

    /// Runs `refresh` before every scrape (to set gauges read from elsewhere).
    pub fn on_scrape(&self, refresh: impl Fn() + Send + Sync + 'static) {
        lock(&self.0.hooks).push(Box::new(refresh));
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn encode(&self) -> String {
        for hook in lock(&self.0.hooks).iter() {
            hook();
        }
        let mut out = String::new();
        if encode(&mut out, &lock(&self.0.registry)).is_err() {
            tracing::error!("cannot encode the metrics");
        }
        out
    }

    /// Records what a node event says (consensus progress, refused messages, connections).
    pub fn event(&self, event: &crate::Event) {
        match event {
            crate::Event::Core(e) => self.core_event(e),
            crate::Event::MessageRefused { error, .. } => self.refused(error.kind()),
            crate::Event::Net(crate::NetEvent::Connected { .. }) => self.peer(true),
            crate::Event::Net(crate::NetEvent::Disconnected { .. }) => self.peer(false),
            _ => {}
        }
    }

    /// Records a consensus event.
    pub fn core_event(&self, event: &CoreEvent) {
        let i = &self.0;
        match event {
            CoreEvent::Proposed { hash, .. } | CoreEvent::ReceivedProposal { hash, .. } => {
                let mut seen = lock(&i.seen);
                if seen.len() < MAX_SEEN {
                    seen.entry(*hash).or_insert_with(Instant::now);
                }
            }
            CoreEvent::Committed { epoch, height, hash, .. } => {
                i.committed_height.set(gauge(height.0));
                i.epoch.set(gauge(epoch.0));
                let mut seen = lock(&i.seen);
                if let Some(at) = seen.remove(hash) {
                    i.commit_latency.observe(at.elapsed().as_secs_f64());
                }
                // Blocks seen long ago that never committed (abandoned): forget them.
                if seen.len() >= MAX_SEEN / 2 {
                    seen.retain(|_, at| at.elapsed() < Duration::from_secs(60));
                }
            }
            CoreEvent::ViewEntered { view, reason, .. } => {
                i.view.set(gauge(view.0));
                let by = match reason {
                    ViewChange::Qc => "qc",
                    ViewChange::Tc => "tc",
                    ViewChange::Start => return,
                };
                i.views_ended.get_or_create(&[("by", by)]).inc();
            }
            CoreEvent::EpochChanged { epoch, .. } => {
                i.epoch.set(gauge(epoch.0));
            }
            CoreEvent::SyncRequested { .. } => {
                i.sync_requests.get_or_create(&[("kind", "made")]).inc();
            }
            _ => {}
        }
    }

    /// Records a sync request this node answered.
    pub fn sync_served(&self) {
        self.0.sync_requests.get_or_create(&[("kind", "served")]).inc();
    }

    /// Records a message the core refused.
    pub fn refused(&self, kind: InputErrorKind) {
        let kind = match kind {
            InputErrorKind::Stale => "stale",
            InputErrorKind::Invalid => "invalid",
            InputErrorKind::Local => "local",
        };
        self.0.refused.get_or_create(&[("kind", kind)]).inc();
    }

    /// Records a peer connection opened (`true`) or closed.
    pub fn peer(&self, connected: bool) {
        if connected {
            self.0.peers.inc();
        } else {
            self.0.peers.dec();
        }
    }

    /// Records frame bytes received (`inbound`) or sent.
    pub fn bytes(&self, inbound: bool, n: usize) {
        let dir = if inbound { "in" } else { "out" };
        self.0.bytes.get_or_create(&[("direction", dir)]).inc_by(n as u64);
    }

    /// Records the duration of a store write.
    pub fn store_write(&self, took: Duration) {
        self.0.store_write_latency.observe(took.as_secs_f64());
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Serves `GET /metrics` over HTTP/1.0 on a listener, one request per connection, on one
/// thread (a scrape is small and rare). Stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Time a scraper may take to send its request and read the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

impl MetricsServer {
    /// Serves `metrics` on `listener`.
    pub fn start(listener: TcpListener, metrics: Metrics) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("hotstuff-metrics".into()).spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Acquire) {
                    break;
                }
                match conn {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &metrics) {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics accept failed");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        })?;
        Ok(MetricsServer { addr, stop, thread: Some(thread) })
    }

    /// The address it serves on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head (at most 8 KiB) and answers it.
fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if head.len() > 8 << 10 {
            return stream.write_all(b"HTTP/1.0 431 Request Header Fields Too Large\r\n\r\n");
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let (status, kind, body) = match (method, path) {
        (b"GET", b"/metrics") => {
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode())
        }
        (b"GET", _) => ("404 Not Found", "text/plain", "not found: the metrics are at /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET /metrics\n".into()),
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}
