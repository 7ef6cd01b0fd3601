//! The application message (`Message::App`): it round-trips byte for byte, is bounded by the
//! block payload limit before anything is allocated, and the replica refuses it as the driver's.

use crate::common;

use common::*;
use hotstuff_core::{ChainId, DecodeError, Envelope, Input, InputError, Limits, Message, Replica};

#[test]
fn app_messages_round_trip_and_are_bounded() {
    for body in [vec![], vec![1, 2, 3], vec![7; 1000]] {
        roundtrip(Message::App(body));
    }
    let limits = Limits { max_payload: 100, ..Limits::default() };
    let bytes = Envelope::new(ChainId(5), Message::App(vec![0; 101])).encode();
    assert!(matches!(
        Envelope::decode(&bytes, &limits),
        Err(DecodeError::FieldTooLarge { field: "app", len: 101, max: 100 })
    ));
    assert!(
        Envelope::decode(&Envelope::new(ChainId(5), Message::App(vec![0; 100])).encode(), &limits).is_ok()
    );
}

#[test]
fn the_replica_refuses_an_app_message_as_the_drivers() {
    let c = Cluster::new(4);
    let mut r = Replica::new(c.config(), c.key(0), c.pacemaker, c.recovered_genesis()).unwrap();
    let from = c.key(1).public();
    let err = r.handle(Input::Message { from, message: Message::App(vec![1, 2, 3]) });
    assert!(matches!(err, Err(InputError::NotForReplica)), "{err:?}");
}
