//! A commitment to the kv app's state: a compressed sparse Merkle tree over blake3, updated
//! incrementally, with membership and non-membership proofs.
//!
//! # The tree
//! Every state entry `(key, value)` is a leaf at the path `blake3(key)` (256 bits, most
//! significant bit first) of a binary tree. A subtree is hashed as:
//! - no leaf: [`EMPTY`] (32 zero bytes);
//! - exactly one leaf: `blake3(0x00 || blake3(key) || blake3(value))`, wherever the subtree
//!   sits (the leaf is stored at the highest node whose subtree holds it alone);
//! - two leaves or more: `blake3(0x01 || left || right)`.
//!
//! The root is therefore a function of the set of entries only: the same on every replica
//! whatever the order of updates (a property test checks it against a rebuild from scratch).
//! An update costs one hash per level of its path: about `log2(n)` levels for `n` random keys
//! (20 for a million), so a block's cost is proportional to its updates, not to the state's
//! size.
//!
//! # What it proves, and against what
//! A [`Proof`] for a key shows, against a root, either the key's value or that the key is
//! absent: the sibling hashes along the key's path, ended by the leaf or empty subtree met
//! there. Forging one means finding a blake3 collision or second preimage:
//! - leaves and inner nodes are domain-separated by their first byte, so an inner node cannot
//!   be passed off as a leaf (or the reverse) to shorten or lengthen a path;
//! - a leaf binds its whole key hash, and a non-membership proof that ends at another key's leaf
//!   is accepted only if that key shares the path walked so far (so the leaf really occupies
//!   the subtree where the asked key would be);
//! - unlike an additive (multiset) hash, there is no algebra to exploit: Wagner's
//!   generalised-birthday attack, which finds entry sets with a chosen sum, does not apply.
//!
//! Keys are hashed, so an adversary choosing keys cannot build deep paths cheaply: making `d`
//! levels of shared prefix costs about `2^d` hash evaluations, so path length stays near
//! `log2(n)` plus a few levels, and a proof is at most 256 siblings in any case.
//!
//! # Certification
//! A root means something only once certified: [`StateCommitted`](super::certified) makes
//! every block with a payload carry the root of the state after its parent, checked by every
//! validator in `validate_block`, so a QC (2f+1 signers, at least f+1 honest) certifies it. A
//! node catching up from a snapshot checks the state against a root certified by a QC it
//! verifies itself.

use std::cmp::Ordering;
use std::sync::Arc;

/// A 32-byte blake3 hash.
pub type Hash = [u8; 32];

/// The hash of an empty subtree.
pub const EMPTY: Hash = [0; 32];

/// The hash of one leaf: `blake3(0x00 || key_hash || value_hash)`.
#[must_use]
pub fn leaf_hash(key_hash: &Hash, value_hash: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(key_hash);
    h.update(value_hash);
    *h.finalize().as_bytes()
}

/// The hash of an inner node: `blake3(0x01 || left || right)`.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// Bit `depth` of `path` (most significant first): 0 goes left, 1 right.
pub(super) fn bit(path: &Hash, depth: usize) -> usize {
    path.get(depth / 8).map_or(0, |b| usize::from((b >> (7 - depth % 8)) & 1))
}

/// A node. Children are shared (`Arc`): cloning a tree is O(1), and an update copies only the
/// nodes on its path (so a tree per uncommitted block costs what its updates touch).
#[derive(Clone)]
enum Node {
    Leaf { key: Hash, value: Hash },
    Inner { hash: Hash, children: Arc<[Option<Node>; 2]> },
}

impl Node {
    fn hash(&self) -> Hash {
        match self {
            Node::Leaf { key, value } => leaf_hash(key, value),
            Node::Inner { hash, .. } => *hash,
        }
    }
}

fn slot_hash(slot: &Option<Node>) -> Hash {
    slot.as_ref().map_or(EMPTY, Node::hash)
}

fn rehash(children: &[Option<Node>; 2]) -> Hash {
    node_hash(&slot_hash(&children[0]), &slot_hash(&children[1]))
}

