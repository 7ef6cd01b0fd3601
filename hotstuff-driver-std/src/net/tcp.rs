//! The default network: TCP, one thread per connection direction, bounded per-peer queues.
//!
//! Threads: one acceptor; per accepted connection one thread that runs the handshake and then
//! reads; per peer one writer that owns the peer's bounded queue, dials the peer's configured
//! address (with exponential back-off) or writes on a connection the peer opened, and a reader
//! for each connection it dials. Nothing polls: every thread blocks in `accept`, `read` or a
//! queue receive with a deadline. A peer that is slow or gone fills only its own queue; frames
//! for it are dropped when that queue is full.
//!
//! Connection health ([`super::health`]): every connection's reader wakes at least every
//! heartbeat interval; it sends a heartbeat when nothing was sent on the connection for that
//! long, and ends the connection when nothing arrived on it for the liveness deadline. The
//! writer of the peer sees the connection closed at its next wake-up (at most one heartbeat
//! interval later) and redials with its back-off. A writer whose connection went quiet (nothing
//! received for two heartbeat intervals) switches to a fresh connection the peer opened, if
//! there is one.

use super::admission::{Admission, Deadline, Pending};
use super::book::{Guests, PeerBook};
use super::frame::{is_heartbeat, read_frame, write_frame};
use super::{handshake, health, Backoff, Frame, Inbox, NetContext, NetEvent, Network};
use crate::error::{FrameError, NetError};
use hotstuff_core::{ChainId, Keypair, Limits, PublicKey, ValidatorSet};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Settings of the TCP network (see each field for its default).
#[derive(Debug)]
pub struct TcpSettings {
    /// Where to listen (default: nowhere; a node that does not listen can still dial out).
    pub listen: Option<SocketAddr>,
    /// An already bound listener, used instead of `listen` (handy for port 0).
    pub listener: Option<TcpListener>,
    /// Known peers: key -> address to dial (`None`: the peer dials us, e.g. a listener).
    pub peers: BTreeMap<PublicKey, Option<SocketAddr>>,
    /// Frames queued per peer before new ones are dropped (default 1,024).
    pub send_queue: usize,
    /// First reconnect delay (default 50 ms), doubled per failure up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay (default 1 s).
    pub backoff_max: Duration,
    /// Time allowed to connect and complete the whole handshake (default 2 s): a deadline for
    /// the exchange, not per read, so a peer trickling bytes cannot hold a handshake slot.
    pub handshake_timeout: Duration,
    /// A write blocked this long drops the connection (default 5 s).
    pub write_timeout: Duration,
    /// Time a frame may take to arrive whole once its first byte is in (default 30 s); a peer
    /// that stalls inside a frame is disconnected. Honoured by `hotstuff-driver-tokio`; the
    /// std readers block per read without a deadline (a stalled peer holds only its thread).
    pub frame_timeout: Duration,
    /// Inbound connections allowed in their handshake at once (default 64).
    pub max_handshakes: usize,
    /// Inbound connections allowed in their handshake at once from one source address
    /// (default 8), so one host cannot take every handshake slot.
    pub max_handshakes_per_ip: usize,
    /// Inbound connections kept per authenticated peer (default 4); more are refused.
    pub max_connections_per_peer: usize,
    /// A connection on which nothing arrived for this long is dropped and its peer redialled
    /// (default 1 s, about one base view timeout). Each side sends a heartbeat on a connection
    /// it sent nothing on for a quarter of it; it also sets TCP keepalive and (Linux)
    /// `TCP_USER_TIMEOUT`, and bounds each step of dialling (connect, each handshake read),
    /// together with `handshake_timeout`. Use the same value on every node of a chain; see
    /// [`super::health`].
    pub liveness_timeout: Duration,
    /// Inbound connections from keys outside the allow-list (the configured peers and the
    /// validator set in force) accepted at once as listeners (default 0: none). Each is
    /// authenticated by the handshake and served like a configured listener (it receives what
    /// is broadcast and may ask for block sync); past this many, further unknown keys are
    /// refused. It lets a new machine follow the chain, and then join it, without being
    /// configured on every node.
    pub max_guests: usize,
}

