//! A client of the client port ([`super::ClientServer`]).

use super::MAX_LINE;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A client of [`ClientServer`](super::ClientServer).
pub struct Client {
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
    /// Committed transactions.
    pub txs: u64,
}

impl Client {
    /// Connects (with a timeout on every request).
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> std::io::Result<Self> {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
        let out = TcpStream::connect_timeout(&addr, timeout)?;
        out.set_read_timeout(Some(timeout))?;
        out.set_write_timeout(Some(timeout))?;
        let lines = BufReader::new(out.try_clone()?);
        Ok(Client { out, lines })
    }

    fn request(&mut self, line: &str) -> std::io::Result<String> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        let mut reply = String::new();
        (&mut self.lines).take(MAX_LINE as u64 + 1).read_line(&mut reply)?;
        if reply.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let reply = reply.trim_end().to_string();
        match reply.strip_prefix("ERR ") {
            Some(e) => Err(std::io::Error::other(e.to_string())),
            None => Ok(reply),
        }
    }

    /// Submits a put.
    pub fn put(&mut self, key: &str, value: &str) -> std::io::Result<()> {
        self.request(&format!("PUT {key} {value}")).map(drop)
    }

    /// Submits a delete.
    pub fn delete(&mut self, key: &str) -> std::io::Result<()> {
        self.request(&format!("DEL {key}")).map(drop)
    }

    /// Submits a transaction signed by its client (`TX`); a refusal says why (forged,
    /// replayed, unauthorised, ...).
    pub fn submit(&mut self, tx: &super::auth::SignedTx) -> std::io::Result<()> {
        self.request(&format!("TX {}", tx.to_hex())).map(drop)
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
