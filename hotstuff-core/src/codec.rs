//! Decoding helpers for hand-written borsh readers: memory follows the bytes actually read,
//! never a length prefix.

use alloc::vec::Vec;
use borsh::io::{Error, ErrorKind, Read, Result};
use borsh::BorshDeserialize;

/// How far a buffer may run ahead of the bytes read into it.
pub const STEP: usize = 64 * 1024;

/// Reads a borsh `Vec<u8>` (u32 little-endian length, then the bytes) of at most `max` bytes.
///
/// Plain borsh reserves up to 1 MiB from the length prefix, and a vector grown by doubling
/// holds old and new buffers (three times the data) while it moves. Here the buffer grows by at
/// most [`STEP`] bytes at a time, exactly, so a length prefix larger than the input costs at
/// most `STEP`, and the peak while reading `n` bytes stays within `2 n + STEP`.
pub fn read_bytes<R: Read>(reader: &mut R, max: usize) -> Result<Vec<u8>> {
    let len = u32::deserialize_reader(reader)? as usize;
    if len > max {
        return Err(Error::new(ErrorKind::InvalidData, "byte string over its limit"));
    }
    let mut out = Vec::new();
    while out.len() < len {
        let start = out.len();
        let step = (len - start).min(STEP);
        out.reserve_exact(step);
        out.resize(start + step, 0);
        let buf = out.get_mut(start..).ok_or(ErrorKind::InvalidData)?;
        reader.read_exact(buf)?;
    }
    Ok(out)
}

/// Reads a borsh `Vec<T>` (u32 little-endian count, then the elements) of at most `max`
/// elements, growing the vector by at most [`STEP`] bytes of elements at a time, exactly.
///
/// A count over `max` is refused before anything is read; a count larger than the input costs
/// at most one step. While the vector moves, old and new buffers together stay within twice
/// the elements read plus a step, so the peak stays within `2 n + STEP` for `n` input bytes
/// whenever an element takes no more memory than its encoding.
pub fn read_vec<T: BorshDeserialize, R: Read>(reader: &mut R, max: usize) -> Result<Vec<T>> {
    let len = u32::deserialize_reader(reader)? as usize;
    if len > max {
        return Err(Error::new(ErrorKind::InvalidData, "sequence over its limit"));
    }
    let per_step = (STEP / core::mem::size_of::<T>().max(1)).max(1);
    let mut out = Vec::new();
    while out.len() < len {
        if out.len() == out.capacity() {
            out.reserve_exact((len - out.len()).min(per_step));
        }
        out.push(T::deserialize_reader(reader)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_borsh_writes_and_refuses_over_the_limit_or_short() {
        for n in [0, 1, STEP - 1, STEP, STEP + 1, 3 * STEP + 7] {
            let v: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
            let bytes = borsh::to_vec(&v).unwrap();
            assert_eq!(read_bytes(&mut &bytes[..], n).unwrap(), v);
            if n > 0 {
                assert!(read_bytes(&mut &bytes[..], n - 1).is_err());
                assert!(read_bytes(&mut &bytes[..bytes.len() - 1], n).is_err());
            }
        }
    }

    #[test]
    fn reads_vectors_as_borsh_writes_them_within_the_count_limit() {
        for n in [0usize, 1, 5000, 20_000] {
            let v: Vec<(u64, [u8; 5])> = (0..n).map(|i| (i as u64, [i as u8; 5])).collect();
            let bytes = borsh::to_vec(&v).unwrap();
            assert_eq!(read_vec::<(u64, [u8; 5]), _>(&mut &bytes[..], n).unwrap(), v);
            if n > 0 {
                assert!(read_vec::<(u64, [u8; 5]), _>(&mut &bytes[..], n - 1).is_err());
                assert!(read_vec::<(u64, [u8; 5]), _>(&mut &bytes[..bytes.len() - 1], n).is_err());
            }
        }
    }
}
