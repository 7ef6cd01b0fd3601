//! The safety log: a small preallocated file beside a [`super::RedbStore`] on disk that makes
//! what the persist barrier waits for (the safety state and this node's own proposals) durable
//! with one write and one `fdatasync`, instead of a durable redb commit (several page writes
//! and fsyncs). The records reach redb later, with the background writer's next transaction,
//! and the log is rewound once a durable redb commit covers them, so it never grows.
//!
//! Layout (every number little-endian):
//!
//! - page 0, the header: `MAGIC` (8 bytes), a random 32-byte key, and the first 16 bytes of
//!   `blake3(MAGIC || key)`. It is written once, when the file is created (in a temporary file
//!   renamed into place), so a log file either has a whole header or does not exist.
//! - from page 1 on, records, each starting on a page boundary ([`PAGE`]): `RECORD_MAGIC`
//!   (4 bytes), `len` (u32: the payload's length), `seq` (u64), the first 16 bytes of the keyed
//!   `blake3(key; len || seq || payload)`, the payload (a borsh [`Entry`]), zeros to the next
//!   page boundary. A record is one write followed by `fdatasync`; starting each on its own
//!   page means a torn write never damages a record acknowledged before it.
//!
//! Reading walks the records from page 1 while each checks out and its `seq` is one more than
//! the one before; the first that does not (zeros, a torn write, a record left from before the
//! last rewind: its `seq` is lower) ends the log. The hash is keyed by the file's own random
//! key, so bytes a peer chose (a block payload) can never pass for a record. A record that
//! checks out but does not decode, or a damaged record followed by the record that should come
//! after it (damage in the middle, not a torn tail), is an error, never skipped.

use crate::error::StoreError;
use borsh::{BorshDeserialize, BorshSerialize};
use hotstuff_core::{BlockRecord, SafetyState};
use redb::StorageBackend;

/// Records start on multiples of this many bytes.
pub const PAGE: u64 = 4096;
/// The size of a new log file (header page included). A record that does not fit in what is
/// left is written to redb durably instead, and the log starts over after it.
pub const CAPACITY: u64 = 4 << 20;

const MAGIC: [u8; 8] = *b"HSSAFLG1";
const RECORD_MAGIC: [u8; 4] = *b"HSR1";
/// magic, len, seq, hash.
const HEADER: usize = 4 + 4 + 8 + 16;

/// What one record holds: the writes of one `Persist` barrier.
#[derive(Clone, Debug, Default, BorshSerialize, BorshDeserialize)]
pub struct Entry {
    /// The newest safety state, if it changed.
    pub safety: Option<SafetyState>,
    /// Uncommitted blocks (in practice this node's own proposal).
    pub blocks: Vec<BlockRecord>,
}

/// An open safety log.
pub struct SafetyLog {
    device: Box<dyn StorageBackend>,
    key: [u8; 32],
    capacity: u64,
    /// Where the next record goes.
    end: u64,
    /// The sequence number of the next record.
    next_seq: u64,
}

impl std::fmt::Debug for SafetyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetyLog").field("end", &self.end).field("next_seq", &self.next_seq).finish()
    }
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: "safety log".into(), reason: reason.into() }
}

fn header_hash(key: &[u8; 32]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&MAGIC);
    h.update(key);
    first16(h.finalize())
}

fn first16(h: blake3::Hash) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_bytes()[..16]);
    out
}

fn record_hash(key: &[u8; 32], len: u32, seq: u64, payload: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    first16(h.finalize())
}

fn round_up(n: u64) -> u64 {
    n.div_ceil(PAGE).saturating_mul(PAGE)
}

/// The bytes of a new log file: the header page and zeros up to `capacity`.
pub fn new_file_bytes(capacity: u64) -> Result<Vec<u8>, StoreError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| corrupt(format!("no entropy for the log key: {e}")))?;
    let len = usize::try_from(capacity.max(2 * PAGE)).map_err(|_| corrupt("capacity too large"))?;
    let mut bytes = vec![0u8; len];
    let header = [&MAGIC[..], &key[..], &header_hash(&key)[..]].concat();
    bytes[..header.len()].copy_from_slice(&header);
    Ok(bytes)
}

