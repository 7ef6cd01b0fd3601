//! The async TCP network: one acceptor task, per peer one writer task that owns the peer's
//! bounded queue and (re)connects with exponential back-off, and one reader task per
//! connection. Wire-compatible with `hotstuff-driver-std`'s `TcpNetwork` (same handshake, same
//! frames, same rules: each side sends on the connection it dialled, or on one the peer opened
//! if it has no address for it, and reads from both), so the two drivers form one cluster.
//! Settings are `hotstuff-driver-std`'s [`TcpSettings`].
//!
//! Connection health is the std driver's ([`hotstuff_driver_std::net::health`]): each
//! connection's reader task also runs its heartbeats, sending one when nothing was sent on the
//! connection for a heartbeat interval and ending the connection once nothing arrived for the
//! liveness deadline (while a delivery waits for the consensus task, the connection counts as
//! alive). The writer notices the closed connection within a heartbeat interval and redials
//! with its back-off, and prefers a fresh connection the peer opened over one of its own that
//! went quiet.

pub mod wire;

use hotstuff_core::{ChainId, Keypair, Limits, Message, PublicKey, ValidatorSet};
use hotstuff_driver_std::net::admission::{Admission, Pending};
use hotstuff_driver_std::net::book::{Guests, PeerBook};
use hotstuff_driver_std::net::frame::{is_heartbeat, HEARTBEAT};
use hotstuff_driver_std::net::{decode_frame, health, serve_first, Backoff, Frame};
use hotstuff_driver_std::Metrics;
use hotstuff_driver_std::{FrameError, HandshakeError, NetError, NetEvent, Outbound, TcpSettings};
use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What the network hands the consensus task.
// Boxing the message would cost an allocation per inbound message for no gain (as in the
// core's `Input`).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Inbound {
    /// A decoded message from an authenticated peer.
    Message { from: PublicKey, message: Message },
    /// A connection event.
    Net(NetEvent),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Slot {
    tx: mpsc::Sender<Frame>,
    /// A connection the peer opened, offered to the writer (used when it has none of its own,
    /// or when its own went quiet).
    offered: Arc<Mutex<Option<Arc<Link>>>>,
    /// The address its writer dials (`host:port`, resolved at each dial), if any.
    addr: Arc<Mutex<Option<String>>>,
}

/// One authenticated connection: its write half (the writer's frames and the reader task's
/// heartbeats take turns), a handle that closes the socket under both halves, and the times of
/// the last bytes each way.
struct Link {
    write: tokio::sync::Mutex<OwnedWriteHalf>,
    closer: std::net::TcpStream,
    /// Origin of the timestamps below.
    epoch: Instant,
    /// Milliseconds since `epoch` when bytes last arrived (or a delivery to the consensus task
    /// ended).
    last_rx: AtomicU64,
    /// Milliseconds since `epoch` when frames or a heartbeat were last sent.
    last_tx: AtomicU64,
    /// A received message is waiting for room in the consensus task's inbox.
    delivering: AtomicBool,
    closed: AtomicBool,
}

impl Link {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn since(&self, stamp: &AtomicU64) -> Duration {
        Duration::from_millis(self.now().saturating_sub(stamp.load(Ordering::Relaxed)))
    }

    fn rx_idle(&self) -> Duration {
        self.since(&self.last_rx)
    }

    fn touch_rx(&self) {
        self.last_rx.store(self.now(), Ordering::Relaxed);
    }

    fn touch_tx(&self) {
        self.last_tx.store(self.now(), Ordering::Relaxed);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ends the connection for its reader and writer.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.closer.shutdown(std::net::Shutdown::Both);
    }
}

/// A read half that records when bytes arrive on its link.
struct LinkRead {
    inner: OwnedReadHalf,
    link: Arc<Link>,
}

impl AsyncRead for LinkRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.link.touch_rx();
        }
        poll
    }
}

