//! Bad input to a tokio node's listener: garbage bytes, a handshake for another chain, an
//! unknown key, an oversized frame length, a garbage frame and a truncated frame. Each is refused
//! with a typed error (seen through the event handlers), the connection is closed, and the node
//! keeps committing.

use crate::common;

use common::{key, Cluster, Kind, CHAIN};
use hotstuff_core::{ChainId, Keypair};
use hotstuff_driver_std::net::frame::write_frame;
use hotstuff_driver_std::net::handshake::{self, HELLO_LEN};
use hotstuff_driver_tokio::{Event, FrameError, HandshakeError, NetError, NetEvent};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Runs the std driver's handshake as `key` for `chain` (the node may refuse it).
fn handshake_as(addr: SocketAddr, key: &Keypair, chain: ChainId) -> TcpStream {
    let mut s = connect(addr);
    let _ = handshake::run(&mut s, key, chain, |_| true, None);
    s
}

/// The node closes `s`: reads reach the end of the stream (or a reset) in bounded time.
fn assert_closed(mut s: TcpStream, what: &str) {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => assert!(start.elapsed() < common::PATIENCE, "{what}: connection not closed"),
        }
    }
}

/// Waits for node 0 to report a refusal matching `pred`.
fn refused(c: &Cluster, what: &str, pred: impl Fn(&NetError) -> bool) {
    let start = Instant::now();
    loop {
        let found = c.events[0].lock().unwrap().iter().find_map(|e| match e {
            Event::Net(NetEvent::Refused { error, .. }) if pred(error) => Some(error.to_string()),
            _ => None,
        });
        if let Some(text) = found {
            println!("{what}: refused: {text}");
            return;
        }
        if start.elapsed() > common::PATIENCE {
            let seen: Vec<String> = c.events[0].lock().unwrap().iter().map(|e| format!("{e:?}")).collect();
            panic!("{what}: no matching refusal; events: {seen:#?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn bad_input_is_refused_the_connection_closed_and_the_node_keeps_committing() {
    let c = Cluster::start(&[Kind::Tokio; 4], 1);
    let addr = c.addrs[0];
    let listener = key(100); // configured on every node as a peer without an address
    c.wait_height(3);

    let mut s = connect(addr);
    s.write_all(&[0xab; HELLO_LEN]).unwrap();
    refused(&c, "garbage hello", |e| matches!(e, NetError::Handshake(HandshakeError::BadHello)));
    assert_closed(s, "garbage hello");

    // A client of the kv client protocol at the consensus port gets one line saying so, at once.
    let mut s = connect(addr);
    s.write_all(b"STATUS\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(got.ends_with(handshake::NOT_A_CLIENT_PORT.as_bytes()), "{text:?}");
    refused(&c, "text client", |e| matches!(e, NetError::Handshake(HandshakeError::ClientOnConsensusPort)));

    let s = handshake_as(addr, &listener, ChainId(CHAIN.0 + 1));
    refused(
        &c,
        "other chain",
        |e| matches!(e, NetError::Handshake(HandshakeError::WrongChain { got, .. }) if got.0 == CHAIN.0 + 1),
    );
    assert_closed(s, "other chain");

    let stranger = Keypair::from_secret(&[0x42; 32]);
    let s = handshake_as(addr, &stranger, CHAIN);
    refused(
        &c,
        "unknown key",
        |e| matches!(e, NetError::Handshake(HandshakeError::NotAllowed(k)) if *k == stranger.public()),
    );
    assert_closed(s, "unknown key");

    // Authenticated, then a length prefix over the limit: refused on the prefix alone.
    let mut s = handshake_as(addr, &listener, CHAIN);
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    refused(&c, "oversized frame", |e| matches!(e, NetError::Frame(FrameError::TooLarge { .. })));
    assert_closed(s, "oversized frame");

    let mut s = handshake_as(addr, &listener, CHAIN);
    write_frame(&mut s, &[0x17; 50]).unwrap();
    refused(&c, "garbage frame", |e| matches!(e, NetError::Decode(_)));
    assert_closed(s, "garbage frame");

    // 60 MiB announced (under the 64 MiB limit), 10 bytes sent, then the connection closes.
    let mut s = handshake_as(addr, &listener, CHAIN);
    s.write_all(&(60u32 << 20).to_le_bytes()).unwrap();
    s.write_all(&[0; 10]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    refused(
        &c,
        "truncated frame",
        |e| matches!(e, NetError::Frame(FrameError::Truncated { expected, got: 10 }) if *expected == 60 << 20),
    );
    assert_closed(s, "truncated frame");

    // The node is unharmed: it keeps committing with the others, transactions included.
    let h = c.height(0);
    c.wait_height(h + 5);
    c.submit("after", 40);
    c.wait_txs(40);
    assert!(c.node(0).status().running);
}