/// What a record read back is: its sequence number and content.
pub type Replayed = Vec<(u64, Entry)>;

/// What one position of the file holds.
enum Slot {
    /// A record that checks out: its seq, its payload, the position after it.
    Valid(u64, Vec<u8>, u64),
    /// Not a record (zeros, torn, damaged); the position after it if its length is sane.
    Invalid(Option<u64>),
}

impl SafetyLog {
    /// Opens the log on `device` (holding a file made by [`new_file_bytes`]) and reads its
    /// records. `floor` is the highest sequence number known to be used already (the one redb
    /// holds as folded): new records are numbered above it and above every record in the file.
    pub fn open(device: Box<dyn StorageBackend>, floor: u64) -> Result<(Self, Replayed), StoreError> {
        let capacity = device.len()?;
        if capacity < 2 * PAGE {
            return Err(corrupt(format!("{capacity} bytes, shorter than two pages")));
        }
        let header = device.read(0, MAGIC.len() + 32 + 16)?;
        let (magic, rest) = header.split_at(MAGIC.len());
        let (key_bytes, hash) = rest.split_at(32);
        let mut key = [0u8; 32];
        key.copy_from_slice(key_bytes);
        if magic != MAGIC || hash != header_hash(&key) {
            return Err(corrupt("the header page is damaged or not a safety log"));
        }
        let mut log = SafetyLog { device, key, capacity, end: PAGE, next_seq: 1 };
        let mut records = Vec::new();
        let mut at = PAGE;
        let mut last: Option<u64> = None;
        loop {
            match log.slot(at)? {
                Slot::Valid(seq, payload, next) if last.is_none_or(|l| seq == l.saturating_add(1)) => {
                    let entry = Entry::try_from_slice(&payload)
                        .map_err(|e| corrupt(format!("record {seq} checks out but does not decode: {e}")))?;
                    records.push((seq, entry));
                    last = Some(seq);
                    at = next;
                }
                Slot::Invalid(Some(next)) => {
                    // A damaged record followed by the one that should come after it is damage
                    // in the middle (records are written one after the other, each made durable
                    // before the next): durable records would be lost.
                    if let Some(l) = last {
                        if let Slot::Valid(seq, ..) = log.slot(next)? {
                            if seq == l.saturating_add(2) {
                                return Err(corrupt(format!(
                                    "record {} is damaged and record {seq} after it is whole",
                                    l.saturating_add(1)
                                )));
                            }
                        }
                    }
                    break;
                }
                _ => break,
            }
        }
        log.end = at;
        // Every sequence number in the file (even a record left from before a rewind) stays
        // used: a later record can never be mistaken for one after it.
        let mut max_seen = last.unwrap_or(0).max(floor);
        let mut page = PAGE;
        while page < capacity {
            if let Slot::Valid(seq, ..) = log.slot(page)? {
                max_seen = max_seen.max(seq);
            }
            page = page.saturating_add(PAGE);
        }
        log.next_seq = max_seen.saturating_add(1);
        Ok((log, records))
    }