struct Shared {
    key: Keypair,
    chain: ChainId,
    limits: Limits,
    inbox: mpsc::Sender<Inbound>,
    /// Counts the frame bytes received, if the node keeps metrics.
    metrics: Option<Metrics>,
    /// The settings (their listener taken; limits checked by the builder).
    tcp: TcpSettings,
    /// Inbound connections per authenticated peer.
    inbound: Mutex<BTreeMap<PublicKey, usize>>,
    /// Inbound handshake slots (in total and per source address), and the refusal counter:
    /// refusals are logged at a bounded rate and only the first of each kind per window
    /// reaches the inbox.
    admission: Arc<Admission>,
    allowed: RwLock<BTreeSet<PublicKey>>,
    configured: BTreeSet<PublicKey>,
    /// Keys outside the allow-list connected as listeners.
    guests: Guests,
    /// Members the peer book named at its last change.
    book: PeerBook,
    slots: Mutex<BTreeMap<PublicKey, Slot>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// The running network: the consensus task's [`Outbound`] side, and the handle that stops it.
pub(crate) struct TcpNetwork {
    shared: Arc<Shared>,
}

/// The sending side given to the engine.
pub(crate) struct Outgoing {
    shared: Arc<Shared>,
}

impl TcpNetwork {
    /// Binds the listener (if any) and starts the acceptor and one writer per configured peer.
    pub(crate) async fn start(
        mut settings: TcpSettings,
        key: Keypair,
        chain: ChainId,
        limits: Limits,
        validators: &ValidatorSet,
        inbox: mpsc::Sender<Inbound>,
        metrics: Option<Metrics>,
    ) -> Result<(Self, Option<SocketAddr>), NetError> {
        let listener = match (settings.listener.take(), settings.listen) {
            (Some(l), _) => {
                l.set_nonblocking(true)?;
                Some(TcpListener::from_std(l)?)
            }
            (None, Some(addr)) => Some(TcpListener::bind(addr).await?),
            (None, None) => None,
        };
        let local_addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let me = key.public();
        settings.peers.remove(&me);
        let configured: BTreeSet<PublicKey> = settings.peers.keys().copied().collect();
        let shared = Arc::new(Shared {
            key,
            chain,
            limits,
            inbox,
            metrics,
            inbound: Mutex::new(BTreeMap::new()),
            admission: Admission::new("consensus", settings.max_handshakes, settings.max_handshakes_per_ip),
            allowed: RwLock::new(BTreeSet::new()),
            configured,
            guests: Guests::new(settings.max_guests),
            book: PeerBook::default(),
            tcp: TcpSettings {
                send_queue: settings.send_queue.max(1),
                max_handshakes: settings.max_handshakes.max(1),
                max_connections_per_peer: settings.max_connections_per_peer.max(1),
                backoff_max: settings.backoff_max.max(settings.backoff_min),
                ..settings
            },
            slots: Mutex::new(BTreeMap::new()),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        shared.set_allowed(validators);
        for (peer, addr) in &shared.tcp.peers {
            shared.slot(*peer, addr.map(|a| a.to_string()));
        }
        if let Some(listener) = listener {
            tracing::info!(addr = ?local_addr, "listening");
            shared.spawn("accept", |sh| async move { accept_loop(&sh, listener).await });
        }
        Ok((TcpNetwork { shared }, local_addr))
    }

    pub(crate) fn outgoing(&self) -> Outgoing {
        Outgoing { shared: self.shared.clone() }
    }

    /// Stops every task and waits for them.
    pub(crate) async fn shutdown(self) {
        let sh = self.shared;
        sh.stop.cancel();
        lock(&sh.slots).clear();
        sh.tasks.close();
        sh.tasks.wait().await;
    }
}

impl Outgoing {
    /// Queues `frame` for every connected peer, `first` (if connected) before the others.
    fn broadcast_from(&mut self, first: Option<PublicKey>, frame: Frame) {
        let mut targets: Vec<(PublicKey, mpsc::Sender<Frame>)> =
            lock(&self.shared.slots).iter().map(|(k, s)| (*k, s.tx.clone())).collect();
        serve_first(&mut targets, first, |(k, _)| *k);
        for (peer, tx) in targets {
            enqueue(&tx, peer, frame.clone());
        }
    }
}

impl Outbound for Outgoing {
    fn send(&mut self, to: PublicKey, frame: Frame) {
        let tx = lock(&self.shared.slots).get(&to).map(|s| s.tx.clone());
        match tx {
            Some(tx) => enqueue(&tx, to, frame),
            None => tracing::debug!(peer = %to, "no connection to peer; message dropped"),
        }
    }

    fn broadcast(&mut self, frame: Frame) {
        self.broadcast_from(None, frame);
    }

    /// `first`'s writer task is woken before the others'.
    fn broadcast_first(&mut self, first: PublicKey, frame: Frame) {
        self.broadcast_from(Some(first), frame);
    }

    fn validators_changed(&mut self, validators: &ValidatorSet) {
        self.shared.set_allowed(validators);
    }

    fn peers_changed(&mut self, peers: &[(PublicKey, String)]) {
        let sh = &self.shared;
        let dialled = |k: &PublicKey| lock(&sh.slots).get(k).is_some_and(|s| lock(&s.addr).is_some());
        let change = sh.book.update(&sh.key.public(), peers, &sh.configured, dialled, |k| sh.is_allowed(k));
        for (key, addr) in change.dial {
            sh.slot(key, Some(addr));
        }
        for gone in change.drop {
            tracing::info!(peer = %gone, "no longer a member: connection dropped");
            lock(&sh.slots).remove(&gone);
        }
    }
}

/// Queues without waiting: a full queue drops the frame (consensus tolerates loss).
fn enqueue(tx: &mpsc::Sender<Frame>, peer: PublicKey, frame: Frame) {
    match tx.try_send(frame) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::debug!(peer = %peer, "send queue full; message dropped");
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

impl Shared {
    fn is_allowed(&self, key: &PublicKey) -> bool {
        self.allowed.read().unwrap_or_else(PoisonError::into_inner).contains(key)
    }

    fn set_allowed(&self, validators: &ValidatorSet) {
        let me = self.key.public();
        let mut allowed = self.configured.clone();
        allowed.extend(validators.members().iter().map(|v| v.key).filter(|k| *k != me));
        // A guest that became a member is a member now.
        self.guests.now_allowed(&allowed);
        *self.allowed.write().unwrap_or_else(PoisonError::into_inner) = allowed;
    }

    /// A connection of `peer` ended: a guest with no connection left is forgotten.
    fn guest_left(&self, peer: &PublicKey) {
        if self.is_allowed(peer) || lock(&self.inbound).get(peer).is_some_and(|n| *n > 0) {
            return;
        }
        if self.guests.left(peer) {
            lock(&self.slots).remove(peer);
        }
    }

    /// Spawns a task that ends when the network stops.
    fn spawn<F>(self: &Arc<Self>, name: &'static str, f: impl FnOnce(Arc<Shared>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let span = tracing::info_span!("net", node = %self.key.public(), task = name);
        let stop = self.stop.clone();
        let fut = f(self.clone());
        self.tasks.spawn(
            async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = fut => {}
                }
            }
            .instrument(span),
        );
    }

    /// The writer's queue for `peer`, creating the slot and its writer task if needed.
    fn slot(self: &Arc<Self>, peer: PublicKey, addr: Option<String>) -> Option<mpsc::Sender<Frame>> {
        let mut slots = lock(&self.slots);
        if let Some(s) = slots.get(&peer) {
            if addr.is_some() {
                *lock(&s.addr) = addr;
            }
            return Some(s.tx.clone());
        }
        if self.stop.is_cancelled() {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.tcp.send_queue);
        let offered = Arc::new(Mutex::new(None));
        let target = Arc::new(Mutex::new(addr));
        slots.insert(peer, Slot { tx: tx.clone(), offered: offered.clone(), addr: target.clone() });
        drop(slots);
        self.spawn("writer", move |sh| async move { writer_loop(&sh, peer, &target, rx, &offered).await });
        Some(tx)
    }

    fn offer(self: &Arc<Self>, peer: PublicKey, link: Arc<Link>) {
        self.slot(peer, None);
        if let Some(s) = lock(&self.slots).get(&peer) {
            *lock(&s.offered) = Some(link);
        }
    }

    fn heartbeat(&self) -> Duration {
        health::heartbeat_interval(self.tcp.liveness_timeout)
    }

    fn report(&self, event: NetEvent) {
        // Fails only when the node is stopping; never waits (a full inbox drops the report
        // rather than hold up a connection).
        let _ = self.inbox.try_send(Inbound::Net(event));
    }

    fn refuse(&self, addr: Option<SocketAddr>, peer: Option<PublicKey>, error: NetError) {
        if !self.stop.is_cancelled() && self.admission.refusals().record(error.kind()) {
            self.report(NetEvent::Refused { addr, peer, error });
        }
    }
}

async fn accept_loop(sh: &Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of file descriptors and the like: do not spin on it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match sh.admission.admit(addr.ip()) {
            Ok(slot) => slot,
            Err(error) => {
                drop(stream);
                sh.refuse(Some(addr), None, error.into());
                continue;
            }
        };
        sh.spawn("inbound", move |sh| async move { inbound(&sh, stream, addr, slot).await });
    }
}

/// Runs the handshake within the handshake timeout.
async fn handshake(
    sh: &Shared,
    stream: &mut TcpStream,
    expect: Option<PublicKey>,
    limit: Duration,
) -> Result<PublicKey, NetError> {
    stream.set_nodelay(true)?;
    // Inbound, an unknown key may connect as a listener (a guest) within `max_guests`.
    let run = wire::run_handshake(
        stream,
        &sh.key,
        sh.chain,
        |k| sh.is_allowed(k) || (expect.is_none() && sh.guests.may_admit(k)),
        expect,
    );
    match tokio::time::timeout(limit, run).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(HandshakeError::Io(Arc::new(ErrorKind::TimedOut.into())).into()),
    }
}