/// Sets `key` to `value` in the subtree in `slot` at `depth`.
fn insert(slot: &mut Option<Node>, depth: usize, key: Hash, value: Hash) {
    match slot {
        None => *slot = Some(Node::Leaf { key, value }),
        Some(Node::Leaf { key: k, value: v }) if *k == key => *v = value,
        Some(Node::Inner { hash, children }) => {
            let children = Arc::make_mut(children);
            insert(&mut children[bit(&key, depth)], depth + 1, key, value);
            *hash = rehash(children);
        }
        Some(Node::Leaf { .. }) => {
            // Two leaves share this subtree now: it becomes an inner node holding both.
            let Some(old) = slot.take() else { return };
            let mut children: [Option<Node>; 2] = [None, None];
            if let Node::Leaf { key: k, .. } = &old {
                let b = bit(k, depth);
                children[b] = Some(old);
            }
            insert(&mut children[bit(&key, depth)], depth + 1, key, value);
            let hash = rehash(&children);
            *slot = Some(Node::Inner { hash, children: Arc::new(children) });
        }
    }
}

/// The subtree at `depth` of `entries`, sorted by key hash and unique, all sharing the first
/// `depth` bits: what inserting them one by one gives.
fn build(entries: &[(Hash, Hash)], depth: usize) -> Option<Node> {
    match entries {
        [] => None,
        [(key, value)] => Some(Node::Leaf { key: *key, value: *value }),
        _ => {
            // Sorted: the keys whose bit `depth` is 0 come first.
            let split = entries.partition_point(|(k, _)| bit(k, depth) == 0);
            let (left, right) = entries.split_at(split);
            let children = [build(left, depth + 1), build(right, depth + 1)];
            Some(Node::Inner { hash: rehash(&children), children: Arc::new(children) })
        }
    }
}

/// Removes `key` from the subtree in `slot` at `depth`; an inner node left with a single leaf
/// in its subtree becomes that leaf (so the tree stays canonical).
fn remove(slot: &mut Option<Node>, depth: usize, key: &Hash) {
    match slot {
        Some(Node::Leaf { key: k, .. }) if k == key => *slot = None,
        None | Some(Node::Leaf { .. }) => {}
        Some(Node::Inner { hash, children }) => {
            let children = Arc::make_mut(children);
            remove(&mut children[bit(key, depth)], depth + 1, key);
            let lone_leaf = match (&children[0], &children[1]) {
                (None, Some(Node::Leaf { .. })) => Some(1),
                (Some(Node::Leaf { .. }), None) => Some(0),
                _ => None,
            };
            match lone_leaf {
                Some(i) => *slot = children[i].take(),
                None => *hash = rehash(children),
            }
        }
    }
}

/// The commitment tree of a key-value state (see the [module docs](self)). Cloning is O(1);
/// the clones share their unchanged nodes.
#[derive(Clone, Default)]
pub struct StateTree {
    root: Option<Node>,
    len: usize,
}

impl std::fmt::Debug for StateTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateTree").field("len", &self.len).field("root", &self.root()).finish()
    }
}

