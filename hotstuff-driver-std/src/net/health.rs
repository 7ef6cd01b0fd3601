//! Connection health, the same in both drivers (they are wire-compatible).
//!
//! Every authenticated connection has a liveness deadline ([`TcpSettings::liveness_timeout`],
//! default 1 s, about one base view timeout): a connection on which nothing at all arrived for
//! that long is dropped, and the writer of that peer redials with its back-off. To keep a
//! healthy but quiet connection from looking dead, each side sends a heartbeat (an empty frame,
//! [`super::frame::HEARTBEAT`]) on every connection on which it sent nothing for a quarter of
//! the deadline ([`heartbeat_interval`]). Heartbeats flow both ways on every connection, so the
//! side that dialled a connection, which otherwise only writes on it, hears from the peer on it
//! too: a link that accepts bytes but forwards none (a blackhole, as a cloud network failure
//! looks; TCP sees nothing wrong) is found within the deadline on both ends.
//!
//! Below that, the kernel is told about the deadline as well ([`tune`]): TCP keepalive probes
//! an idle connection, and on Linux `TCP_USER_TIMEOUT` ends a connection whose sent data stays
//! unacknowledged for the deadline (so a blocked write does not wait for the write timeout).
//!
//! All nodes of a chain should use the same deadline: a node sends heartbeats at a quarter of
//! its own, and a peer with a much shorter one would drop a quiet connection to it.
//!
//! Compatibility: the frame format is unchanged, but a node built before heartbeats refuses
//! an empty frame as a message that does not decode and closes the connection; upgrade the
//! nodes of a chain together.
//!
//! [`TcpSettings::liveness_timeout`]: super::TcpSettings::liveness_timeout

use std::net::TcpStream;
use std::time::Duration;

/// How often a side sends a heartbeat on a connection it sent nothing on: a quarter of the
/// liveness deadline, so three heartbeats may be lost or late before the peer gives up.
#[must_use]
pub fn heartbeat_interval(liveness: Duration) -> Duration {
    (liveness / 4).max(Duration::from_millis(1))
}

/// Sets TCP keepalive (first probe after the deadline, then every quarter of it, three
/// probes) and, on Linux and Android, `TCP_USER_TIMEOUT` to the deadline, on an established
/// connection. The kernel's timers get at least 1 s (keepalive counts whole seconds, and a
/// shorter user timeout would turn a couple of retransmissions into a reset); a shorter
/// deadline is enforced by the heartbeats alone.
pub fn tune(stream: &TcpStream, liveness: Duration) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    let floor = |d: Duration| d.max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(floor(liveness))
        .with_interval(floor(heartbeat_interval(liveness)));
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let keepalive = keepalive.with_retries(3);
    sock.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    sock.set_tcp_user_timeout(Some(floor(liveness)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn tune_sets_keepalive_and_the_user_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        tune(&s, Duration::from_secs(2)).unwrap();
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(sock.tcp_user_timeout().unwrap(), Some(Duration::from_secs(2)));
            assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(2));
        }
        assert_eq!(heartbeat_interval(Duration::from_secs(1)), Duration::from_millis(250));
    }
}