async fn inbound(sh: &Arc<Shared>, mut stream: TcpStream, addr: SocketAddr, slot: Pending) {
    let result = handshake(sh, &mut stream, None, sh.tcp.handshake_timeout).await;
    drop(slot);
    let peer = match result {
        Ok(peer) => peer,
        Err(error) => {
            sh.admission.failed(addr.ip());
            return sh.refuse(Some(addr), None, error);
        }
    };
    if !sh.is_allowed(&peer) {
        match sh.guests.admit(peer) {
            Some(true) => tracing::info!(%peer, %addr, "a listener outside the allow-list connected"),
            Some(false) => {}
            None => return sh.refuse(Some(addr), Some(peer), NetError::TooManyConnections(sh.guests.max())),
        }
    }
    {
        let mut inbound = lock(&sh.inbound);
        let n = inbound.entry(peer).or_insert(0);
        if *n >= sh.tcp.max_connections_per_peer {
            drop(inbound);
            return sh.refuse(
                Some(addr),
                Some(peer),
                NetError::TooManyConnections(sh.tcp.max_connections_per_peer),
            );
        }
        *n += 1;
    }
    let (read, link) = match split(sh, stream) {
        Ok(parts) => parts,
        Err(error) => return sh.refuse(Some(addr), Some(peer), error),
    };
    sh.offer(peer, link.clone());
    sh.report(NetEvent::Connected { peer, addr, outbound: false });
    read_loop(sh, peer, read, addr, &link).await;
    if let Some(n) = lock(&sh.inbound).get_mut(&peer) {
        *n = n.saturating_sub(1);
    }
    sh.guest_left(&peer);
}

