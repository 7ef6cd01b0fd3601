//! What both TCP drivers decide the same way about who they dial and admit beyond their
//! configured peers: the peer book's members ([`PeerBook`]) and listeners outside the
//! allow-list ([`Guests`]). Each driver applies the decisions to its own connections.

use hotstuff_core::PublicKey;
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The members the last peer book named.
#[derive(Debug, Default)]
pub struct PeerBook(Mutex<BTreeSet<PublicKey>>);

/// What a peer-book change asks of a network.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BookChange {
    /// Members to dial at these addresses (new ones, or a new address).
    pub dial: Vec<(PublicKey, String)>,
    /// Members named before and not now, neither configured nor allowed: stop dialling them
    /// and drop their connections.
    pub drop: Vec<PublicKey>,
}

impl PeerBook {
    /// Records the peer book `peers` and says what to change. `me` is left out; a configured
    /// peer keeps its configured address (`dialled` says whether it has one).
    pub fn update(
        &self,
        me: &PublicKey,
        peers: &[(PublicKey, String)],
        configured: &BTreeSet<PublicKey>,
        dialled: impl Fn(&PublicKey) -> bool,
        allowed: impl Fn(&PublicKey) -> bool,
    ) -> BookChange {
        let named: BTreeSet<PublicKey> = peers.iter().map(|(k, _)| *k).filter(|k| k != me).collect();
        let dial = peers
            .iter()
            .filter(|(k, _)| k != me && !(configured.contains(k) && dialled(k)))
            .cloned()
            .collect();
        let mut book = lock(&self.0);
        let drop =
            book.difference(&named).filter(|k| !configured.contains(k) && !allowed(k)).copied().collect();
        *book = named;
        BookChange { dial, drop }
    }
}

/// Listeners outside the allow-list connected now, at most `max`.
#[derive(Debug)]
pub struct Guests {
    keys: Mutex<BTreeSet<PublicKey>>,
    max: usize,
}

impl Guests {
    /// At most `max` guests at once.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Guests { keys: Mutex::new(BTreeSet::new()), max }
    }

    /// The limit.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether `key` may connect as a guest: one already connected, or a new one while there
    /// is room.
    #[must_use]
    pub fn may_admit(&self, key: &PublicKey) -> bool {
        let keys = lock(&self.keys);
        keys.contains(key) || keys.len() < self.max
    }

    /// Admits `key`: `Some(true)` the first time, `Some(false)` if already in, `None` if
    /// there is no room.
    pub fn admit(&self, key: PublicKey) -> Option<bool> {
        let mut keys = lock(&self.keys);
        if !keys.contains(&key) && keys.len() >= self.max {
            return None;
        }
        Some(keys.insert(key))
    }

    /// `key`'s last connection ended: forgets it; true if it was a guest.
    pub fn left(&self, key: &PublicKey) -> bool {
        lock(&self.keys).remove(key)
    }

    /// The allow-list changed: guests on it are members now.
    pub fn now_allowed(&self, allowed: &BTreeSet<PublicKey>) {
        lock(&self.keys).retain(|g| !allowed.contains(g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    #[test]
    fn the_peer_book_dials_new_members_and_drops_the_ones_it_no_longer_names() {
        let book = PeerBook::default();
        let configured: BTreeSet<_> = [k(2)].into();
        let peers = vec![(k(1), "me:1".into()), (k(2), "b:2".into()), (k(3), "c:3".into())];
        let c = book.update(&k(1), &peers, &configured, |key| *key == k(2), |_| true);
        assert_eq!(c.dial, vec![(k(3), "c:3".to_string())], "not me, not a configured address");
        assert!(c.drop.is_empty());
        // k(3) removed and no longer allowed; k(2) gone from the book but configured.
        let c = book.update(&k(1), &[(k(4), "d:4".into())], &configured, |_| false, |key| *key == k(4));
        assert_eq!(c.dial, vec![(k(4), "d:4".to_string())]);
        assert_eq!(c.drop, vec![k(3)]);
    }

    #[test]
    fn guests_are_bounded_and_forgotten_when_they_leave_or_join_the_set() {
        let g = Guests::new(2);
        assert_eq!(g.admit(k(1)), Some(true));
        assert_eq!(g.admit(k(1)), Some(false));
        assert_eq!(g.admit(k(2)), Some(true));
        assert!(!g.may_admit(&k(3)) && g.admit(k(3)).is_none());
        g.now_allowed(&[k(1)].into());
        assert!(g.may_admit(&k(3)));
        assert!(g.left(&k(2)) && !g.left(&k(2)));
    }
}
