//! Networking: the [`Network`] trait the node sends through, the [`Inbox`] a network delivers
//! into, the default [`TcpNetwork`], and an in-process [`channel::ChannelNetwork`] for tests and
//! benchmarks.

pub mod admission;
pub mod book;
pub mod channel;
pub mod frame;
pub mod handshake;
pub mod health;
mod tcp;

pub use tcp::{TcpNetwork, TcpSettings};

use crate::error::{HandshakeError, NetError};
use hotstuff_core::{ChainId, Envelope, Keypair, Limits, Message, PublicKey, ValidatorSet};
use std::net::SocketAddr;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An encoded [`Envelope`] (one frame body), shared between the peers it goes to.
pub type Frame = Arc<Vec<u8>>;

/// What the network reports besides messages.
#[derive(Clone, Debug)]
pub enum NetEvent {
    /// A connection to `peer` passed the handshake.
    Connected {
        /// The peer.
        peer: PublicKey,
        /// Its address.
        addr: SocketAddr,
        /// Whether we dialled it.
        outbound: bool,
    },
    /// A connection to `peer` ended.
    Disconnected {
        /// The peer.
        peer: PublicKey,
        /// Why.
        reason: String,
    },
    /// A connection or a message was refused; the connection is closed.
    Refused {
        /// The remote address, if known.
        addr: Option<SocketAddr>,
        /// The peer, if it got through the handshake.
        peer: Option<PublicKey>,
        /// Why.
        error: NetError,
    },
}

/// What the network hands the node's loop.
// Boxing the message would cost an allocation per inbound message for no gain: each value is
// moved once, from the network thread to the consensus loop (as in the core's `Input`).
#[allow(clippy::large_enum_variant)]
pub(crate) enum CoreMsg {
    /// A decoded message from an authenticated peer.
    Message { from: PublicKey, message: Message },
    /// A connection event.
    Net(NetEvent),
    /// The app has something to propose ([`crate::Waker`]).
    Wake,
    /// Stop the loop.
    Shutdown,
}

/// Where a network delivers messages and connection events (cheap to clone, any thread).
/// Delivery blocks while the node's loop is behind (back-pressure onto the connection).
#[derive(Clone)]
pub struct Inbox {
    pub(crate) tx: SyncSender<CoreMsg>,
    pub(crate) chain: ChainId,
    pub(crate) limits: Limits,
    pub(crate) metrics: Option<crate::Metrics>,
}

impl Inbox {
    /// Delivers a message received from the authenticated peer `from`.
    pub fn deliver(&self, from: PublicKey, message: Message) -> Result<(), NetError> {
        self.tx.send(CoreMsg::Message { from, message }).map_err(|_| NetError::Stopped)
    }

    /// Decodes one frame body (bounded by the node's limits; this chain only) and delivers it.
    pub fn deliver_frame(&self, from: PublicKey, bytes: &[u8]) -> Result<(), NetError> {
        if let Some(m) = &self.metrics {
            m.bytes(true, bytes.len());
        }
        self.deliver(from, decode_frame(bytes, self.chain, &self.limits)?)
    }

    /// Reports a connection event (logged and passed to the event handlers).
    pub fn report(&self, event: NetEvent) {
        // Only fails when the node is stopping.
        let _ = self.tx.send(CoreMsg::Net(event));
    }
}

/// Moves the target keyed `first` (if any is) to the front, keeping the others' order: the
/// order a [`Network::broadcast_first`] serves its peers in.
pub fn serve_first<T>(targets: &mut [T], first: Option<PublicKey>, key: impl Fn(&T) -> PublicKey) {
    if let Some(i) = first.and_then(|f| targets.iter().position(|t| key(t) == f)) {
        targets[..=i].rotate_right(1);
    }
}

/// Decodes one frame body into a message of `chain`, bounded by `limits`.
pub fn decode_frame(bytes: &[u8], chain: ChainId, limits: &Limits) -> Result<Message, NetError> {
    let env = Envelope::decode(bytes, limits)?;
    if env.chain != chain {
        return Err(NetError::WrongChain { expected: chain, got: env.chain });
    }
    Ok(env.message)
}

/// Where the consensus loop sends: the outbound half of a network. Sends are best effort and
/// must never block the caller for long.
pub trait Outbound: Send + 'static {
    /// Queues `frame` for `to`; drops it if `to` is unknown or its queue is full.
    fn send(&mut self, to: PublicKey, frame: Frame);

    /// Queues `frame` for every peer (validators and listeners).
    fn broadcast(&mut self, frame: Frame);

    /// [`Outbound::broadcast`], `first` first where the order matters (see
    /// [`Network::broadcast_first`]).
    fn broadcast_first(&mut self, first: PublicKey, frame: Frame) {
        let _ = first;
        self.broadcast(frame);
    }

    /// The validator set changed (its members may connect).
    fn validators_changed(&mut self, validators: &ValidatorSet);

    /// The peer book of the set in force (the app's [`App::peer_book`](crate::App::peer_book)):
    /// dial these members at these addresses (`host:port`, resolved when dialling), and stop
    /// dialling members the previous call named that this one does not. Called after
    /// `validators_changed`, at start and at each epoch change.
    fn peers_changed(&mut self, _peers: &[(PublicKey, String)]) {}
}