/// Sets an authenticated connection up for its life: the kernel's keepalive and user timeout
/// from the liveness deadline, and the link shared by the reader task and the writer (when the
/// reader ends, the whole connection must end, as in the std driver).
fn split(sh: &Shared, stream: TcpStream) -> Result<(OwnedReadHalf, Arc<Link>), NetError> {
    let stream = stream.into_std()?;
    if let Err(error) = health::tune(&stream, sh.tcp.liveness_timeout) {
        tracing::debug!(%error, "cannot set TCP keepalive or user timeout");
    }
    let closer = stream.try_clone()?;
    let (read, write) = TcpStream::from_std(stream)?.into_split();
    let link = Arc::new(Link {
        write: tokio::sync::Mutex::new(write),
        closer,
        epoch: Instant::now(),
        last_rx: AtomicU64::new(0),
        last_tx: AtomicU64::new(0),
        delivering: AtomicBool::new(false),
        closed: AtomicBool::new(false),
    });
    Ok((read, link))
}

/// Reads frames until the connection ends, misbehaves or stays silent for the liveness
/// deadline, sending heartbeats meanwhile; then closes it.
async fn read_loop(sh: &Shared, peer: PublicKey, read: OwnedReadHalf, addr: SocketAddr, link: &Arc<Link>) {
    // Both run for the connection's whole life; whichever ends first ends it.
    let reason = tokio::select! {
        reason = read_frames(sh, peer, LinkRead { inner: read, link: link.clone() }, addr, link) => reason,
        reason = heartbeats(sh, link) => reason,
    };
    link.close();
    if let Some(reason) = reason.filter(|_| !sh.stop.is_cancelled()) {
        sh.report(NetEvent::Disconnected { peer, reason });
    }
}