impl Default for TcpSettings {
    fn default() -> Self {
        TcpSettings {
            listen: None,
            listener: None,
            peers: BTreeMap::new(),
            send_queue: 1024,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(30),
            max_handshakes: 64,
            max_handshakes_per_ip: 8,
            max_connections_per_peer: 4,
            liveness_timeout: Duration::from_secs(1),
            max_guests: 0,
        }
    }
}

/// The TCP [`Network`].
pub struct TcpNetwork {
    settings: Option<TcpSettings>,
    shared: Option<Arc<Shared>>,
    local_addr: Option<SocketAddr>,
}

impl TcpNetwork {
    /// Queues `frame` for every connected peer, `first` (if connected) before the others.
    fn broadcast_from(&mut self, first: Option<PublicKey>, frame: Frame) {
        let Some(sh) = &self.shared else { return };
        let mut targets: Vec<(PublicKey, SyncSender<Frame>)> =
            lock(&sh.slots).iter().map(|(k, s)| (*k, s.tx.clone())).collect();
        super::serve_first(&mut targets, first, |(k, _)| *k);
        for (peer, tx) in targets {
            enqueue(&tx, peer, frame.clone());
        }
    }
    /// A network with these settings; nothing runs until the node starts it.
    #[must_use]
    pub fn new(settings: TcpSettings) -> Self {
        TcpNetwork { settings: Some(settings), shared: None, local_addr: None }
    }
}

struct Slot {
    tx: SyncSender<Frame>,
    /// A connection the peer opened, offered to the writer (used when we have none of our own,
    /// or when ours went quiet).
    offered: Arc<Mutex<Option<Arc<Link>>>>,
    /// The address its writer dials (`host:port`, resolved at each dial), if any.
    addr: Arc<Mutex<Option<String>>>,
}

/// One authenticated connection: shared by its reader (which reads, and sends heartbeats) and
/// the peer's writer (which sends frames), with the times of the last bytes each way.
struct Link {
    /// Reads go through `&TcpStream`; `shutdown` ends the connection for every user.
    stream: TcpStream,
    /// The write side: frames and heartbeats take turns, so they never interleave.
    write: Mutex<TcpStream>,
    /// Origin of the timestamps below.
    epoch: Instant,
    /// Milliseconds since `epoch` when bytes last arrived.
    last_rx: AtomicU64,
    /// Milliseconds since `epoch` when a frame or heartbeat was last sent.
    last_tx: AtomicU64,
    closed: AtomicBool,
}