impl StateTree {
    /// An empty tree (root [`EMPTY`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of `entries` (for example a scan of the committed state).
    ///
    /// Built bottom-up from the sorted key hashes, each node hashed once (about two hashes
    /// per entry besides the key's and value's own), rather than entry by entry (an insert
    /// rehashes its whole path: ~21 hashes at a million keys): what a node does at start, after
    /// a snapshot install and for each snapshot it serves. A key given twice keeps its last value.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let hashed: Vec<(Hash, Hash)> = entries
            .into_iter()
            .map(|(k, v)| (*blake3::hash(k).as_bytes(), *blake3::hash(v).as_bytes()))
            .collect();
        Self::from_hashed(hashed)
    }

    /// [`StateTree::from_entries`] of `(blake3(key), blake3(value))` pairs.
    pub fn from_hashed(mut hashed: Vec<(Hash, Hash)>) -> Self {
        // Stable: of equal keys, the last given ends last, and is the one kept.
        hashed.sort_by_key(|e| e.0);
        let mut unique: Vec<(Hash, Hash)> = Vec::with_capacity(hashed.len());
        for e in hashed {
            match unique.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => unique.push(e),
            }
        }
        StateTree { root: build(&unique, 0), len: unique.len() }
    }

    /// The root hash.
    #[must_use]
    pub fn root(&self) -> Hash {
        slot_hash(&self.root)
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets `key` to `value` (`None`: deletes it).
    pub fn set(&mut self, key: &[u8], value: Option<&[u8]>) {
        let k = *blake3::hash(key).as_bytes();
        let had = self.contains_hash(&k);
        match value {
            Some(v) => {
                insert(&mut self.root, 0, k, *blake3::hash(v).as_bytes());
                self.len += usize::from(!had);
            }
            None => {
                remove(&mut self.root, 0, &k);
                self.len -= usize::from(had);
            }
        }
    }

    /// Applies a block's updates (`None`: delete), in order.
    pub fn apply<'a>(&mut self, updates: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>) {
        for (k, v) in updates {
            self.set(k, v);
        }
    }

    fn contains_hash(&self, key: &Hash) -> bool {
        let mut slot = &self.root;
        let mut depth = 0;
        loop {
            match slot {
                None => return false,
                Some(Node::Leaf { key: k, .. }) => return k == key,
                Some(Node::Inner { children, .. }) => {
                    slot = &children[bit(key, depth)];
                    depth += 1;
                }
            }
        }
    }

    /// The proof for `key`: its value's presence or its absence.
    #[must_use]
    pub fn prove(&self, key: &[u8]) -> Proof {
        let k = *blake3::hash(key).as_bytes();
        let mut siblings = Vec::new();
        let mut slot = &self.root;
        loop {
            match slot {
                None => return Proof { siblings, end: None },
                Some(Node::Leaf { key, value }) => return Proof { siblings, end: Some((*key, *value)) },
                Some(Node::Inner { children, .. }) => {
                    let b = bit(&k, siblings.len());
                    siblings.push(slot_hash(&children[1 - b]));
                    slot = &children[b];
                }
            }
        }
    }
}

impl StateTree {
    /// The proof for snapshot chunk `index` of `2^depth` (the entries whose key hash starts
    /// with the `depth` bits of `index`): the summary of every sibling subtree along the
    /// chunk's path (see [`super::snapshot`]). `depth` is at most 32.
    #[must_use]
    pub fn prove_chunk(&self, depth: u8, index: u32) -> Vec<Sibling> {
        let depth = usize::from(depth.min(32));
        let path = super::snapshot::chunk_path(depth, index);
        let mut siblings = Vec::with_capacity(depth);
        let mut slot = &self.root;
        let mut d = 0;
        while d < depth {
            match slot {
                Some(Node::Inner { children, .. }) => {
                    let b = bit(&path, d);
                    siblings.push(match &children[1 - b] {
                        None => Sibling::Empty,
                        Some(Node::Leaf { key, value }) => Sibling::Leaf(*key, *value),
                        Some(n @ Node::Inner { .. }) => Sibling::Inner(n.hash()),
                    });
                    slot = &children[b];
                    d += 1;
                }
                Some(Node::Leaf { key, value }) => {
                    // Below a lone leaf the subtrees are virtual: the one holding the leaf (where
                    // its path leaves the chunk's) is that leaf, the others empty.
                    let leaves_at = (d..depth).find(|j| bit(key, *j) != bit(&path, *j));
                    for j in d..depth {
                        siblings.push(if Some(j) == leaves_at {
                            Sibling::Leaf(*key, *value)
                        } else {
                            Sibling::Empty
                        });
                    }
                    break;
                }
                None => {
                    siblings.resize(depth, Sibling::Empty);
                    break;
                }
            }
        }
        siblings
    }
}

/// A subtree beside a snapshot chunk's path, as its proof gives it: what the verifier needs to
/// hash up to the root (a lone leaf is given whole, since a subtree with one leaf hashes as
/// that leaf wherever it sits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
pub enum Sibling {
    /// No leaf.
    Empty,
    /// Exactly one leaf: its key hash and value hash.
    Leaf(Hash, Hash),
    /// Two leaves or more: the subtree's hash.
    Inner(Hash),
}

