//! The wire of `hotstuff-driver-std`, read and written asynchronously: the signed handshake
//! (its pure steps are [`handshake::hello`], [`handshake::answer`] and [`handshake::verify`])
//! and length-prefixed frames ([`frame::body_len`], [`frame::encode`]).

use hotstuff_core::{ChainId, Keypair, PublicKey};
use hotstuff_driver_std::net::{frame, handshake, Frame};
use hotstuff_driver_std::{FrameError, HandshakeError};
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Runs the handshake on `stream` (the caller bounds it in time). `allowed` says which keys
/// may connect; `expect` is the key the dialled address belongs to. Returns the peer's key.
pub async fn run_handshake(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    me: &Keypair,
    chain: ChainId,
    allowed: impl Fn(&PublicKey) -> bool,
    expect: Option<PublicKey>,
) -> Result<PublicKey, HandshakeError> {
    let mine = handshake::hello(me, chain)?;
    stream.write_all(&mine.encode()).await.map_err(handshake::io)?;
    let mut theirs = [0u8; handshake::HELLO_LEN];
    read_hello(stream, &mut theirs).await?;
    let (theirs, sig) = handshake::answer(me, &mine, &theirs, allowed, expect)?;
    stream.write_all(&sig.0).await.map_err(handshake::io)?;
    let mut their_sig = [0u8; 64];
    stream.read_exact(&mut their_sig).await.map_err(handshake::io)?;
    handshake::verify(&mine, &theirs, &their_sig)
}

/// Reads the peer's hello, refusing bytes that cannot begin one as soon as they arrive; a text
/// client (at the wrong port) gets [`handshake::NOT_A_CLIENT_PORT`].
async fn read_hello(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    buf: &mut [u8; handshake::HELLO_LEN],
) -> Result<(), HandshakeError> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        let n = stream.read(rest).await.map_err(handshake::io)?;
        if n == 0 {
            return Err(handshake::io(ErrorKind::UnexpectedEof.into()));
        }
        got += n;
        if let Err(e) = handshake::check_hello_start(buf.get(..got).unwrap_or_default()) {
            if matches!(e, HandshakeError::ClientOnConsensusPort) {
                // Best effort: the connection is closed either way.
                let _ = stream.write_all(handshake::NOT_A_CLIENT_PORT.as_bytes()).await;
            }
            return Err(e);
        }
    }
    Ok(())
}

fn io(e: std::io::Error) -> FrameError {
    FrameError::Io(Arc::new(e))
}

/// Reads one frame of at most `max` bytes. `Ok(None)` is a clean end of stream between frames.
/// It waits as long as it takes for a frame to start; once its first byte is in, the rest must
/// arrive within `timeout`. The length is checked before anything is allocated for the body,
/// and the body buffer grows with the bytes actually received, never to the announced length
/// up front.
pub async fn read_frame(
    r: &mut (impl AsyncRead + Unpin),
    max: usize,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; 4];
    let first = r.read(&mut prefix).await.map_err(io)?;
    if first == 0 {
        return Ok(None);
    }
    let rest = async {
        let mut filled = first;
        while let Some(buf) = prefix.get_mut(filled..).filter(|b| !b.is_empty()) {
            match r.read(buf).await.map_err(io)? {
                0 => return Err(FrameError::Truncated { expected: 4, got: filled }),
                n => filled += n,
            }
        }
        let len = frame::body_len(prefix, max)?;
        // As the std reader: the buffer runs at most `frame::GROW` bytes ahead of the bytes
        // received, and grows by exactly that, so the peak stays within twice the bytes
        // received plus one step (doubling would hold three times the data while it moves).
        let mut body = Vec::new();
        while body.len() < len {
            let start = body.len();
            let end = start + (len - start).min(frame::GROW);
            body.reserve_exact(end - start);
            body.resize(end, 0);
            let mut filled = start;
            while let Some(buf) = body.get_mut(filled..end).filter(|b| !b.is_empty()) {
                match r.read(buf).await.map_err(io)? {
                    0 => return Err(FrameError::Truncated { expected: len, got: filled }),
                    n => filled += n,
                }
            }
        }
        Ok(Some(body))
    };
    tokio::time::timeout(timeout, rest).await.unwrap_or_else(|_| Err(io(ErrorKind::TimedOut.into())))
}

/// Writes frames (each a length prefix and the body) and flushes once.
pub async fn write_frames(w: &mut (impl AsyncWrite + Unpin), bodies: &[Frame]) -> std::io::Result<()> {
    for body in bodies {
        w.write_all(&frame::encode(body)?).await?;
    }
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_refuse_bad_lengths() {
        let t = Duration::from_secs(1);
        let mut buf = Vec::new();
        write_frames(&mut buf, &[Arc::new(b"hello".to_vec()), Arc::default()]).await.unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 16, t).await.unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(read_frame(&mut r, 16, t).await.unwrap().as_deref(), Some(&b""[..]));
        assert!(read_frame(&mut r, 16, t).await.unwrap().is_none());

        let huge = u32::MAX.to_le_bytes();
        assert!(matches!(read_frame(&mut &huge[..], 16, t).await, Err(FrameError::TooLarge { max: 16, .. })));
        assert!(matches!(
            read_frame(&mut &buf[..6], 16, t).await,
            Err(FrameError::Truncated { expected: 5, got: 2 })
        ));
        assert!(matches!(
            read_frame(&mut &buf[..2], 16, t).await,
            Err(FrameError::Truncated { expected: 4, got: 2 })
        ));
    }

    #[tokio::test]
    async fn a_frame_stalled_after_its_first_byte_times_out() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[10, 0]).await.unwrap();
        let r = read_frame(&mut b, 16, Duration::from_millis(50)).await;
        assert!(matches!(r, Err(FrameError::Io(e)) if e.kind() == ErrorKind::TimedOut));
    }
}