impl Link {
    fn new(stream: TcpStream) -> std::io::Result<Arc<Link>> {
        let write = Mutex::new(stream.try_clone()?);
        Ok(Arc::new(Link {
            stream,
            write,
            epoch: Instant::now(),
            last_rx: AtomicU64::new(0),
            last_tx: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }))
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn since(&self, stamp: &AtomicU64) -> Duration {
        Duration::from_millis(self.now().saturating_sub(stamp.load(Ordering::Relaxed)))
    }

    /// How long nothing has arrived.
    fn rx_idle(&self) -> Duration {
        self.since(&self.last_rx)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ends the connection for its reader and writer.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Sends one frame (waits for a heartbeat being written).
    fn send(&self, body: &[u8]) -> std::io::Result<()> {
        write_frame(&mut *lock(&self.write), body)?;
        self.last_tx.store(self.now(), Ordering::Relaxed);
        Ok(())
    }

    /// Sends a heartbeat if nothing was sent for `interval` and no frame is being written
    /// (a frame being written shows the peer the link is alive just as well).
    fn heartbeat(&self, interval: Duration) -> std::io::Result<()> {
        if self.since(&self.last_tx) < interval {
            return Ok(());
        }
        let mut w = match self.write.try_lock() {
            Ok(w) => w,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(()),
        };
        write_frame(&mut *w, &[])?;
        self.last_tx.store(self.now(), Ordering::Relaxed);
        Ok(())
    }
}

/// A connection's reading side: wakes every heartbeat interval (the socket's read timeout) to
/// send a heartbeat when due and to end the connection once nothing arrived for the liveness
/// deadline; records when bytes arrive. Sits under the frame reader, which sees only bytes.
struct LinkReader<'a> {
    sh: &'a Shared,
    link: &'a Link,
}

impl Read for LinkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let result = (&self.link.stream).read(buf);
            self.link.heartbeat(self.sh.heartbeat)?;
            match result {
                Ok(n) => {
                    if n > 0 {
                        self.link.last_rx.store(self.link.now(), Ordering::Relaxed);
                    }
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    let idle = self.link.rx_idle();
                    if self.sh.stopping() || self.link.is_closed() {
                        return Err(e);
                    }
                    if idle >= self.sh.liveness {
                        return Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            format!(
                                "nothing received for {} ms (liveness timeout {} ms)",
                                idle.as_millis(),
                                self.sh.liveness.as_millis()
                            ),
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

struct Shared {
    key: Keypair,
    chain: ChainId,
    limits: Limits,
    inbox: Inbox,
    send_queue: usize,
    backoff: (Duration, Duration),
    handshake_timeout: Duration,
    write_timeout: Duration,
    /// Inbound handshake slots, and the refusal counter (refusals are logged at a bounded rate
    /// and only the first of each kind per window reaches the inbox).
    admission: Arc<Admission>,
    max_per_peer: usize,
    /// The liveness deadline of a connection.
    liveness: Duration,
    /// How often an idle side sends a heartbeat (and every reader wakes).
    heartbeat: Duration,
    /// Bound of each step of dialling (connect, each handshake read or write).
    dial_timeout: Duration,
    /// Inbound connections per authenticated peer.
    inbound: Mutex<BTreeMap<PublicKey, usize>>,
    stop: AtomicBool,
    allowed: RwLock<BTreeSet<PublicKey>>,
    configured: BTreeSet<PublicKey>,
    /// Keys outside the allow-list connected as listeners.
    guests: Guests,
    /// Members the peer book named at its last change.
    book: PeerBook,
    slots: Mutex<BTreeMap<PublicKey, Slot>>,
    streams: Mutex<BTreeMap<u64, TcpStream>>,
    next_stream: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a stream from the shutdown registry when its user is done with it.
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(&self.shared.streams).remove(&self.id);
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn is_allowed(&self, key: &PublicKey) -> bool {
        self.allowed.read().unwrap_or_else(PoisonError::into_inner).contains(key)
    }

    fn spawn(self: &Arc<Self>, name: &str, f: impl FnOnce(Arc<Shared>) + Send + 'static) {
        let mut threads = lock(&self.threads);
        if self.stopping() {
            return;
        }
        threads.retain(|t| !t.is_finished());
        let sh = self.clone();
        let span = tracing::info_span!("net", node = %self.key.public(), thread = name);
        match std::thread::Builder::new().name(name.to_string()).spawn(move || span.in_scope(|| f(sh))) {
            Ok(t) => threads.push(t),
            Err(e) => tracing::error!(error = %e, "cannot spawn a network thread"),
        }
    }

    /// Keeps a handle to `stream` so that shutdown can unblock whoever reads or writes it.
    fn register(&self, stream: &TcpStream) -> Option<Registered<'_>> {
        let clone = stream.try_clone().ok()?;
        let mut streams = lock(&self.streams);
        if self.stopping() {
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        }
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        streams.insert(id, clone);
        Some(Registered { shared: self, id })
    }

    /// The writer's queue for `peer`, creating the slot and its writer thread if needed.
    fn slot(self: &Arc<Self>, peer: PublicKey, addr: Option<String>) -> Option<SyncSender<Frame>> {
        let mut slots = lock(&self.slots);
        if let Some(s) = slots.get(&peer) {
            if addr.is_some() {
                *lock(&s.addr) = addr;
            }
            return Some(s.tx.clone());
        }
        if self.stopping() {
            return None;
        }
        let (tx, rx) = sync_channel(self.send_queue);
        let offered = Arc::new(Mutex::new(None));
        let target = Arc::new(Mutex::new(addr));
        slots.insert(peer, Slot { tx: tx.clone(), offered: offered.clone(), addr: target.clone() });
        drop(slots);
        self.spawn("hotstuff-net-writer", move |sh| writer_loop(&sh, peer, &target, &rx, &offered));
        Some(tx)
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

    fn offer(self: &Arc<Self>, peer: PublicKey, link: Arc<Link>) {
        self.slot(peer, None);
        if let Some(s) = lock(&self.slots).get(&peer) {
            *lock(&s.offered) = Some(link);
        }
    }

    fn refuse(&self, addr: Option<SocketAddr>, peer: Option<PublicKey>, error: NetError) {
        if !self.stopping() && self.admission.refusals().record(error.kind()) {
            self.inbox.report(NetEvent::Refused { addr, peer, error });
        }
    }
}

impl Network for TcpNetwork {
    fn start(&mut self, ctx: NetContext) -> Result<(), NetError> {
        let Some(mut settings) = self.settings.take() else { return Ok(()) };
        let listener = match (settings.listener.take(), settings.listen) {
            (Some(l), _) => Some(l),
            (None, Some(addr)) => Some(TcpListener::bind(addr)?),
            (None, None) => None,
        };
        self.local_addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let me = ctx.key.public();
        settings.peers.remove(&me);
        let configured: BTreeSet<PublicKey> = settings.peers.keys().copied().collect();
        let mut allowed = configured.clone();
        allowed.extend(ctx.validators.members().iter().map(|v| v.key).filter(|k| *k != me));
        let shared = Arc::new(Shared {
            key: ctx.key,
            chain: ctx.chain,
            limits: ctx.limits,
            inbox: ctx.inbox,
            send_queue: settings.send_queue.max(1),
            backoff: (settings.backoff_min, settings.backoff_max.max(settings.backoff_min)),
            handshake_timeout: settings.handshake_timeout,
            write_timeout: settings.write_timeout,
            admission: Admission::new("consensus", settings.max_handshakes, settings.max_handshakes_per_ip),
            max_per_peer: settings.max_connections_per_peer.max(1),
            liveness: settings.liveness_timeout.max(Duration::from_millis(1)),
            heartbeat: health::heartbeat_interval(settings.liveness_timeout),
            dial_timeout: settings
                .handshake_timeout
                .min(settings.liveness_timeout)
                .max(Duration::from_millis(1)),
            inbound: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            allowed: RwLock::new(allowed),
            configured,
            guests: Guests::new(settings.max_guests),
            book: PeerBook::default(),
            slots: Mutex::new(BTreeMap::new()),
            streams: Mutex::new(BTreeMap::new()),
            next_stream: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        for (peer, addr) in &settings.peers {
            shared.slot(*peer, addr.map(|a| a.to_string()));
        }
        if let Some(listener) = listener {
            tracing::info!(addr = ?self.local_addr, "listening");
            shared.spawn("hotstuff-net-accept", move |sh| accept_loop(&sh, &listener));
        }
        self.shared = Some(shared);
        Ok(())
    }

    fn send(&mut self, to: PublicKey, frame: Frame) {
        let Some(sh) = &self.shared else { return };
        let tx = lock(&sh.slots).get(&to).map(|s| s.tx.clone());
        match tx {
            Some(tx) => enqueue(&tx, to, frame),
            None => tracing::debug!(peer = %to, "no connection to peer; message dropped"),
        }
    }

    fn broadcast(&mut self, frame: Frame) {
        self.broadcast_from(None, frame);
    }

    /// `first`'s writer thread is woken before the others'.
    fn broadcast_first(&mut self, first: PublicKey, frame: Frame) {
        self.broadcast_from(Some(first), frame);
    }

    fn validators_changed(&mut self, validators: &ValidatorSet) {
        let Some(sh) = &self.shared else { return };
        let me = sh.key.public();
        let mut allowed = sh.configured.clone();
        allowed.extend(validators.members().iter().map(|v| v.key).filter(|k| *k != me));
        // A guest that became a member is a member now.
        sh.guests.now_allowed(&allowed);
        *sh.allowed.write().unwrap_or_else(PoisonError::into_inner) = allowed;
    }

    fn peers_changed(&mut self, peers: &[(PublicKey, String)]) {
        let Some(sh) = &self.shared else { return };
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

    fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    fn shutdown(&mut self) {
        let Some(sh) = self.shared.take() else { return };
        sh.stop.store(true, Ordering::Release);
        // Writers end when their queue's senders are gone; readers when their socket is shut.
        lock(&sh.slots).clear();
        for s in lock(&sh.streams).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(mut addr) = self.local_addr {
            // Wake the acceptor.
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
        }
        loop {
            let threads = std::mem::take(&mut *lock(&sh.threads));
            if threads.is_empty() {
                break;
            }
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

impl Drop for TcpNetwork {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn enqueue(tx: &SyncSender<Frame>, peer: PublicKey, frame: Frame) {
    match tx.try_send(frame) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => tracing::debug!(peer = %peer, "send queue full; message dropped"),
        Err(TrySendError::Disconnected(_)) => {}
    }
}

fn accept_loop(sh: &Arc<Shared>, listener: &TcpListener) {
    for conn in listener.incoming() {
        if sh.stopping() {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of file descriptors and the like: do not spin on it.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Ok(addr) = stream.peer_addr() else { continue };
        let slot = match sh.admission.admit(addr.ip()) {
            Ok(slot) => slot,
            Err(error) => {
                // Closed at once; counted, and reported at a bounded rate.
                drop(stream);
                sh.refuse(Some(addr), None, error.into());
                continue;
            }
        };
        sh.spawn("hotstuff-net-inbound", move |sh| inbound(&sh, stream, Some(addr), slot));
    }
}

/// Sets the socket up for the handshake (`read` and `write` bound each step).
fn set_timeouts(stream: &TcpStream, read: Duration, write: Duration) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(read))?;
    stream.set_write_timeout(Some(write))
}

/// Sets an authenticated connection up for its life: the reader wakes every heartbeat
/// interval, a write may block for the write timeout, and the kernel knows the deadline.
fn established(sh: &Shared, stream: TcpStream) -> std::io::Result<Arc<Link>> {
    set_timeouts(&stream, sh.heartbeat, sh.write_timeout)?;
    if let Err(error) = health::tune(&stream, sh.liveness) {
        tracing::debug!(%error, "cannot set TCP keepalive or user timeout");
    }
    Link::new(stream)
}

fn inbound(sh: &Arc<Shared>, stream: TcpStream, addr: Option<SocketAddr>, slot: Pending) {
    let registered = sh.register(&stream);
    // The whole handshake has one deadline; `established` sets the connection up for its life.
    let result = stream.set_nodelay(true).map_err(NetError::from).and_then(|()| {
        let mut timed = Deadline::new(&stream, sh.handshake_timeout);
        Ok(handshake::run(
            &mut timed,
            &sh.key,
            sh.chain,
            |k| sh.is_allowed(k) || sh.guests.may_admit(k),
            None,
        )?)
    });
    drop(slot);
    if registered.is_none() {
        return;
    }
    match result {
        Err(error) => {
            if let Some(a) = addr {
                sh.admission.failed(a.ip());
            }
            sh.refuse(addr, None, error);
        }
        Ok(peer) => {
            if !sh.is_allowed(&peer) {
                match sh.guests.admit(peer) {
                    Some(true) => tracing::info!(%peer, ?addr, "a listener outside the allow-list connected"),
                    Some(false) => {}
                    None => {
                        sh.refuse(addr, Some(peer), NetError::TooManyConnections(sh.guests.max()));
                        return;
                    }
                }
            }
            {
                let mut inbound = lock(&sh.inbound);
                let n = inbound.entry(peer).or_insert(0);
                if *n >= sh.max_per_peer {
                    drop(inbound);
                    sh.refuse(addr, Some(peer), NetError::TooManyConnections(sh.max_per_peer));
                    return;
                }
                *n += 1;
            }
            match established(sh, stream) {
                Ok(link) => {
                    sh.offer(peer, link.clone());
                    if let Some(addr) = addr {
                        sh.inbox.report(NetEvent::Connected { peer, addr, outbound: false });
                    }
                    read_loop(sh, peer, &link, addr);
                }
                Err(error) => sh.refuse(addr, Some(peer), error.into()),
            }
            if let Some(n) = lock(&sh.inbound).get_mut(&peer) {
                *n = n.saturating_sub(1);
            }
            sh.guest_left(&peer);
        }
    }
}

/// Reads frames until the connection ends, misbehaves or stays silent for the liveness
/// deadline; sends heartbeats while it waits.
fn read_loop(sh: &Shared, peer: PublicKey, link: &Link, addr: Option<SocketAddr>) {
    let mut reader = BufReader::with_capacity(64 << 10, LinkReader { sh, link });
    let reason = loop {
        match read_frame(&mut reader, sh.limits.max_frame) {
            Ok(Some(bytes)) if is_heartbeat(&bytes) => {}
            Ok(Some(bytes)) => match sh.inbox.deliver_frame(peer, &bytes) {
                Ok(()) => {}
                Err(NetError::Stopped) => break None,
                Err(error) => {
                    sh.refuse(addr, Some(peer), error);
                    break None;
                }
            },
            Ok(None) => break Some("closed by peer".to_string()),
            Err(FrameError::Io(e)) => break Some(e.to_string()),
            Err(error) => {
                sh.refuse(addr, Some(peer), error.into());
                break None;
            }
        }
    };
    link.close();
    if let Some(reason) = reason.filter(|_| !sh.stopping()) {
        sh.inbox.report(NetEvent::Disconnected { peer, reason });
    }
}

/// Connects to `peer` at `addr` and runs the handshake, each step bounded by the dial timeout
/// (a silent link fails within the liveness deadline, not the handshake timeout); starts the
/// connection's reader.
fn dial(sh: &Arc<Shared>, peer: PublicKey, addr: SocketAddr) -> Result<Arc<Link>, NetError> {
    let mut stream = TcpStream::connect_timeout(&addr, sh.dial_timeout)?;
    set_timeouts(&stream, sh.dial_timeout, sh.dial_timeout)?;
    handshake::run(&mut stream, &sh.key, sh.chain, |k| sh.is_allowed(k), Some(peer))?;
    let link = established(sh, stream)?;
    let reader = link.clone();
    sh.spawn("hotstuff-net-reader", move |sh| match sh.register(&reader.stream) {
        Some(_registered) => read_loop(&sh, peer, &reader, Some(addr)),
        None => reader.close(),
    });
    sh.inbox.report(NetEvent::Connected { peer, addr, outbound: true });
    Ok(link)
}

/// The first address `name` (`host:port`) resolves to.
fn resolve(name: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    name.to_socket_addrs()?.next().ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no address"))
}

/// The connection the peer offered, if it is still open.
fn take_offered(offered: &Mutex<Option<Arc<Link>>>) -> Option<Arc<Link>> {
    lock(offered).take().filter(|l| !l.is_closed())
}

/// Owns `peer`'s queue: keeps a connection (dialled, or offered by the acceptor) and writes.
/// Wakes at least every heartbeat interval to drop a connection its reader closed.
fn writer_loop(
    sh: &Arc<Shared>,
    peer: PublicKey,
    target: &Mutex<Option<String>>,
    rx: &Receiver<Frame>,
    offered: &Mutex<Option<Arc<Link>>>,
) {
    let mut backoff = Backoff::new(sh.backoff.0, sh.backoff.1);
    let mut conn: Option<Arc<Link>> = None;
    loop {
        if sh.stopping() {
            break;
        }
        if conn.as_ref().is_some_and(|c| c.is_closed()) {
            tracing::debug!(peer = %peer, "connection closed; reconnecting");
            conn = None;
        }
        // Prefer a fresh connection from the peer over one of ours that went quiet.
        if conn.as_ref().is_some_and(|c| c.rx_idle() > 2 * sh.heartbeat) {
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
                match resolve(name) {
                    Ok(a) => {
                        conn = backoff.record(started, dial(sh, peer, a), peer, a, |e| {
                            sh.refuse(Some(a), Some(peer), e);
                        });
                    }
                    Err(error) => {
                        tracing::debug!(%peer, address = %name, %error, "cannot resolve the peer's address");
                        backoff.failed(started);
                    }
                }
            }
        }
        let wait = match (conn.is_some(), addr) {
            (false, Some(_)) => backoff.next().saturating_duration_since(Instant::now()).min(sh.heartbeat),
            _ => sh.heartbeat,
        };
        let frame = match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(f) => f,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if conn.is_none() {
            conn = take_offered(offered);
        }
        let Some(link) = conn.as_ref() else { continue }; // unreachable peer: dropped
        if let Err(e) = link.send(&frame) {
            tracing::debug!(peer = %peer, error = %e, "write failed; reconnecting");
            link.close();
            conn = None;
        }
    }
    if let Some(link) = conn {
        link.close();
    }
}
