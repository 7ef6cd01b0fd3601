//! Length-prefixed frames: a `u32` little-endian length, then that many bytes. The length is
//! checked against the limit before anything is allocated for the body.
//!
//! A frame with an empty body is a heartbeat ([`HEARTBEAT`]): it carries nothing, is never
//! decoded, and only shows that the link is alive (see [`super::health`]). No message encodes
//! to zero bytes (an envelope always holds its version, chain and kind), so an empty body was
//! never a valid message and the two cannot be confused; the frame format is unchanged.

use crate::error::FrameError;
use std::io::{ErrorKind, Read, Write};

/// A heartbeat on the wire: the length prefix of an empty body.
pub const HEARTBEAT: [u8; 4] = [0; 4];

/// Whether a frame body is a heartbeat (empty) rather than a message.
#[must_use]
pub fn is_heartbeat(body: &[u8]) -> bool {
    body.is_empty()
}

/// Writes one frame (length prefix and body in one buffered write).
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    w.write_all(&encode(body)?)?;
    w.flush()
}

/// One frame: the length prefix and the body.
pub fn encode(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(body);
    Ok(buf)
}

/// The body length a prefix announces, checked against `max` (before anything is allocated).
pub fn body_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Reads one frame of at most `max` bytes. `Ok(None)` is a clean end of stream between frames.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; 4];
    let got = read_full(r, &mut prefix)?;
    if got == 0 {
        return Ok(None);
    }
    if got < prefix.len() {
        return Err(FrameError::Truncated { expected: prefix.len(), got });
    }
    // The limit is checked before the body is allocated.
    let len = body_len(prefix, max)?;
    // The body grows by at most `GROW` bytes ahead of what has arrived, so memory follows the
    // bytes a peer actually sends, not the length it claims (a 4-byte prefix claiming the limit
    // costs 32 KiB, not the limit). Growing by a fixed step keeps the peak, old and new buffer
    // together during a reallocation, within twice the bytes received plus one step.
    let mut body = Vec::new();
    while body.len() < len {
        let start = body.len();
        let step = (len - start).min(GROW);
        body.reserve_exact(step);
        body.resize(start + step, 0);
        let got = read_full(r, body.get_mut(start..).unwrap_or_default())?;
        if got < step {
            return Err(FrameError::Truncated { expected: len, got: start + got });
        }
    }
    Ok(Some(body))
}

/// How far a frame's body buffer runs ahead of the bytes received (every driver's reader).
/// Half of the 64 KiB that decoding may use beyond twice its input, leaving the rest for the
/// reader's own state (the tokio reader's future and timer).
pub const GROW: usize = 32 * 1024;

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|b| !b.is_empty()) {
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e.into())),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_bad_lengths() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 16).unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(read_frame(&mut r, 16).unwrap().as_deref(), Some(&b""[..]));
        assert!(read_frame(&mut r, 16).unwrap().is_none());

        let huge = u32::MAX.to_le_bytes();
        assert!(matches!(read_frame(&mut &huge[..], 16), Err(FrameError::TooLarge { max: 16, .. })));
        assert!(matches!(read_frame(&mut &buf[..6], 16), Err(FrameError::Truncated { expected: 5, got: 2 })));
        assert!(matches!(read_frame(&mut &buf[..2], 16), Err(FrameError::Truncated { expected: 4, got: 2 })));
    }

    #[test]
    fn large_frames_arrive_whole_and_truncation_reports_the_bytes_received() {
        let body: Vec<u8> = (0..3 * GROW + 17).map(|i| (i % 251) as u8).collect();
        let mut buf = Vec::new();
        write_frame(&mut buf, &body).unwrap();
        assert_eq!(read_frame(&mut &buf[..], body.len()).unwrap(), Some(body.clone()));
        let cut = 4 + 2 * GROW + 5;
        assert!(matches!(
            read_frame(&mut &buf[..cut], body.len()),
            Err(FrameError::Truncated { expected, got }) if expected == body.len() && got == 2 * GROW + 5
        ));
    }
}
