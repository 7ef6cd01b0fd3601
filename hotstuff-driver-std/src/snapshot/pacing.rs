//! Serving snapshots at a bounded rate, fairly between peers.
//!
//! A snapshot server answers on the node's consensus thread (the answers read the snapshot
//! held in memory: copying a chunk's entries, its proof and the frame's encoding cost about as
//! much as the chunk's bytes). Without a bound, a peer (any authenticated listener) asking for
//! chunk after chunk would keep that thread copying instead of voting. So requests queue per
//! peer (at most [`QUEUE_PER_PEER`]; more are dropped: an honest client keeps at most
//! [`PER_SERVER`](super::PER_SERVER) outstanding), queues are served in turn (one request per
//! peer per round, so a flooding peer gets its share and no more), and every answer is charged
//! its size against one budget of [`KIB_PER_SECOND`] (a token bucket, `governor`'s GCRA, with a
//! burst of [`BURST_KIB`]). A request the budget does not cover yet waits in its queue until
//! [`Pacer::deadline`].

use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use hotstuff_core::{PublicKey, SnapshotRequest};
use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU32;
use std::time::Instant;

/// Requests queued per peer; more are dropped.
pub const QUEUE_PER_PEER: usize = 8;
/// What a server answers per second at most, in KiB of answers (32 MiB/s).
pub const KIB_PER_SECOND: u32 = 32 * 1024;
/// The burst the budget allows, in KiB (twice the largest chunk).
pub const BURST_KIB: u32 = 8 * 1024;

type Budget = RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<Instant>>;

pub(crate) struct Pacer {
    queues: BTreeMap<PublicKey, VecDeque<SnapshotRequest>>,
    /// The peer served last (the next round starts after it).
    cursor: Option<PublicKey>,
    budget: Budget,
    burst: u32,
    /// When the budget covers the next answer, while requests wait.
    blocked_until: Option<Instant>,
    /// Requests dropped because their peer's queue was full.
    pub dropped: u64,
}

impl Pacer {
    pub(crate) fn new(kib_per_second: u32, burst_kib: u32) -> Self {
        let rate = NonZeroU32::new(kib_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst_kib).unwrap_or(NonZeroU32::MIN);
        Pacer {
            queues: BTreeMap::new(),
            cursor: None,
            budget: RateLimiter::direct_with_clock(
                Quota::per_second(rate).allow_burst(burst),
                MonotonicClock,
            ),
            burst: burst.get(),
            blocked_until: None,
            dropped: 0,
        }
    }

    /// Queues `r` from `from`; `false` if its queue is full (dropped).
    pub(crate) fn push(&mut self, from: PublicKey, r: SnapshotRequest) -> bool {
        let q = self.queues.entry(from).or_default();
        if q.len() >= QUEUE_PER_PEER {
            self.dropped += 1;
            return false;
        }
        q.push_back(r);
        true
    }

    /// The request to answer next: the first of the next peer's queue after the last served.
    pub(crate) fn peek(&self) -> Option<(PublicKey, SnapshotRequest)> {
        let after = self.cursor.and_then(|c| self.queues.range(c..).find(|(k, _)| **k != c));
        let (peer, q) = after.or_else(|| self.queues.iter().next())?;
        q.front().map(|r| (*peer, *r))
    }

    /// Charges `kib` for the request [`Pacer::peek`] gave: if the budget covers it now, takes
    /// it off its queue and returns `true`; otherwise leaves it and sets the deadline.
    pub(crate) fn charge(&mut self, now: Instant, peer: PublicKey, kib: u32) -> bool {
        let n = NonZeroU32::new(kib.clamp(1, self.burst)).unwrap_or(NonZeroU32::MIN);
        match self.budget.check_n(n) {
            Ok(Ok(())) => {}
            Ok(Err(not_until)) => {
                self.blocked_until = Some(not_until.earliest_possible().max(now));
                return false;
            }
            // `n` is at most the burst.
            Err(_) => return false,
        }
        self.blocked_until = None;
        self.cursor = Some(peer);
        if let Some(q) = self.queues.get_mut(&peer) {
            q.pop_front();
            if q.is_empty() {
                self.queues.remove(&peer);
            }
        }
        true
    }

    /// When to try again, while requests wait for the budget.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.queues.is_empty() {
            None
        } else {
            self.blocked_until
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotstuff_core::{Keypair, SnapshotAsk};

    fn req(id: u64) -> SnapshotRequest {
        SnapshotRequest { id, ask: SnapshotAsk::Offer }
    }

    /// Serves what the budget allows now: the (peer, id) pairs in order.
    fn serve(p: &mut Pacer, kib: u32) -> Vec<(PublicKey, u64)> {
        let mut served = Vec::new();
        while let Some((peer, r)) = p.peek() {
            if !p.charge(Instant::now(), peer, kib) {
                break;
            }
            served.push((peer, r.id));
        }
        served
    }

    #[test]
    fn a_flooding_peer_is_capped_and_served_in_turn_with_the_others() {
        let (a, b) = (Keypair::from_secret(&[1; 32]).public(), Keypair::from_secret(&[2; 32]).public());
        let mut p = Pacer::new(1024, 64 * 1024);
        for id in 0..100 {
            p.push(a, req(id));
        }
        assert_eq!(p.dropped, 100 - QUEUE_PER_PEER as u64);
        p.push(b, req(1000));
        p.push(b, req(1001));
        let served = serve(&mut p, 1);
        assert_eq!(served.len(), QUEUE_PER_PEER + 2);
        // Round robin: b's two requests come within the first four answers, not after a's eight.
        let b_at: Vec<usize> =
            served.iter().enumerate().filter(|(_, (k, _))| *k == b).map(|(i, _)| i).collect();
        assert!(b_at.iter().all(|i| *i < 4), "b served at {b_at:?} of {served:?}");
        // Each peer's own order is kept.
        let a_ids: Vec<u64> = served.iter().filter(|(k, _)| *k == a).map(|(_, id)| *id).collect();
        assert_eq!(a_ids, (0..QUEUE_PER_PEER as u64).collect::<Vec<_>>());
        assert!(p.peek().is_none() && p.deadline().is_none());
    }

    #[test]
    fn answers_beyond_the_budget_wait_for_it() {
        let a = Keypair::from_secret(&[1; 32]).public();
        // 1 MiB/s, a 2 MiB burst: two 1 MiB answers go at once, the third waits about 1 s.
        let mut p = Pacer::new(1024, 2048);
        for id in 0..3 {
            p.push(a, req(id));
        }
        let start = Instant::now();
        let served = serve(&mut p, 1024);
        assert_eq!(served.len(), 2, "{served:?}");
        let wait = p.deadline().expect("a request waits").saturating_duration_since(start);
        assert!(wait > std::time::Duration::from_millis(500), "waits only {wait:?}");
        assert!(p.peek().is_some());
    }
}
