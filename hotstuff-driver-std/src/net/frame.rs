//! Length-prefixed frames: a `u32` little-endian length, then that many bytes. The length is
//! checked against the limit before anything is allocated for the body.

use crate::error::FrameError;
use std::io::{ErrorKind, Read, Write};

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
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(FrameError::Truncated { expected: len, got });
    }
    Ok(Some(body))
}

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
}