    /// Reads the record at `at` (a page boundary), checking its length before reading more.
    fn slot(&self, at: u64) -> Result<Slot, StoreError> {
        if at.saturating_add(HEADER as u64) > self.capacity {
            return Ok(Slot::Invalid(None));
        }
        let h = self.device.read(at, HEADER)?;
        let field = |r: std::ops::Range<usize>| h.get(r).unwrap_or_default();
        if field(0..4) != RECORD_MAGIC {
            return Ok(Slot::Invalid(None));
        }
        let len = u32::from_le_bytes(field(4..8).try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(field(8..16).try_into().unwrap_or_default());
        let total = HEADER as u64 + u64::from(len);
        if at.saturating_add(total) > self.capacity {
            return Ok(Slot::Invalid(None));
        }
        let next = at + round_up(total);
        let payload = self.device.read(at + HEADER as u64, len as usize)?;
        if field(16..32) != record_hash(&self.key, len, seq, &payload) {
            return Ok(Slot::Invalid(Some(next)));
        }
        Ok(Slot::Valid(seq, payload, next))
    }

    /// Appends `entry` and makes it durable; its sequence number, or `None` (nothing written)
    /// if it does not fit in what is left of the file.
    /// The record is an [`Entry`] of `safety` and `blocks`.
    pub fn append(
        &mut self,
        safety: &Option<SafetyState>,
        blocks: &[BlockRecord],
    ) -> Result<Option<u64>, StoreError> {
        // Encodes as an `Entry` (a slice encodes as a `Vec`).
        let payload = borsh::to_vec(&(safety, blocks)).map_err(|e| corrupt(format!("encode: {e}")))?;
        let Ok(len) = u32::try_from(payload.len()) else { return Ok(None) };
        let total = round_up(HEADER as u64 + u64::from(len));
        if self.end.saturating_add(total) > self.capacity {
            return Ok(None);
        }
        let seq = self.next_seq;
        let mut buf = Vec::with_capacity(total as usize);
        buf.extend_from_slice(&RECORD_MAGIC);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(&record_hash(&self.key, len, seq, &payload));
        buf.extend_from_slice(&payload);
        buf.resize(total as usize, 0);
        self.device.write(self.end, &buf)?;
        self.device.sync_data(false)?;
        self.end += total;
        self.next_seq += 1;
        Ok(Some(seq))
    }

    /// Starts the log over at its first record: call it only once every record in it is
    /// durable elsewhere. Nothing is written: the next record overwrites the first, and the
    /// older ones after it end the log by their lower sequence numbers.
    pub fn rewind(&mut self) {
        self.end = PAGE;
    }

    /// The highest sequence number used so far (0: none).
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// The bytes in use (header page included).
    #[must_use]
    pub fn used(&self) -> u64 {
        self.end
    }
}

/// A log file on disk, written in place (no `set_len`: the file is preallocated with zeros, so
/// `fdatasync` has no metadata to write).
#[derive(Debug)]
pub struct LogFile(pub std::fs::File);

impl StorageBackend for LogFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        read_exact_at(&self.0, &mut buf, offset)?;
        Ok(buf)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self, _eventual: bool) -> std::io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        write_all_at(&self.0, data, offset)
    }
}

#[cfg(unix)]
fn read_exact_at(f: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
}

#[cfg(unix)]
fn write_all_at(f: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, data, offset)
}

#[cfg(not(unix))]
fn read_exact_at(mut f: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

#[cfg(not(unix))]
fn write_all_at(mut f: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)
}

/// Creates the log file at `path` (whole or not at all: written to a temporary file, synced,
/// renamed, the directory synced).
pub fn create_file(path: &std::path::Path, capacity: u64) -> Result<(), StoreError> {
    use std::io::Write;
    let tmp = path.with_extension("safetylog-tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&new_file_bytes(capacity)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A log device holding a new log (for tests and custom backends): writes a new log into an
/// empty `device`. A device that is not empty is left as it is.
pub fn format_device(device: &dyn StorageBackend, capacity: u64) -> Result<(), StoreError> {
    if device.len()? == 0 {
        device.write(0, &new_file_bytes(capacity)?)?;
        device.sync_data(false)?;
    }
    Ok(())
}

/// Is `a` older than `b` by the core's ordering (views and votes never move backwards)?
#[must_use]
pub fn older(a: &SafetyState, b: &SafetyState) -> bool {
    let key = |s: &SafetyState| {
        (s.view, s.highest_voted_view, s.last_proposed_view, s.locked_qc.view, s.high_qc.view)
    };
    key(a) < key(b)
}