/// Every heartbeat interval: ends the connection if nothing arrived for the liveness deadline
/// (unless a delivery is waiting for the consensus task), and sends a heartbeat if nothing was
/// sent for an interval and no frames are being written. Returns why the connection ended.
async fn heartbeats(sh: &Shared, link: &Link) -> Option<String> {
    let every = sh.heartbeat();
    let liveness = sh.tcp.liveness_timeout;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if link.is_closed() {
            return Some("closed".to_string());
        }
        if link.delivering.load(Ordering::Acquire) {
            link.touch_rx();
        }
        let idle = link.rx_idle();
        if idle >= liveness {
            return Some(format!(
                "nothing received for {} ms (liveness timeout {} ms)",
                idle.as_millis(),
                liveness.as_millis()
            ));
        }
        if link.since(&link.last_tx) < every {
            continue;
        }
        let Ok(mut w) = link.write.try_lock() else { continue }; // frames are going out
        let write = async {
            w.write_all(&HEARTBEAT).await?;
            w.flush().await
        };
        match tokio::time::timeout(sh.tcp.write_timeout, write).await {
            Ok(Ok(())) => link.touch_tx(),
            Ok(Err(e)) => return Some(e.to_string()),
            Err(_) => return Some("heartbeat write timed out".to_string()),
        }
    }
}

/// Reads and delivers frames; returns why the connection ended (`None`: refused or stopping).
async fn read_frames(
    sh: &Shared,
    peer: PublicKey,
    read: LinkRead,
    addr: SocketAddr,
    link: &Link,
) -> Option<String> {
    let mut reader = BufReader::with_capacity(64 << 10, read);
    loop {
        let frame = wire::read_frame(&mut reader, sh.limits.max_frame, sh.tcp.frame_timeout).await;
        if let (Ok(Some(bytes)), Some(m)) = (&frame, &sh.metrics) {
            m.bytes(true, bytes.len());
        }
        match frame {
            Ok(Some(bytes)) if is_heartbeat(&bytes) => {}
            Ok(Some(bytes)) => match decode_frame(&bytes, sh.chain, &sh.limits) {
                Ok(message) => {
                    // Waits while the consensus task is behind (back-pressure onto the peer).
                    link.delivering.store(true, Ordering::Release);
                    let sent = sh.inbox.send(Inbound::Message { from: peer, message }).await;
                    link.touch_rx();
                    link.delivering.store(false, Ordering::Release);
                    if sent.is_err() {
                        return None;
                    }
                }
                Err(error) => {
                    sh.refuse(Some(addr), Some(peer), error);
                    return None;
                }
            },
            Ok(None) => return Some("closed by peer".to_string()),
            Err(FrameError::Io(e)) => return Some(e.to_string()),
            Err(error) => {
                sh.refuse(Some(addr), Some(peer), error.into());
                return None;
            }
        }
    }
}

