//! A client of the client port ([`super::ClientServer`]). Every error names the node's address.

use super::protocol::{check_key, check_value, MAX_LINE};
use super::receipt::Receipt;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A client of [`ClientServer`](super::ClientServer).
pub struct Client {
    addr: SocketAddr,
    timeout: Duration,
    out: TcpStream,
    lines: BufReader<TcpStream>,
}

/// True if `error` is the node's `ERR busy: ...` answer (a limit is full: the mempool, this
/// connection's share of it, the client port, or its write slots); the same request may
/// succeed later.
#[must_use]
pub fn is_busy(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::Other && error.to_string().starts_with("busy")
}

/// A node's answer to `STATUS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteStatus {
    /// The node's view.
    pub view: u64,
    /// The leader of that view (hex).
    pub leader: String,
    /// The committed height.
    pub height: u64,
    /// Committed transactions (at that height).
    pub txs: u64,
}

/// A transaction the node accepted: its id, and the committed height when it was accepted
/// (its commit, if any, is in a later block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The transaction's id ([`super::tx_id`]), 64 hex characters.
    pub id: String,
    /// The committed height when the node accepted it.
    pub since: u64,
}

/// The first words of every answer of the protocol.
const ANSWERS: [&str; 9] =
    ["OK ", "VALUE ", "NONE", "STATUS ", "DIGEST ", "COMMITTED ", "UNKNOWN ", "SEQ ", "ERR "];

