//! Snapshot chunks of the kv state, each verifiable on its own against a certified
//! [`commitment`](super::commitment) root: the first slice of snapshot sync (the transfer,
//! the core's inputs and actions and the atomic install are not built yet).
//!
//! # Chunks
//! Chunk `index` at depth `d` holds every entry whose key hash (`blake3(key)`) starts with the
//! `d` bits of `index`: a subtree of the commitment tree. A state splits into `2^d` chunks; a
//! chunk that is too large to send in one piece splits into its two halves at depth `d + 1`,
//! and so on, so a client bounds every transfer whatever the keys (an adversary who writes
//! keys can grind their hashes to crowd one prefix, but not past the depth the client asks
//! for: about `2^depth` hash evaluations per key).
//!
//! # Proof
//! With a chunk comes the summary of each subtree beside its path ([`Sibling`]: empty, one
//! leaf given whole, or the hash of two leaves or more). [`verify_chunk`] hashes the chunk's
//! entries into their subtree, then up the path, and compares with the root: any entry
//! missing, added, changed, or from another chunk, and any sibling misstated, gives another
//! root (short of a blake3 collision). So a client can take chunks from several peers, check
//! each as it arrives, avoid a peer whose chunk fails, and know the union of the `2^d` verified
//! chunks is the whole state under the root.

pub use super::commitment::Sibling;
use super::commitment::{bit, leaf_hash, node_hash, Hash, EMPTY};

/// The deepest chunk split (2^32 chunks).
pub const MAX_CHUNK_DEPTH: u8 = 32;

/// Why a chunk does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The depth is over [`MAX_CHUNK_DEPTH`] or the index over `2^depth`.
    #[error("chunk {index} at depth {depth} does not exist")]
    NoSuchChunk {
        /// The depth.
        depth: u8,
        /// The index.
        index: u32,
    },
    /// The proof does not have one sibling per level.
    #[error("the proof has {got} siblings, the chunk's depth is {depth}")]
    WrongLength {
        /// Siblings given.
        got: usize,
        /// The depth.
        depth: u8,
    },
    /// An entry whose key hash is outside the chunk.
    #[error("entry {0} belongs to another chunk")]
    OutsideChunk(usize),
    /// Two entries with the same key.
    #[error("a key appears twice")]
    Duplicate,
    /// A sibling given as a lone leaf whose key is not in that sibling's subtree.
    #[error("sibling {0} is a leaf off its subtree")]
    BadSibling(usize),
    /// The chunk and its proof do not hash to the root.
    #[error("the chunk does not hash to the root")]
    WrongRoot,
}

/// The path of chunk `index` at `depth`: its first `depth` bits are `index`'s low `depth`
/// bits, most significant first; the rest are zero.
#[must_use]
pub fn chunk_path(depth: usize, index: u32) -> Hash {
    let mut path = [0u8; 32];
    for d in 0..depth.min(usize::from(MAX_CHUNK_DEPTH)) {
        if (u64::from(index) >> (depth - 1 - d)) & 1 == 1 {
            if let Some(b) = path.get_mut(d / 8) {
                *b |= 0x80 >> (d % 8);
            }
        }
    }
    path
}

/// The chunk at `depth` that `key` belongs to.
#[must_use]
pub fn chunk_of(key: &[u8], depth: u8) -> u32 {
    chunk_of_hash(blake3::hash(key).as_bytes(), depth)
}

/// The chunk at `depth` of a key hash (as [`chunk_of`] of the key): its first `depth` bits.
#[must_use]
pub fn chunk_of_hash(h: &Hash, depth: u8) -> u32 {
    let top = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    match depth.min(MAX_CHUNK_DEPTH) {
        0 => 0,
        d => top >> (32 - u32::from(d)),
    }
}

/// Where chunk `index` at `depth` lies in `sorted` (entries sorted by key hash, which
/// `key_hash` reads): the entries a server answers that chunk with.
pub fn chunk_range<T>(
    sorted: &[T],
    key_hash: impl Fn(&T) -> &Hash,
    depth: u8,
    index: u32,
) -> core::ops::Range<usize> {
    let idx = |e: &T| chunk_of_hash(key_hash(e), depth);
    let start = sorted.partition_point(|e| idx(e) < index);
    let end = sorted.partition_point(|e| idx(e) <= index);
    start..end
}

/// The hash and leaf count (0, 1, or 2 for "two or more") of the subtree at `depth` holding
/// `leaves` (sorted, distinct key hashes).
fn subtree(leaves: &[(Hash, Hash)], depth: usize) -> (Hash, u8) {
    match leaves {
        [] => (EMPTY, 0),
        [(k, v)] => (leaf_hash(k, v), 1),
        _ => {
            let split = leaves.partition_point(|(k, _)| bit(k, depth) == 0);
            let (left, right) = leaves.split_at(split);
            (node_hash(&subtree(left, depth + 1).0, &subtree(right, depth + 1).0), 2)
        }
    }
}