/// A proof sibling as it travels in a [`hotstuff_core::SnapshotChunk`].
impl From<Sibling> for hotstuff_core::ChunkSibling {
    fn from(s: Sibling) -> Self {
        match s {
            Sibling::Empty => Self::Empty,
            Sibling::Leaf(k, v) => Self::Leaf(k, v),
            Sibling::Inner(h) => Self::Inner(h),
        }
    }
}

/// A proof sibling read from a [`hotstuff_core::SnapshotChunk`].
impl From<hotstuff_core::ChunkSibling> for Sibling {
    fn from(s: hotstuff_core::ChunkSibling) -> Self {
        match s {
            hotstuff_core::ChunkSibling::Empty => Self::Empty,
            hotstuff_core::ChunkSibling::Leaf(k, v) => Self::Leaf(k, v),
            hotstuff_core::ChunkSibling::Inner(h) => Self::Inner(h),
        }
    }
}

/// A proof of one key's value or absence against a root: the sibling hashes along the key's
/// path from the root down, and what the path ends at (a leaf's key hash and value hash, or
/// an empty subtree).
#[derive(Clone, Debug, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
pub struct Proof {
    /// Sibling hashes, from the root's children down (at most 256).
    pub siblings: Vec<Hash>,
    /// The leaf the path ends at (`None`: an empty subtree).
    pub end: Option<(Hash, Hash)>,
}

/// Why a proof does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// More siblings than a 256-bit path has levels.
    #[error("proof longer than 256 levels ({0})")]
    TooLong(usize),
    /// The proof shows another value (or presence where absence was claimed, or the reverse).
    #[error("the proof shows a different value for the key")]
    WrongValue,
    /// A non-membership proof ending at a leaf off the key's path.
    #[error("the proof ends at a leaf off the key's path")]
    OffPath,
    /// The proof does not hash to the root.
    #[error("the proof does not hash to the root")]
    WrongRoot,
}

