//! An in-process [`Network`]: nodes of one process (tests, benchmarks, an embedder's own
//! harness) reach each other through a shared [`ChannelHub`], with no sockets.
//!
//! A send decodes the frame into the receiver's [`Inbox`] on the sender's thread: one channel
//! hop, no queue of its own. Delivery waits while the receiver's inbox is full, so a node that
//! stops reading holds up its senders: right for a test or a benchmark in one process, not for
//! a production transport, which queues per peer and drops ([`TcpNetwork`](super::TcpNetwork)).
//!
//! Each node's network can carry a [`FrameHook`] that sees every frame it sends and decides
//! what arrives: the frame unchanged, another frame (a Byzantine sender's tampering), or
//! nothing (a lost message). Counting frames or bytes by kind is a hook that passes them on.
//!
//! ```
//! use hotstuff_driver_std::net::channel::ChannelHub;
//! let hub = ChannelHub::default();
//! // One network per node, e.g. `NodeBuilder::network(hub.network())`; a node whose frames
//! // are dropped on the way:
//! let _silent = hub.network().with_hook(|_to, _frame| None);
//! ```

use super::{serve_first, Frame, NetContext, Network};
use crate::error::NetError;
use crate::net::Inbox;
use hotstuff_core::PublicKey;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// What arrives of a frame a node sends to `to`: `Some` frame (the same or another), or
/// `None` to drop it. Runs on the sender's consensus thread: keep it quick.
pub type FrameHook = Box<dyn FnMut(&PublicKey, &Frame) -> Option<Frame> + Send>;

/// Every started node's inbox, by key (cheap to clone: clones share the hub).
#[derive(Clone, Default)]
pub struct ChannelHub {
    inboxes: Arc<Mutex<BTreeMap<PublicKey, Inbox>>>,
}

impl ChannelHub {
    /// A network for one more node of this hub.
    #[must_use]
    pub fn network(&self) -> ChannelNetwork {
        ChannelNetwork { hub: self.clone(), me: None, hook: None }
    }

    /// Delivers `frame` to `to` as if `from` had sent it: a peer that is not a node (a test's
    /// flooding or Byzantine peer). `false` if `to` is not started or refused the frame.
    pub fn inject(&self, from: PublicKey, to: &PublicKey, frame: &[u8]) -> bool {
        let inbox = self.lock().get(to).cloned();
        inbox.is_some_and(|i| i.deliver_frame(from, frame).is_ok())
    }

    /// The keys of the nodes started and not shut down.
    #[must_use]
    pub fn members(&self) -> Vec<PublicKey> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PublicKey, Inbox>> {
        // An inbox map is valid whatever a panicking holder was doing.
        self.inboxes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One node's end of a [`ChannelHub`] (see the [module docs](self)).
pub struct ChannelNetwork {
    hub: ChannelHub,
    me: Option<PublicKey>,
    hook: Option<FrameHook>,
}

impl ChannelNetwork {
    /// Passes every frame this node sends through `hook` (see [`FrameHook`]).
    #[must_use]
    pub fn with_hook(
        mut self,
        hook: impl FnMut(&PublicKey, &Frame) -> Option<Frame> + Send + 'static,
    ) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// Delivers `frame` to every other started node, `first` (if started) before the others.
    fn broadcast_from(&mut self, first: Option<PublicKey>, frame: Frame) {
        let mut peers: Vec<PublicKey> =
            self.hub.lock().keys().copied().filter(|k| Some(*k) != self.me).collect();
        serve_first(&mut peers, first, |p| *p);
        for p in peers {
            self.deliver(&p, frame.clone());
        }
    }

    fn deliver(&mut self, to: &PublicKey, frame: Frame) {
        let Some(me) = self.me else { return };
        let frame = match &mut self.hook {
            Some(hook) => match hook(to, &frame) {
                Some(f) => f,
                None => return,
            },
            None => frame,
        };
        let inbox = self.hub.lock().get(to).cloned();
        if let Some(inbox) = inbox {
            // A receiver that stopped or refuses the frame: like a lost message.
            let _ = inbox.deliver_frame(me, &frame);
        }
    }
}

impl Network for ChannelNetwork {
    fn start(&mut self, ctx: NetContext) -> Result<(), NetError> {
        let me = ctx.key.public();
        self.me = Some(me);
        self.hub.lock().insert(me, ctx.inbox);
        Ok(())
    }

    fn send(&mut self, to: PublicKey, frame: Frame) {
        self.deliver(&to, frame);
    }

    fn broadcast(&mut self, frame: Frame) {
        self.broadcast_from(None, frame);
    }

    /// Delivery runs on the sender's thread, one peer after the other: `first` gets the frame
    /// (and its consensus thread the wake-up) before the others.
    fn broadcast_first(&mut self, first: PublicKey, frame: Frame) {
        self.broadcast_from(Some(first), frame);
    }

    fn shutdown(&mut self) {
        if let Some(me) = self.me.take() {
            self.hub.lock().remove(&me);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::CoreMsg;
    use hotstuff_core::{ChainId, Envelope, Keypair, Limits, Message, ValidatorSet};
    use std::sync::mpsc::{sync_channel, Receiver};

    fn start(
        hub: &ChannelHub,
        seed: u8,
        sent: Option<Arc<Mutex<Vec<PublicKey>>>>,
    ) -> (ChannelNetwork, Receiver<CoreMsg>) {
        let key = Keypair::from_secret(&[seed; 32]);
        let validators = ValidatorSet::new([(key.public(), 1)]).unwrap();
        let (tx, rx) = sync_channel(16);
        let inbox = Inbox { tx, chain: ChainId(1), limits: Limits::default(), metrics: None };
        let mut net = hub.network();
        if let Some(sent) = sent {
            net = net.with_hook(move |to, f| {
                sent.lock().unwrap().push(*to);
                Some(f.clone())
            });
        }
        net.start(NetContext { key, chain: ChainId(1), limits: Limits::default(), validators, inbox })
            .unwrap();
        (net, rx)
    }

    #[test]
    fn broadcast_first_serves_the_named_peer_first_and_every_peer_once() {
        let hub = ChannelHub::default();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (mut me, _) = start(&hub, 1, Some(sent.clone()));
        let peers: Vec<_> = (2..7).map(|s| start(&hub, s, None)).collect();
        let mut keys = hub.members();
        keys.retain(|k| *k != Keypair::from_secret(&[1; 32]).public());
        let frame: Frame = Arc::new(Envelope::new(ChainId(1), Message::App(vec![7])).encode());
        for first in [keys[3], keys[0], keys[4]] {
            sent.lock().unwrap().clear();
            me.broadcast_first(first, frame.clone());
            let order = sent.lock().unwrap().clone();
            assert_eq!(order[0], first, "the named peer is served first");
            let mut seen = order.clone();
            seen.sort();
            assert_eq!(seen, keys, "every other peer once: {order:?}");
        }
        // A key that is no peer: a plain broadcast.
        sent.lock().unwrap().clear();
        me.broadcast_first(PublicKey([9; 32]), frame);
        assert_eq!(*sent.lock().unwrap(), keys);
        for (_, rx) in &peers {
            assert_eq!(rx.try_iter().count(), 4, "each peer got each broadcast");
        }
    }
}