/// Checks that `entries` are exactly the state's entries in chunk `index` at `depth` under
/// `root`, with the chunk's `proof` ([`super::commitment::StateTree::prove_chunk`]).
pub fn verify_chunk(
    root: &Hash,
    depth: u8,
    index: u32,
    entries: &[(Vec<u8>, Vec<u8>)],
    proof: &[Sibling],
) -> Result<(), ChunkError> {
    if depth > MAX_CHUNK_DEPTH || (depth < 32 && u64::from(index) >> depth != 0) {
        return Err(ChunkError::NoSuchChunk { depth, index });
    }
    let d = usize::from(depth);
    if proof.len() != d {
        return Err(ChunkError::WrongLength { got: proof.len(), depth });
    }
    let path = chunk_path(d, index);
    let mut leaves = Vec::with_capacity(entries.len());
    for (i, (k, v)) in entries.iter().enumerate() {
        let kh = *blake3::hash(k).as_bytes();
        if (0..d).any(|j| bit(&kh, j) != bit(&path, j)) {
            return Err(ChunkError::OutsideChunk(i));
        }
        leaves.push((kh, *blake3::hash(v).as_bytes()));
    }
    leaves.sort_unstable();
    if leaves.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(ChunkError::Duplicate);
    }
    let (mut h, mut count) = subtree(&leaves, d);
    for (j, sibling) in proof.iter().enumerate().rev() {
        let ours_left = bit(&path, j) == 0;
        let join = |ours: &Hash, theirs: &Hash| {
            if ours_left {
                node_hash(ours, theirs)
            } else {
                node_hash(theirs, ours)
            }
        };
        match sibling {
            // A subtree with at most one leaf hashes as that leaf (or as empty) at any height.
            Sibling::Empty if count <= 1 => {}
            Sibling::Empty => h = join(&h, &EMPTY),
            Sibling::Leaf(k, v) => {
                if (0..j).any(|x| bit(k, x) != bit(&path, x)) || bit(k, j) == bit(&path, j) {
                    return Err(ChunkError::BadSibling(j));
                }
                let theirs = leaf_hash(k, v);
                if count == 0 {
                    h = theirs;
                    count = 1;
                } else {
                    h = join(&h, &theirs);
                    count = 2;
                }
            }
            Sibling::Inner(theirs) => {
                h = join(&h, theirs);
                count = 2;
            }
        }
    }
    if h == *root {
        Ok(())
    } else {
        Err(ChunkError::WrongRoot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::commitment::StateTree;

    fn state(n: usize, salt: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n).map(|i| (format!("{salt}key{i}").into_bytes(), format!("value{i}").into_bytes())).collect()
    }

    fn chunk(entries: &[(Vec<u8>, Vec<u8>)], depth: u8, index: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        entries.iter().filter(|(k, _)| chunk_of(k, depth) == index).cloned().collect()
    }

    #[test]
    fn every_chunk_verifies_and_the_chunks_cover_the_state() {
        for n in [0usize, 1, 2, 3, 17, 300] {
            let entries = state(n, "");
            let tree = StateTree::from_entries(entries.iter().map(|(k, v)| (&k[..], &v[..])));
            let root = tree.root();
            for depth in [0u8, 1, 2, 5, 9] {
                let mut covered = 0;
                for index in 0..(1u32 << depth) {
                    let c = chunk(&entries, depth, index);
                    covered += c.len();
                    let proof = tree.prove_chunk(depth, index);
                    assert_eq!(
                        verify_chunk(&root, depth, index, &c, &proof),
                        Ok(()),
                        "n {n} depth {depth} chunk {index}"
                    );
                }
                assert_eq!(covered, n);
            }
        }
    }

    #[test]
    fn chunk_range_over_entries_sorted_by_key_hash_is_the_chunk() {
        let entries = state(300, "range");
        let mut sorted: Vec<(Hash, &[u8])> =
            entries.iter().map(|(k, _)| (*blake3::hash(k).as_bytes(), &k[..])).collect();
        sorted.sort_unstable();
        for depth in [0u8, 1, 3, 7, 12, 32] {
            let mut covered = 0;
            let indices: Vec<u32> = sorted.iter().map(|(h, _)| chunk_of_hash(h, depth)).collect();
            for &index in &indices {
                let range = chunk_range(&sorted, |(h, _)| h, depth, index);
                let mut got: Vec<&[u8]> = sorted[range].iter().map(|(_, k)| *k).collect();
                let mut want: Vec<&[u8]> = entries
                    .iter()
                    .filter(|(k, _)| chunk_of(k, depth) == index)
                    .map(|(k, _)| &k[..])
                    .collect();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "depth {depth} chunk {index}");
            }
            for index in 0..(1u32 << depth.min(12)) {
                covered += chunk_range(&sorted, |(h, _)| h, depth, index).len();
            }
            if depth <= 12 {
                assert_eq!(covered, sorted.len(), "depth {depth}: the chunks cover the state");
            }
        }
    }

    #[test]
    fn a_bad_chunk_or_proof_is_refused() {
        let entries = state(200, "");
        let tree = StateTree::from_entries(entries.iter().map(|(k, v)| (&k[..], &v[..])));
        let root = tree.root();
        let depth = 3;
        let index = chunk_of(b"key7", depth);
        let good = chunk(&entries, depth, index);
        let proof = tree.prove_chunk(depth, index);
        assert!(good.len() > 2);

        let mut missing = good.clone();
        missing.pop();
        assert_eq!(verify_chunk(&root, depth, index, &missing, &proof), Err(ChunkError::WrongRoot));
        let mut changed = good.clone();
        changed[0].1 = b"forged".to_vec();
        assert_eq!(verify_chunk(&root, depth, index, &changed, &proof), Err(ChunkError::WrongRoot));
        let mut added = good.clone();
        let extra =
            (0..).map(|i| format!("extra{i}").into_bytes()).find(|k| chunk_of(k, depth) == index).unwrap();
        added.push((extra, b"v".to_vec()));
        assert_eq!(verify_chunk(&root, depth, index, &added, &proof), Err(ChunkError::WrongRoot));
        let mut foreign = good.clone();
        foreign.push(entries.iter().find(|(k, _)| chunk_of(k, depth) != index).unwrap().clone());
        assert!(matches!(
            verify_chunk(&root, depth, index, &foreign, &proof),
            Err(ChunkError::OutsideChunk(_))
        ));
        let mut twice = good.clone();
        twice.push(good[0].clone());
        assert_eq!(verify_chunk(&root, depth, index, &twice, &proof), Err(ChunkError::Duplicate));
        // Another chunk's entries and proof under this index.
        let other = (index + 1) % 8;
        assert!(verify_chunk(
            &root,
            depth,
            index,
            &chunk(&entries, depth, other),
            &tree.prove_chunk(depth, other)
        )
        .is_err());
        // A stale root (the state before one update).
        let mut newer = tree.clone();
        newer.set(b"key0", Some(b"new"));
        assert_eq!(verify_chunk(&newer.root(), depth, index, &good, &proof), Err(ChunkError::WrongRoot));
        // Misstated siblings: an inner hash changed, a kind swapped, the list cut or grown.
        let mut p = proof.clone();
        p[0] = match p[0] {
            Sibling::Inner(mut h) => {
                h[0] ^= 1;
                Sibling::Inner(h)
            }
            _ => Sibling::Inner([7; 32]),
        };
        assert!(verify_chunk(&root, depth, index, &good, &p).is_err());
        let mut p = proof.clone();
        p[1] = Sibling::Empty;
        assert!(verify_chunk(&root, depth, index, &good, &p).is_err());
        assert!(matches!(
            verify_chunk(&root, depth, index, &good, &proof[..2]),
            Err(ChunkError::WrongLength { got: 2, depth: 3 })
        ));
        assert!(matches!(verify_chunk(&root, 33, 0, &good, &proof), Err(ChunkError::NoSuchChunk { .. })));
        assert!(matches!(verify_chunk(&root, 3, 8, &good, &proof), Err(ChunkError::NoSuchChunk { .. })));
    }

    /// Sparse states: chunks that are empty or hold one leaf, where the tree has no nodes down
    /// to the chunk's depth, and lone-leaf siblings misstated.
    #[test]
    fn sparse_states_verify_and_lone_leaves_cannot_be_misstated() {
        for n in 1..6 {
            let entries = state(n, "sparse");
            let tree = StateTree::from_entries(entries.iter().map(|(k, v)| (&k[..], &v[..])));
            let root = tree.root();
            let depth = 6;
            let mut collapsed = 0;
            for index in 0..64 {
                let c = chunk(&entries, depth, index);
                let proof = tree.prove_chunk(depth, index);
                assert_eq!(verify_chunk(&root, depth, index, &c, &proof), Ok(()), "n {n} chunk {index}");
                for (j, s) in proof.iter().enumerate() {
                    if let Sibling::Leaf(k, v) = s {
                        // Given as an inner hash, a lone leaf hashes the same beside a subtree
                        // with leaves (the claim is true of the hash), but not beside an empty
                        // one, where it must collapse: there the misstatement is refused.
                        let empty_below = c.is_empty() && proof[j + 1..].iter().all(|x| *x == Sibling::Empty);
                        let mut p = proof.clone();
                        p[j] = Sibling::Inner(leaf_hash(k, v));
                        if empty_below {
                            collapsed += 1;
                            assert!(
                                verify_chunk(&root, depth, index, &c, &p).is_err(),
                                "n {n} chunk {index} level {j}"
                            );
                        }
                        let mut p = proof.clone();
                        p[j] = Sibling::Empty;
                        assert!(verify_chunk(&root, depth, index, &c, &p).is_err());
                    }
                }
            }
            assert!(collapsed > 0, "n {n}: no lone leaf beside an empty subtree was tried");
        }
    }
}
