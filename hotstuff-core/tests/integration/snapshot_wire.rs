//! The snapshot-sync messages: what encodes decodes to the same message and re-encodes to the
//! same bytes; every list over its limit is refused; trailing bytes and bad tags are refused.

use crate::common;

use common::roundtrip;
use hotstuff_core::message::{MAX_CHUNK_ENTRIES, MAX_CHUNK_PROOF, MAX_SNAPSHOT_KEY};
use hotstuff_core::{
    ChainId, ChunkSibling, DecodeError, Envelope, Height, Limits, Message, SnapshotAsk, SnapshotChunk,
    SnapshotOffer, SnapshotRequest,
};

fn chunk(entries: Vec<(Vec<u8>, Vec<u8>)>, proof: Vec<ChunkSibling>) -> Message {
    Message::SnapshotChunk(SnapshotChunk {
        id: 7,
        height: Height(1234),
        depth: 5,
        index: 17,
        too_large: false,
        available: true,
        entries,
        proof,
    })
}

#[test]
fn snapshot_messages_round_trip() {
    roundtrip(Message::SnapshotRequest(SnapshotRequest { id: 1, ask: SnapshotAsk::Offer }));
    roundtrip(Message::SnapshotRequest(SnapshotRequest {
        id: u64::MAX,
        ask: SnapshotAsk::Chunk { height: Height(99), depth: 32, index: u32::MAX },
    }));
    roundtrip(Message::SnapshotOffer(SnapshotOffer { id: 3, snapshot: None }));
    roundtrip(chunk(
        vec![(b"k".to_vec(), b"v".to_vec()), (vec![], vec![]), (vec![1; 100], vec![2; 1000])],
        vec![ChunkSibling::Empty, ChunkSibling::Leaf([1; 32], [2; 32]), ChunkSibling::Inner([3; 32])],
    ));
}

#[test]
fn snapshot_lists_over_their_limits_are_refused() {
    let decode = |m: Message| Envelope::decode(&Envelope::new(ChainId(5), m).encode(), &Limits::default());
    let too_many = (0..=MAX_CHUNK_ENTRIES).map(|_| (vec![], vec![])).collect();
    assert!(matches!(
        decode(chunk(too_many, vec![])),
        Err(DecodeError::FieldTooLarge { field: "chunk.entries", .. })
    ));
    let long_key = vec![(vec![0; MAX_SNAPSHOT_KEY + 1], vec![])];
    assert!(matches!(
        decode(chunk(long_key, vec![])),
        Err(DecodeError::FieldTooLarge { field: "chunk.key", .. })
    ));
    let long_value = vec![(vec![], vec![0; Limits::default().max_payload + 1])];
    assert!(matches!(
        decode(chunk(long_value, vec![])),
        Err(DecodeError::FieldTooLarge { field: "chunk.value", .. })
    ));
    let long_proof = vec![ChunkSibling::Empty; MAX_CHUNK_PROOF + 1];
    assert!(matches!(
        decode(chunk(vec![], long_proof)),
        Err(DecodeError::FieldTooLarge { field: "chunk.proof", .. })
    ));
    // A bad ask tag, a bad sibling tag, a bool that is not 0 or 1.
    let mut bytes = Envelope::new(
        ChainId(5),
        Message::SnapshotRequest(SnapshotRequest { id: 1, ask: SnapshotAsk::Offer }),
    )
    .encode();
    let last = bytes.len() - 1;
    bytes[last] = 2;
    assert!(Envelope::decode(&bytes, &Limits::default()).is_err());
    let mut bytes = Envelope::new(ChainId(5), chunk(vec![], vec![ChunkSibling::Empty])).encode();
    let last = bytes.len() - 1;
    bytes[last] = 3;
    assert!(Envelope::decode(&bytes, &Limits::default()).is_err());
    let mut bytes = Envelope::new(ChainId(5), chunk(vec![], vec![])).encode();
    // version (2) + chain (8) + tag (1) + id (8) + height (8) + depth (1) + index (4) = too_large
    bytes[32] = 2;
    assert!(Envelope::decode(&bytes, &Limits::default()).is_err());
}