impl Outbound for Box<dyn Network> {
    fn send(&mut self, to: PublicKey, frame: Frame) {
        (**self).send(to, frame);
    }

    fn broadcast(&mut self, frame: Frame) {
        (**self).broadcast(frame);
    }

    fn broadcast_first(&mut self, first: PublicKey, frame: Frame) {
        (**self).broadcast_first(first, frame);
    }

    fn validators_changed(&mut self, validators: &ValidatorSet) {
        (**self).validators_changed(validators);
    }

    fn peers_changed(&mut self, peers: &[(PublicKey, String)]) {
        (**self).peers_changed(peers);
    }
}

/// Exponential reconnect back-off: after a failed dial the next waits `min`, then twice as
/// long per further failure up to `max`; a success resets it.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    delay: Duration,
    next: Instant,
}

impl Backoff {
    /// A back-off between `min` and `max`; the first dial is due at once.
    #[must_use]
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min), delay: min, next: Instant::now() }
    }

    /// When the next dial is due.
    #[must_use]
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Records a dial that could not start (its address did not resolve): the next is
    /// scheduled as after a failed dial.
    pub fn failed(&mut self, started: Instant) {
        self.next = started + self.delay;
        self.delay = (self.delay * 2).min(self.max);
    }

    /// Records the outcome of dialling `peer` at `addr`, an attempt begun at `started`: a
    /// connection resets the delay and is returned; a failure schedules the next dial and is
    /// logged, and a handshake the peer failed (wrong key, chain, signature...) is also handed
    /// to `refuse` (to be reported); one that only timed out or was cut is logged at debug
    /// level like a failed connect. The delay
    /// counts from the attempt's start, so it bounds how often a peer is dialled: a dial that
    /// hung until its timeout (a silent link) is followed by the next one at once if the delay
    /// has passed, rather than after a further delay.
    pub fn record<T>(
        &mut self,
        started: Instant,
        result: Result<T, NetError>,
        peer: PublicKey,
        addr: SocketAddr,
        refuse: impl FnOnce(NetError),
    ) -> Option<T> {
        match result {
            Ok(conn) => {
                self.delay = self.min;
                Some(conn)
            }
            Err(error) => {
                self.next = started + self.delay;
                self.delay = (self.delay * 2).min(self.max);
                match error {
                    // The link only failed (timed out, reset, closed): like a refused connect,
                    // not a refusal, so a silent link redialled every second floods no log.
                    NetError::Handshake(HandshakeError::Io(_) | HandshakeError::Closed) => {
                        tracing::debug!(peer = %peer, %addr, %error, "dial failed in the handshake");
                    }
                    NetError::Handshake(_) => refuse(error),
                    _ => tracing::debug!(peer = %peer, %addr, %error, "dial failed"),
                }
                None
            }
        }
    }
}

/// What a network gets when the node starts.
pub struct NetContext {
    /// This node's key (for handshakes).
    pub key: Keypair,
    /// The chain.
    pub chain: ChainId,
    /// Wire limits (`max_frame` bounds every frame).
    pub limits: Limits,
    /// The validator set in force (its members may connect).
    pub validators: ValidatorSet,
    /// Where to deliver.
    pub inbox: Inbox,
}

/// A transport between replicas. Sends are best effort and must never block the caller for
/// long: a slow or dead peer must not hold up the others.
pub trait Network: Send + 'static {
    /// Starts the network's threads.
    fn start(&mut self, ctx: NetContext) -> Result<(), NetError>;

    /// Queues `frame` for `to`; drops it if `to` is unknown or its queue is full.
    fn send(&mut self, to: PublicKey, frame: Frame);

    /// Queues `frame` for every peer (validators and listeners).
    fn broadcast(&mut self, frame: Frame);

    /// [`Network::broadcast`], with `first` served first where the order of the sends matters
    /// (a transport that hands frames over one at a time on the caller's thread). The engine
    /// names the next view's leader for a proposal: that peer's vote collection is on the
    /// critical path of the view. By default, a plain broadcast.
    fn broadcast_first(&mut self, first: PublicKey, frame: Frame) {
        let _ = first;
        self.broadcast(frame);
    }

    /// The validator set changed (its members may connect).
    fn validators_changed(&mut self, _validators: &ValidatorSet) {}

    /// The peer book changed (see [`Outbound::peers_changed`]); by default ignored.
    fn peers_changed(&mut self, _peers: &[(PublicKey, String)]) {}

    /// The address it listens on, if any.
    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Stops and joins every thread.
    fn shutdown(&mut self);
}
