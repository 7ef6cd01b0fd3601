//! Connection health: a peer that sends heartbeats keeps its connection; once it falls silent
//! (the socket stays open, nothing arrives) the node drops the connection within the liveness
//! deadline (default 1 s) plus one heartbeat interval, and says why.

mod common;

use common::{key, Cluster, CHAIN};
use hotstuff_core::crypto::SignKind;
use hotstuff_core::View;
use hotstuff_driver_std::net::frame::{is_heartbeat, read_frame, HEARTBEAT};
use hotstuff_driver_std::net::handshake::{self, Hello, HELLO_LEN};
use hotstuff_driver_std::net::NetEvent;
use hotstuff_driver_std::Event;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn a_silent_peer_is_dropped_within_the_liveness_deadline() {
    let c = Cluster::start(4, 1);
    c.wait_height(2, Duration::from_secs(30)).unwrap();
    // Connect as the extra (listener) key, which the nodes accept.
    let me = &c.extra[0];
    let mut s = TcpStream::connect(c.addrs[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mine = Hello { chain: CHAIN, key: me.public(), nonce: handshake::nonce().unwrap() };
    s.write_all(&mine.encode()).unwrap();
    let mut buf = [0u8; HELLO_LEN];
    s.read_exact(&mut buf).unwrap();
    let theirs = Hello::decode(&buf).unwrap();
    assert_eq!(theirs.key, key(0).public());
    s.write_all(&me.sign(CHAIN, SignKind::Handshake, View(0), &handshake::digest(&mine, &theirs)).0).unwrap();
    let mut sig = [0u8; 64];
    s.read_exact(&mut sig).unwrap();
    handshake::verify(&mine, &theirs, &sig).unwrap();

    // Read everything the node sends until it closes the connection.
    let mut r = s.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut messages, mut heartbeats) = (0u64, 0u64);
        loop {
            match read_frame(&mut r, 64 << 20) {
                Ok(Some(body)) if is_heartbeat(&body) => heartbeats += 1,
                Ok(Some(_)) => messages += 1,
                Ok(None) | Err(_) => return (Instant::now(), messages, heartbeats),
            }
        }
    });
    // Heartbeats every 200 ms keep the connection for 3 s (well past the 1 s deadline).
    let start = Instant::now();
    let mut silent = start;
    while start.elapsed() < Duration::from_secs(3) {
        s.write_all(&HEARTBEAT).unwrap();
        silent = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!reader.is_finished(), "the node dropped a peer that sent heartbeats");
    // Then silence from the last heartbeat on: the socket stays open, nothing is sent.
    let (closed, messages, heartbeats) = reader.join().unwrap();
    let after = closed - silent;
    println!(
        "silent peer dropped {after:?} after its last byte (liveness 1 s); it received {messages} messages \
         and {heartbeats} heartbeats"
    );
    assert!(after >= Duration::from_millis(900), "dropped after {after:?}, before the deadline");
    assert!(after <= Duration::from_millis(2000), "dropped after {after:?}, long past the 1 s deadline");
    assert!(messages > 0, "the node sent no consensus messages to the listener");
    // The node reports it through its consensus loop, a moment after closing.
    let waiting = Instant::now();
    let reason = loop {
        let found = c.events[0].lock().unwrap().iter().find_map(|e| match e {
            Event::Net(NetEvent::Disconnected { peer, reason }) if *peer == me.public() => {
                Some(reason.clone())
            }
            _ => None,
        });
        if let Some(reason) = found {
            break reason;
        }
        assert!(waiting.elapsed() < Duration::from_secs(5), "no disconnection event");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(reason.contains("nothing received"), "{reason}");
    drop(s);
}
