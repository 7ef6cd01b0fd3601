//! Bad input from the network: garbage, oversized and truncated frames, a key outside the set,
//! a handshake for another chain, a replayed handshake, a message for another chain, too many
//! connections from one peer. Each is
//! refused with a typed error (asserted on through the event handlers), and the node goes on
//! committing.

use crate::common;

use common::{key, Cluster, CHAIN};
use hotstuff_core::crypto::SignKind;
use hotstuff_core::message::SyncRequest;
use hotstuff_core::{ChainId, Envelope, Keypair, Message, View};
use hotstuff_driver_std::net::frame::write_frame;
use hotstuff_driver_std::net::handshake::{self, Hello, HELLO_LEN};
use hotstuff_driver_std::net::NetEvent;
use hotstuff_driver_std::{Event, FrameError, HandshakeError, NetError};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Completes a handshake with `key` for `chain`; returns the stream (if the node let it
/// through) and what we sent, for replaying.
fn handshake_as(addr: SocketAddr, key: &Keypair, chain: ChainId) -> (TcpStream, Hello, [u8; 64]) {
    let mut s = connect(addr);
    let mine = Hello { chain, key: key.public(), nonce: handshake::nonce().unwrap() };
    s.write_all(&mine.encode()).unwrap();
    let mut buf = [0u8; HELLO_LEN];
    let _ = s.read_exact(&mut buf);
    let theirs = Hello::decode(&buf).unwrap_or(mine);
    let sig = key.sign(chain, SignKind::Handshake, View(0), &handshake::digest(&mine, &theirs)).0;
    let _ = s.write_all(&sig);
    let mut their_sig = [0u8; 64];
    let _ = s.read_exact(&mut their_sig);
    (s, mine, sig)
}

/// Waits for node 0 to report a refusal matching `pred`; returns its text.
fn refused(c: &Cluster, what: &str, pred: impl Fn(&NetError) -> bool) -> String {
    let start = Instant::now();
    loop {
        let found = c.events[0].lock().unwrap().iter().find_map(|e| match e {
            Event::Net(NetEvent::Refused { error, .. }) if pred(error) => Some(error.to_string()),
            _ => None,
        });
        if let Some(text) = found {
            println!("{what}: refused: {text}");
            return text;
        }
        if start.elapsed() > Duration::from_secs(5) {
            let seen: Vec<String> = c.events[0].lock().unwrap().iter().map(|e| format!("{e:?}")).collect();
            panic!("{what}: no matching refusal; events: {seen:#?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn bad_input_is_refused_with_a_typed_error_and_the_node_keeps_committing() {
    let c = Cluster::start(4, 1);
    let addr = c.addrs[0];
    let listener = key(100); // configured on every node as a peer without an address
    c.wait_height(3, Duration::from_secs(20)).unwrap();

    // Garbage instead of a hello.
    let mut s = connect(addr);
    s.write_all(&[0xab; HELLO_LEN]).unwrap();
    refused(&c, "garbage hello", |e| matches!(e, NetError::Handshake(HandshakeError::BadHello)));

    // A client of the kv client protocol at the consensus port gets one line saying so, at once.
    let mut s = connect(addr);
    s.write_all(b"STATUS\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(got.ends_with(handshake::NOT_A_CLIENT_PORT.as_bytes()), "{text:?}");
    refused(&c, "text client", |e| matches!(e, NetError::Handshake(HandshakeError::ClientOnConsensusPort)));

    // A key that is neither a validator nor a configured peer.
    let stranger = Keypair::from_secret(&[0x42; 32]);
    let _ = handshake_as(addr, &stranger, CHAIN);
    refused(
        &c,
        "unknown key",
        |e| matches!(e, NetError::Handshake(HandshakeError::NotAllowed(k)) if *k == stranger.public()),
    );

    // A handshake for another chain.
    let _ = handshake_as(addr, &listener, ChainId(CHAIN.0 + 1));
    refused(
        &c,
        "other chain",
        |e| matches!(e, NetError::Handshake(HandshakeError::WrongChain { got, .. }) if got.0 == CHAIN.0 + 1),
    );

    // A recorded handshake replayed without the key: the node's fresh nonce makes it fail.
    let (_, hello, sig) = handshake_as(addr, &listener, CHAIN);
    let mut s = connect(addr);
    s.write_all(&hello.encode()).unwrap();
    let mut buf = [0u8; HELLO_LEN];
    s.read_exact(&mut buf).unwrap();
    s.write_all(&sig).unwrap();
    refused(
        &c,
        "replayed handshake",
        |e| matches!(e, NetError::Handshake(HandshakeError::BadSignature(k)) if *k == listener.public()),
    );

    // Authenticated, then an oversized frame: refused by its length prefix alone.
    let (mut s, _, _) = handshake_as(addr, &listener, CHAIN);
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    refused(&c, "oversized frame", |e| matches!(e, NetError::Frame(FrameError::TooLarge { .. })));

    // A frame of garbage.
    let (mut s, _, _) = handshake_as(addr, &listener, CHAIN);
    write_frame(&mut s, &[0x17; 50]).unwrap();
    refused(&c, "garbage frame", |e| matches!(e, NetError::Decode(_)));

    // A truncated frame: 1,000 bytes announced, 10 sent, then the connection closes.
    let (mut s, _, _) = handshake_as(addr, &listener, CHAIN);
    s.write_all(&1000u32.to_le_bytes()).unwrap();
    s.write_all(&[0; 10]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    refused(&c, "truncated frame", |e| {
        matches!(e, NetError::Frame(FrameError::Truncated { expected: 1000, got: 10 }))
    });

    // A well-formed message for another chain.
    let (mut s, _, _) = handshake_as(addr, &listener, CHAIN);
    let msg =
        Message::SyncRequest(SyncRequest { id: 1, from_height: hotstuff_core::Height(1), max_blocks: 1 });
    write_frame(&mut s, &Envelope::new(ChainId(5), msg.clone()).encode()).unwrap();
    refused(&c, "message for another chain", |e| matches!(e, NetError::WrongChain { got: ChainId(5), .. }));

    // The same request for this chain is served: the listener gets a sync response.
    let (mut s, _, _) = handshake_as(addr, &listener, CHAIN);
    write_frame(&mut s, &Envelope::new(CHAIN, msg).encode()).unwrap();
    let frame = loop {
        let f = hotstuff_driver_std::net::frame::read_frame(&mut s, 1 << 20).unwrap().expect("a frame");
        if f.is_empty() {
            continue; // a heartbeat (net::health)
        }
        let env = Envelope::decode(&f, &Default::default()).unwrap();
        if let Message::SyncResponse(r) = env.message {
            break r;
        }
    };
    assert_eq!(frame.blocks.first().map(|b| b.height.0), Some(1), "served block 1");

    // One peer cannot hold more than 4 inbound connections (one is open from above).
    let held: Vec<TcpStream> = (0..4).map(|_| handshake_as(addr, &listener, CHAIN).0).collect();
    refused(&c, "fifth connection of one peer", |e| matches!(e, NetError::TooManyConnections(4)));
    drop(held);

    // The node is unharmed: it keeps committing with the others.
    let h = c.height(0);
    c.wait_height(h + 5, Duration::from_secs(20)).unwrap();
    assert!(c.node(0).status().running);
}