impl Client {
    /// Connects (with a timeout on every request).
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> std::io::Result<Self> {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "no address"))?;
        let failed = |e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot connect to {addr} (expected a hotstuff-node client port, `client_listen`): {e}"
                ),
            )
        };
        let out = TcpStream::connect_timeout(&addr, timeout).map_err(failed)?;
        out.set_read_timeout(Some(timeout))?;
        out.set_write_timeout(Some(timeout))?;
        let lines = BufReader::new(out.try_clone()?);
        Ok(Client { addr, timeout, out, lines })
    }

    /// The node's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn request(&mut self, line: &str) -> std::io::Result<String> {
        let addr = self.addr;
        let wrap = |e: std::io::Error| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                std::io::Error::new(ErrorKind::TimedOut, format!("no answer from {addr} in time"))
            }
            ErrorKind::UnexpectedEof => std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("{addr} closed the connection without an answer"),
            ),
            _ => std::io::Error::new(e.kind(), format!("talking to {addr}: {e}")),
        };
        self.out.write_all(format!("{line}\n").as_bytes()).map_err(wrap)?;
        let mut reply = Vec::new();
        (&mut self.lines).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut reply).map_err(wrap)?;
        if reply.is_empty() {
            return Err(wrap(ErrorKind::UnexpectedEof.into()));
        }
        let text = std::str::from_utf8(&reply)
            .ok()
            .and_then(|t| t.strip_suffix('\n'))
            .filter(|t| ANSWERS.iter().any(|a| t.starts_with(a) || *t == a.trim_end()));
        let Some(text) = text else {
            if reply.starts_with(&crate::net::handshake::MAGIC) {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!(
                        "{addr} is the consensus port of a hotstuff node (`listen`), not its client port \
                         (`client_listen`)"
                    ),
                ));
            }
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "{addr} did not answer in the client protocol ({} bytes that are not an answer line); \
                     is it a hotstuff-node client port (`client_listen`)?",
                    reply.len()
                ),
            ));
        };
        match text.strip_prefix("ERR ") {
            Some(e) => Err(std::io::Error::other(e.to_string())),
            None => Ok(text.to_string()),
        }
    }

    fn submitted(reply: &str) -> std::io::Result<Submitted> {
        let mut words = reply.split(' ').skip(1);
        match (words.next(), words.next().and_then(|s| s.parse().ok())) {
            (Some(id), Some(since)) => Ok(Submitted { id: id.to_string(), since }),
            _ => Err(std::io::Error::new(ErrorKind::InvalidData, format!("malformed answer `{reply}`"))),
        }
    }

    /// Submits a put; the value may hold spaces or be empty (see [`check_value`]).
    pub fn put(&mut self, key: &str, value: &str) -> std::io::Result<Submitted> {
        check_key(key).and_then(|()| check_value(value)).map_err(invalid)?;
        let reply = self.request(&format!("PUT {key} {value}"))?;
        Self::submitted(&reply)
    }

    /// Submits a delete.
    pub fn delete(&mut self, key: &str) -> std::io::Result<Submitted> {
        check_key(key).map_err(invalid)?;
        let reply = self.request(&format!("DEL {key}"))?;
        Self::submitted(&reply)
    }

    /// Waits up to `timeout` (at most [`super::MAX_WAIT`]) until the node has committed the
    /// block that holds `tx` (after the height it was accepted at).
    pub fn wait(&mut self, tx: &Submitted, timeout: Duration) -> std::io::Result<Receipt> {
        self.out.set_read_timeout(Some(timeout + self.timeout))?;
        let reply = self.request(&format!("WAIT {} {} {}", tx.id, tx.since, timeout.as_millis()));
        self.out.set_read_timeout(Some(self.timeout))?;
        let reply = reply?;
        let height = reply.rsplit(' ').next().and_then(|h| h.parse().ok());
        match (reply.split(' ').next(), height) {
            (Some("COMMITTED"), Some(h)) => Ok(Receipt::Committed(h)),
            (Some("UNKNOWN"), Some(h)) => Ok(Receipt::Unknown { scanned: h }),
            _ => Err(std::io::Error::new(ErrorKind::InvalidData, format!("malformed answer `{reply}`"))),
        }
    }

    /// Submits a transaction signed by its client (`TX`); a refusal says why (forged,
    /// replayed, unauthorised, ...).
    pub fn submit(&mut self, tx: &super::auth::SignedTx) -> std::io::Result<Submitted> {
        let reply = self.request(&format!("TX {}", tx.to_hex()))?;
        Self::submitted(&reply)
    }

    /// `(chain id signatures cover, next committed sequence number)` of `client` (`SEQ`).
    pub fn seq(&mut self, client: &hotstuff_core::PublicKey) -> std::io::Result<(u64, u64)> {
        let reply = self.request(&format!("SEQ {}", super::hex(&client.0)))?;
        let mut out = (0, 0);
        for part in reply.split_whitespace().skip(1) {
            match part.split_once('=') {
                Some(("chain", v)) => out.0 = v.parse().unwrap_or(0),
                Some(("next", v)) => out.1 = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Reads a committed value.
    pub fn get(&mut self, key: &str) -> std::io::Result<Option<String>> {
        check_key(key).map_err(invalid)?;
        let reply = self.request(&format!("GET {key}"))?;
        Ok(reply.strip_prefix("VALUE ").map(str::to_string))
    }

    /// `(committed height, hex digest)` of the node's whole committed app state (`DIGEST`).
    pub fn digest(&mut self) -> std::io::Result<(u64, String)> {
        let reply = self.request("DIGEST")?;
        let mut out = (0, String::new());
        for part in reply.split_whitespace().skip(1) {
            match part.split_once('=') {
                Some(("height", v)) => out.0 = v.parse().unwrap_or(0),
                Some(("digest", v)) => out.1 = v.to_string(),
                _ => {}
            }
        }
        Ok(out)
    }

    /// The node's progress.
    pub fn status(&mut self) -> std::io::Result<RemoteStatus> {
        let reply = self.request("STATUS")?;
        let mut s = RemoteStatus::default();
        for part in reply.split_whitespace().skip(1) {
            match part.split_once('=') {
                Some(("view", v)) => s.view = v.parse().unwrap_or(0),
                Some(("leader", v)) => s.leader = v.to_string(),
                Some(("height", v)) => s.height = v.parse().unwrap_or(0),
                Some(("txs", v)) => s.txs = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        Ok(s)
    }
}

fn invalid(reason: String) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidInput, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that answers any request with `answer` and closes.
    fn answering(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer);
        });
        addr
    }

    #[test]
    fn errors_name_the_address_and_what_was_expected_there() {
        let addr = answering(b"HTTP/1.0 400 Bad Request\r\n\r\n");
        let err = Client::connect(addr, Duration::from_secs(5)).unwrap().status().unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&addr.to_string()) && text.contains("did not answer in the client protocol"),
            "{text}"
        );

        let addr = answering(&crate::net::handshake::MAGIC);
        let err = Client::connect(addr, Duration::from_secs(5)).unwrap().status().unwrap_err();
        assert!(err.to_string().contains("is the consensus port"), "{err}");

        let mut c = Client::connect(answering(b""), Duration::from_secs(5)).unwrap();
        let err = c.put("k", &"v".repeat(super::super::MAX_VALUE + 1)).unwrap_err();
        assert_eq!(err.to_string(), "value of 4097 bytes is over the limit of 4096 bytes");
        let err = c.put("k k", "v").unwrap_err();
        assert_eq!(err.to_string(), "a key cannot contain whitespace");
        let err = c.status().unwrap_err();
        assert!(err.to_string().contains("closed the connection without an answer"), "{err}");
    }
}