impl Proof {
    /// Checks that, under `root`, `key` holds `value` (`None`: is absent).
    pub fn verify(&self, root: &Hash, key: &[u8], value: Option<&[u8]>) -> Result<(), ProofError> {
        let depth = self.siblings.len();
        if depth > 256 {
            return Err(ProofError::TooLong(depth));
        }
        let k = *blake3::hash(key).as_bytes();
        let value = value.map(|v| *blake3::hash(v).as_bytes());
        let mut h = match (&self.end, value) {
            (Some((lk, lv)), Some(v)) if *lk == k => {
                if *lv != v {
                    return Err(ProofError::WrongValue);
                }
                leaf_hash(lk, lv)
            }
            (Some((lk, _)), _) if *lk == k => return Err(ProofError::WrongValue),
            (Some(_), Some(_)) | (None, Some(_)) => return Err(ProofError::WrongValue),
            (Some((lk, lv)), None) => {
                if (0..depth).any(|d| bit(lk, d) != bit(&k, d)) {
                    return Err(ProofError::OffPath);
                }
                leaf_hash(lk, lv)
            }
            (None, None) => EMPTY,
        };
        for (d, sibling) in self.siblings.iter().enumerate().rev() {
            h = match bit(&k, d) {
                0 => node_hash(&h, sibling),
                _ => node_hash(sibling, &h),
            };
        }
        match h.cmp(root) {
            Ordering::Equal => Ok(()),
            _ => Err(ProofError::WrongRoot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The root computed from scratch, straight from the definition (no incremental state).
    fn reference_root(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Hash {
        let leaves: Vec<(Hash, Hash)> =
            entries.iter().map(|(k, v)| (*blake3::hash(k).as_bytes(), *blake3::hash(v).as_bytes())).collect();
        fn sub(leaves: &[&(Hash, Hash)], depth: usize) -> Hash {
            match leaves {
                [] => EMPTY,
                [(k, v)] => leaf_hash(k, v),
                _ => {
                    let (l, r): (Vec<_>, Vec<_>) = leaves.iter().partition(|(k, _)| bit(k, depth) == 0);
                    node_hash(&sub(&l, depth + 1), &sub(&r, depth + 1))
                }
            }
        }
        sub(&leaves.iter().collect::<Vec<_>>(), 0)
    }

    /// A small deterministic generator (xorshift), seeded per case.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn incremental_root_equals_the_definition_under_random_updates() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut tree = StateTree::new();
            let mut model = BTreeMap::new();
            let keys = 1 + rng.next() % 64;
            for step in 0..300 {
                let key = format!("k{}", rng.next() % keys).into_bytes();
                if rng.next() % 3 == 0 {
                    tree.set(&key, None);
                    model.remove(&key);
                } else {
                    let value = format!("v{}", rng.next() % 5).into_bytes();
                    tree.set(&key, Some(&value));
                    model.insert(key, value);
                }
                assert_eq!(tree.root(), reference_root(&model), "seed {seed}, step {step}");
                assert_eq!(tree.len(), model.len(), "seed {seed}, step {step}");
            }
            // The same entries inserted in another order give the same root.
            let rebuilt = StateTree::from_entries(model.iter().rev().map(|(k, v)| (&k[..], &v[..])));
            assert_eq!(rebuilt.root(), tree.root(), "seed {seed}: order matters");
            assert_eq!(rebuilt.len(), tree.len(), "seed {seed}");
            // The bulk-built tree has the same shape: updates and proofs give the same as on the
            // incrementally built one.
            let mut rebuilt = rebuilt;
            for k in model.keys().take(3) {
                assert_eq!(rebuilt.prove(k).siblings.len(), tree.prove(k).siblings.len(), "seed {seed}");
                assert!(rebuilt.prove(k).verify(&tree.root(), k, model.get(k).map(|v| &v[..])).is_ok());
            }
            let mut both = [tree.clone(), rebuilt.clone()];
            for t in &mut both {
                t.set(b"k1", None);
                t.set(b"new", Some(b"x"));
            }
            assert_eq!(both[0].root(), both[1].root(), "seed {seed}: after updates");
            // A key given twice keeps its last value.
            let mut twice: Vec<(&[u8], &[u8])> = model.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            twice.insert(0, (b"k0", b"first"));
            twice.push((b"k0", b"last"));
            let mut expect = model.clone();
            expect.insert(b"k0".to_vec(), b"last".to_vec());
            rebuilt = StateTree::from_entries(twice);
            assert_eq!(rebuilt.root(), reference_root(&expect), "seed {seed}: duplicates");
            assert_eq!(rebuilt.len(), expect.len(), "seed {seed}");
            // A clone is unaffected by updates to the original (shared nodes are copied on write).
            let snapshot = tree.clone();
            let before = snapshot.root();
            tree.set(b"k0", Some(b"changed"));
            assert_eq!(snapshot.root(), before, "seed {seed}");
            tree.set(b"k0", model.get(&b"k0"[..]).map(|v| &v[..]));
            assert_eq!(tree.root(), before, "seed {seed}");
            // Deleting everything gives the empty root.
            for k in model.keys() {
                tree.set(k, None);
            }
            assert_eq!(tree.root(), EMPTY, "seed {seed}");
            assert!(tree.is_empty());
        }
    }

    #[test]
    fn proofs_show_values_and_absences_and_nothing_else() {
        let mut tree = StateTree::new();
        for i in 0..200u32 {
            tree.set(format!("key{i}").as_bytes(), Some(format!("value{i}").as_bytes()));
        }
        let root = tree.root();
        for i in 0..200u32 {
            let key = format!("key{i}");
            let p = tree.prove(key.as_bytes());
            assert_eq!(p.verify(&root, key.as_bytes(), Some(format!("value{i}").as_bytes())), Ok(()));
            assert_eq!(p.verify(&root, key.as_bytes(), Some(b"forged")), Err(ProofError::WrongValue));
            assert_eq!(p.verify(&root, key.as_bytes(), None), Err(ProofError::WrongValue));
            // Against another root (one value changed) it fails.
            let mut other = [0u8; 32];
            other.copy_from_slice(&root);
            other[0] ^= 1;
            assert_eq!(
                p.verify(&other, key.as_bytes(), Some(format!("value{i}").as_bytes())),
                Err(ProofError::WrongRoot)
            );
        }
        for i in 200..400u32 {
            let key = format!("key{i}");
            let p = tree.prove(key.as_bytes());
            assert_eq!(p.verify(&root, key.as_bytes(), None), Ok(()), "absence of {key}");
            assert!(p.verify(&root, key.as_bytes(), Some(b"x")).is_err());
        }
        // A present key cannot be shown absent by any honest proof of another key.
        for i in 0..50u32 {
            let p = tree.prove(format!("key{}", i + 1).as_bytes());
            assert!(p.verify(&root, format!("key{i}").as_bytes(), None).is_err());
        }
        // A tampered sibling, a dropped level or an extra one breaks the proof.
        let p = tree.prove(b"key3");
        let mut t = p.clone();
        t.siblings[0][5] ^= 0x40;
        assert_eq!(t.verify(&root, b"key3", Some(b"value3")), Err(ProofError::WrongRoot));
        let mut t = p.clone();
        t.siblings.pop();
        assert!(t.verify(&root, b"key3", Some(b"value3")).is_err());
        let mut t = p.clone();
        t.siblings.push(EMPTY);
        assert!(t.verify(&root, b"key3", Some(b"value3")).is_err());
        let mut t = p;
        t.siblings = vec![EMPTY; 257];
        assert_eq!(t.verify(&root, b"key3", Some(b"value3")), Err(ProofError::TooLong(257)));
    }

    /// The cost figures of the README: building a million-key tree, then blocks of 2,000
    /// updates on it. `cargo test --release -p hotstuff-driver-std --lib commitment -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, run in release"]
    fn cost_at_a_million_keys() {
        let mut tree = StateTree::new();
        let start = std::time::Instant::now();
        for i in 0..1_000_000u32 {
            tree.set(&i.to_le_bytes(), Some(b"some value of a few bytes"));
        }
        let build = start.elapsed();
        let start = std::time::Instant::now();
        let value = b"some value of a few bytes";
        let keys: Vec<[u8; 4]> = (0..1_000_000u32).map(u32::to_le_bytes).collect();
        let bulk = StateTree::from_entries(keys.iter().map(|k| (&k[..], &value[..])));
        let bulk_build = start.elapsed();
        assert_eq!(bulk.root(), tree.root());
        let start = std::time::Instant::now();
        let blocks = 20u32;
        for b in 0..blocks {
            for i in 0..2000u32 {
                let key = (b * 7919 + i * 104_729) % 1_500_000;
                tree.set(&key.to_le_bytes(), Some(&b.to_le_bytes()));
            }
        }
        let per_block = start.elapsed() / blocks;
        let depth = tree.prove(&7u32.to_le_bytes()).siblings.len();
        println!(
            "1,000,000 keys: built in {build:?} key by key, {bulk_build:?} in bulk; a block of 2,000 updates in {per_block:?}; a proof has {depth} siblings"
        );
    }

    #[test]
    fn the_empty_tree_and_a_single_entry() {
        let mut tree = StateTree::new();
        assert_eq!(tree.root(), EMPTY);
        assert_eq!(tree.prove(b"a").verify(&EMPTY, b"a", None), Ok(()));
        tree.set(b"a", Some(b"1"));
        let leaf = leaf_hash(blake3::hash(b"a").as_bytes(), blake3::hash(b"1").as_bytes());
        assert_eq!(tree.root(), leaf, "a lone entry is a leaf at the root");
        assert_eq!(tree.prove(b"a").verify(&leaf, b"a", Some(b"1")), Ok(()));
        assert_eq!(tree.prove(b"b").verify(&leaf, b"b", None), Ok(()));
        // Deleting an absent key changes nothing.
        tree.set(b"zz", None);
        assert_eq!(tree.root(), leaf);
        assert_eq!(tree.len(), 1);
    }
}