/// Connects to `peer` at `addr` and runs the handshake, each bounded by the liveness deadline
/// as well as the handshake timeout (a silent link fails within the deadline); starts the
/// connection's reader task.
async fn dial(sh: &Arc<Shared>, peer: PublicKey, addr: SocketAddr) -> Result<Arc<Link>, NetError> {
    let limit = sh.tcp.handshake_timeout.min(sh.tcp.liveness_timeout);
    let connect = tokio::time::timeout(limit, TcpStream::connect(addr));
    let mut stream =
        connect.await.map_err(|_| NetError::from(std::io::Error::from(ErrorKind::TimedOut)))??;
    handshake(sh, &mut stream, Some(peer), limit).await?;
    let (read, link) = split(sh, stream)?;
    let reader = link.clone();
    sh.spawn("reader", move |sh| async move { read_loop(&sh, peer, read, addr, &reader).await });
    sh.report(NetEvent::Connected { peer, addr, outbound: true });
    Ok(link)
}

/// The connection the peer offered, if it is still open.
fn take_offered(offered: &Mutex<Option<Arc<Link>>>) -> Option<Arc<Link>> {
    lock(offered).take().filter(|l| !l.is_closed())
}

/// Owns `peer`'s queue: keeps a connection (dialled, or offered by the acceptor) and writes,
/// several queued frames per flush. Wakes at least every heartbeat interval to drop a
/// connection its reader closed.
async fn writer_loop(
    sh: &Arc<Shared>,
    peer: PublicKey,
    target: &Mutex<Option<String>>,
    mut rx: mpsc::Receiver<Frame>,
    offered: &Mutex<Option<Arc<Link>>>,
) {
    let mut backoff = Backoff::new(sh.tcp.backoff_min, sh.tcp.backoff_max);
    let mut conn: Option<Arc<Link>> = None;
    let mut batch: Vec<Frame> = Vec::new();
    let every = sh.heartbeat();
    loop {
        if conn.as_ref().is_some_and(|c| c.is_closed()) {
            tracing::debug!(peer = %peer, "connection closed; reconnecting");
            conn = None;
        }
        // Prefer a fresh connection from the peer over one of ours that went quiet.
        if conn.as_ref().is_some_and(|c| c.rx_idle() > 2 * every) {
            if let Some(fresh) = take_offered(offered) {
                tracing::debug!(peer = %peer, "connection quiet; using the one the peer opened");
                if let Some(stale) = conn.replace(fresh) {
                    stale.close();
                }
            }
        }
        let addr = lock(target).clone();
        if conn.is_none() {
            if let Some(name) = addr.as_ref().filter(|_| Instant::now() >= backoff.next()) {
                let started = Instant::now();
                // Resolved at each dial: a DNS name may move.
                match tokio::net::lookup_host(name.as_str()).await.map(|mut a| a.next()) {
                    Ok(Some(a)) => {
                        let dialled = dial(sh, peer, a).await;
                        conn =
                            backoff.record(started, dialled, peer, a, |e| sh.refuse(Some(a), Some(peer), e));
                    }
                    other => {
                        let error = other.err().map_or("no address".to_string(), |e| e.to_string());
                        tracing::debug!(%peer, address = %name, %error, "cannot resolve the peer's address");
                        backoff.failed(started);
                    }
                }
            }
        }
        let wake = match (conn.is_some(), addr) {
            (false, Some(_)) => backoff.next().min(Instant::now() + every),
            _ => Instant::now() + every,
        };
        let frame = tokio::select! {
            f = rx.recv() => f,
            () = tokio::time::sleep_until(wake.into()) => continue,
        };
        let Some(frame) = frame else { break };
        if conn.is_none() {
            conn = take_offered(offered);
        }
        let Some(link) = conn.as_ref() else { continue }; // unreachable peer: dropped
        batch.push(frame);
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let result = {
            let mut w = link.write.lock().await;
            tokio::time::timeout(sh.tcp.write_timeout, wire::write_frames(&mut *w, &batch)).await
        };
        batch.clear();
        match result.unwrap_or_else(|_| Err(ErrorKind::TimedOut.into())) {
            Ok(()) => link.touch_tx(),
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "write failed; reconnecting");
                link.close();
                conn = None;
            }
        }
    }
    if let Some(link) = conn {
        link.close();
    }
}
