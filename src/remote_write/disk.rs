//! The durable per-destination queue: a segment log on disk.
//!
//! # Format
//! A queue directory holds segment files named by a 20-digit, zero-padded,
//! increasing number (`00000000000000000001.seg`), one `ack` file and one
//! `lock` file. A segment starts with the 8 bytes `MRQSEG3\n` (the format
//! version is its seventh byte) and is a sequence of records:
//!
//! ```text
//! u32 LE  magic 0x5251524D ("MRQR"): where a record starts
//! u32 LE  payload length (n)
//! u32 LE  CRC-32 (IEEE) of the length's 4 bytes and the payload
//! n bytes payload = u64 LE seq | u32 LE samples | i64 LE oldest sample ms
//!                   | u8 codec | batch
//! ```
//!
//! where `batch` is a remote-write 1.0 `WriteRequest` compressed by the
//! storage codec the tag names (1 snappy, 2 zstd: see
//! [`crate::remote_write::codec`]); the sender transcodes it to the wire
//! format its destination speaks. Older segments are still read:
//! `MRQSEG2\n` segments (the same records without the codec byte, snappy),
//! and segments written before the magic existed (no file header, records
//! `u32 len | u32 CRC of the payload | payload`, snappy). A new segment is
//! always written in the current version; a record with an unknown codec
//! tag is damage (counted and skipped).
//! `ack` holds `u64 LE seq | u32 LE CRC-32 of those 8 bytes`: every record
//! with a sequence number up to `seq` was acknowledged (or given up on and
//! counted) and may be deleted. It is replaced atomically (write a temp file,
//! fsync it, rename over `ack`, fsync the directory).
//!
//! # Invariants
//! - One process at a time: `lock` is `flock`ed (exclusively, without
//!   waiting) for as long as the log is open; a second opener, in this process
//!   or another, gets [`DiskError::Locked`].
//! - Sequence numbers increase by one per record, across segments and restarts.
//! - A record is appended before it is sent; it is acknowledged only after the
//!   receiver answered 2xx (or it was dropped and counted); a segment is deleted
//!   once all its records are acknowledged and it is not the one written to.
//! - The bytes of all segment files stay within `max_size` (one record over
//!   at most, when a single record is larger than the budget): before an
//!   append that would pass it, whole segments are given up oldest first
//!   (their unacknowledged records counted, see [`SegmentLog::take_drops`]).
//!   Segments are sized to at most a sixteenth of the budget, so that costs
//!   at most a sixteenth of the queue at a time.
//!
//! # Recovery
//! On open every segment is scanned. A record whose CRC or length is wrong
//! is skipped: the scan resynchronises on the next record that starts with the
//! magic and reads back whole with a higher sequence number, and the damaged
//! records in between are counted (their number from the sequence gap, their
//! samples from the damaged headers where those still parse): only what is
//! damaged is lost. A bad region that runs to the end of the newest segment
//! is a torn write (the process died mid-append): the file is truncated
//! there. A missing or unreadable `ack` file means "nothing acknowledged":
//! records are re-sent (duplicates of identical samples are harmless to
//! Prometheus-compatible receivers); an `ack` behind the oldest segment is
//! simply ahead of nothing. A read that fails for a reason other than damage
//! (`EMFILE`, `EIO`) is an [`DiskError::Io`]: the caller retries it later.
//!
//! Appends are written with `write(2)` (they survive a crash of the process:
//! `kill -9`, OOM) and fsynced when a segment is closed, on [`SegmentLog::sync`]
//! and at shutdown; a power loss can lose what was appended since the last sync.
//! The ack file is written at most every five seconds (and on sync, shutdown
//! and drop; each write is a tmp file, fsync, rename and a directory fsync,
//! which at one a second was 2% of the agent's CPU): after a crash, batches
//! acknowledged in the last five seconds may be sent again. A receiver that
//! has them already keeps one copy (identical samples) or refuses them as out
//! of order, a 4xx that drops only that copy; nothing unacknowledged is ever
//! skipped.
//!
//! A full disk (`ENOSPC`): acknowledged data is given back first (the segment
//! being written is closed and deleted if it holds nothing unsent), then the
//! oldest unsent segments, counted under `disk_full`, and the append is tried
//! again; only if that cannot make room does the append fail.
//!
//! Layout: this file holds the format constants, appending and reading,
//! acknowledgement and deletion; `recover` opening and scanning, `space`
//! staying within the disk.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::codec::Codec;
use super::wire::Stored;

mod recover;
use recover::record_ok;
mod space;

/// First bytes of a segment in the current format (version 3).
const SEG_MAGIC: &[u8; 8] = b"MRQSEG3\n";
/// First bytes of a version 2 segment (records without a codec byte).
const SEG_MAGIC_V2: &[u8; 8] = b"MRQSEG2\n";
/// First bytes of every record in the current format ("MRQR").
const REC_MAGIC: u32 = 0x5251_524D;
/// Record header: magic, length, CRC.
const HEADER: usize = 12;
/// Record header of segments without [`SEG_MAGIC`]: length, CRC.
const HEADER_V1: usize = 8;
/// Record meta before the batch: seq, samples, oldest ms (versions 1, 2).
const META: usize = 8 + 4 + 8;
/// Record meta of version 3: [`META`] and the codec byte.
const META_V3: usize = META + 1;
/// The version of [`SEG_MAGIC`].
const VERSION: u8 = 3;
/// Records larger than this are treated as corruption (a batch is far smaller).
const MAX_RECORD: usize = 256 << 20;
/// Segment size bounds (see [`SegmentLog::open`]).
const MIN_SEGMENT: u64 = 64 << 10;

/// One record's place and summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
    /// Payload length (meta + batch).
    pub len: u32,
    pub samples: u32,
    pub oldest_ms: i64,
    /// When its oldest sample came to be on the monotonic clock
    /// ([`crate::clock::mono_born`]): its age against `queue.max_age`.
    pub born: i64,
    /// The record's stream (its target; see [`crate::remote_write::samples::EncodedSamples::stream`]),
    /// kept in memory only: 0 for a record found on disk at start-up.
    pub stream: u64,
    /// Header length: [`HEADER`], or [`HEADER_V1`] in an old segment.
    header: u8,
    /// Meta length: [`META_V3`], or [`META`] in an old segment.
    meta: u8,
    /// How the batch is compressed.
    pub codec: Codec,
}

impl RecordMeta {
    /// Bytes the record takes on disk.
    fn disk_len(&self) -> u64 {
        u64::from(self.header) + u64::from(self.len)
    }
}

/// What [`SegmentLog::open`] found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Recovery {
    pub records: usize,
    pub samples: u64,
    /// Torn tails truncated.
    pub torn: usize,
    /// Damaged regions skipped (the records inside them are lost).
    pub corrupt: usize,
    pub corrupt_bytes: u64,
    /// Unacknowledged records lost in damaged regions, and their samples (as
    /// far as the damaged headers still tell).
    pub lost_records: u64,
    pub lost_samples: u64,
}

/// Batches and samples given up on, by reason; see [`SegmentLog::take_drops`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Drops {
    /// To stay within `max_size`.
    pub max_size: (u64, u64),
    /// To make room on a full disk.
    pub disk_full: (u64, u64),
}

/// Errors of the segment log; each names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiskError {
    #[error("queue {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("queue record {seq} in {path} is corrupt (bad CRC or length)")]
    Corrupt { seq: u64, path: PathBuf },
    #[error(
        "queue directory {dir} is in use by another metrics-relay (its lock file is held); give each process, and each remote_write, a queue directory of its own"
    )]
    Locked { dir: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A segment file on disk.
#[derive(Debug, Clone, Copy)]
struct Segment {
    n: u64,
    size: u64,
    /// Format version (1: no magic, 2, 3): an older one is never
    /// appended to again.
    version: u8,
    /// Bytes after the segment header punched out (delivered records given
    /// back to a full disk; they read as zeros).
    punched: u64,
}

/// A segment the sender has drained is closed (and so deleted) once it
/// holds this much: delivered data never fills the disk, even when
/// `max_size` is larger than the disk.
const ROLL_DRAINED: u64 = 1 << 20;

/// See the module docs.
pub(crate) struct SegmentLog {
    dir: PathBuf,
    /// Held (flocked) while open.
    _lock: File,
    segment_size: u64,
    max_size: u64,
    index: VecDeque<RecordMeta>,
    /// Segments on disk, oldest first.
    segments: VecDeque<Segment>,
    /// Sum of the segments' sizes.
    disk_bytes: u64,
    active: Option<File>,
    acked: u64,
    /// The ack as last written to the ack file.
    persisted_ack: u64,
    last_persist: std::time::Instant,
    next_seq: u64,
    /// Bytes of unacknowledged records.
    pending_bytes: u64,
    /// Samples in unacknowledged records.
    pending_samples: u64,
    drops: Drops,
}

/// How often the ack file is rewritten at most.
const ACK_PERSIST_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

fn seg_name(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

fn sync_dir(dir: &Path) {
    // Best effort: some filesystems refuse to fsync a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn lock_dir(dir: &Path) -> Result<File, DiskError> {
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(DiskError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(DiskError::Io { path, source: e }),
    }
}

impl SegmentLog {
    /// Appends a sealed batch; returns its sequence number. May give up old
    /// segments first to stay within `max_size` or to make room on a full
    /// disk ([`SegmentLog::take_drops`] tells what).
    pub(crate) fn append(
        &mut self,
        batch: &[u8],
        codec: Codec,
        samples: u32,
        oldest_ms: i64,
        stream: u64,
    ) -> Result<u64, DiskError> {
        let seq = self.next_seq;
        let mut meta = [0u8; META_V3];
        meta[..8].copy_from_slice(&seq.to_le_bytes());
        meta[8..12].copy_from_slice(&samples.to_le_bytes());
        meta[12..20].copy_from_slice(&oldest_ms.to_le_bytes());
        meta[20] = codec.tag();
        let payload_len = META_V3 + batch.len();
        let len_bytes = (payload_len as u32).to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len_bytes);
        crc.update(&meta);
        crc.update(batch);
        let mut head = [0u8; HEADER + META_V3];
        head[..4].copy_from_slice(&REC_MAGIC.to_le_bytes());
        head[4..8].copy_from_slice(&len_bytes);
        head[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
        head[HEADER..].copy_from_slice(&meta);
        let rec_len = (head.len() + batch.len()) as u64;

        // Stay within the budget: give up whole segments, oldest first.
        while self.disk_bytes + rec_len + SEG_MAGIC.len() as u64 > self.max_size
            && !self.segments.is_empty()
        {
            self.give_up_oldest_segment(false);
        }
        let mut attempts = 0;
        let (n, offset) = loop {
            attempts += 1;
            let result = self.write_record(&head, batch);
            match result {
                Ok(place) => break place,
                Err(e)
                    if is_disk_full(&e)
                        && attempts < 64
                        && !self.segments.is_empty()
                        && self.free_for_space() =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        self.next_seq += 1;
        self.pending_bytes += rec_len;
        self.pending_samples += u64::from(samples);
        self.index.push_back(RecordMeta {
            seq,
            segment: n,
            offset,
            len: payload_len as u32,
            samples,
            oldest_ms,
            born: crate::clock::mono_born(oldest_ms),
            stream,
            header: HEADER as u8,
            meta: META_V3 as u8,
            codec,
        });
        Ok(seq)
    }

    /// Writes one record to the active segment (opening a new one when
    /// needed); returns (segment, offset). On failure nothing partial stays.
    fn write_record(&mut self, head: &[u8], batch: &[u8]) -> Result<(u64, u64), DiskError> {
        let need_new = match self.segments.back() {
            None => true,
            Some(s) => s.size >= self.segment_size || self.active.is_none() || s.version != VERSION,
        };
        if need_new {
            self.rotate()?;
        }
        let seg = *self.segments.back().ok_or_else(|| DiskError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("no active segment"),
        })?;
        let path = seg_name(&self.dir, seg.n);
        let f = self.active.as_mut().ok_or_else(|| DiskError::Io {
            path: path.clone(),
            source: std::io::Error::other("no active segment"),
        })?;
        // One (vectored) write per record: header and batch as they are.
        if let Err(e) = write_all_vectored(f, &mut [IoSlice::new(head), IoSlice::new(batch)]) {
            // Leave no partial record behind (disk full): cut back to the old
            // size, and start a fresh segment next time rather than trusting
            // this handle again.
            let _ = f.set_len(seg.size);
            let _ = f.seek(SeekFrom::Start(seg.size));
            self.close_active();
            return Err(DiskError::Io { path, source: e });
        }
        let written = (head.len() + batch.len()) as u64;
        if let Some(last) = self.segments.back_mut() {
            last.size += written;
        }
        self.disk_bytes += written;
        Ok((seg.n, seg.size))
    }

    /// The oldest unacknowledged record's summary.
    pub(crate) fn front(&self) -> Option<RecordMeta> {
        self.index.front().copied()
    }

    /// The unacknowledged record `seq`.
    pub(crate) fn get(&self, seq: u64) -> Option<RecordMeta> {
        self.index
            .binary_search_by_key(&seq, |m| m.seq)
            .ok()
            .map(|i| self.index[i])
    }

    /// Unacknowledged records, oldest first.
    pub(crate) fn records(&self) -> impl Iterator<Item = &RecordMeta> {
        self.index.iter()
    }

    /// Reads a record's batch back from disk, checking its CRC. An I/O
    /// error (too many open files, EIO) is [`DiskError::Io`] and worth
    /// retrying; damage is [`DiskError::Corrupt`].
    pub(crate) fn read(&self, m: &RecordMeta) -> Result<Stored, DiskError> {
        let path = seg_name(&self.dir, m.segment);
        let mut f = File::open(&path).map_err(io(&path))?;
        f.seek(SeekFrom::Start(m.offset)).map_err(io(&path))?;
        let h = usize::from(m.header);
        let mut buf = vec![0u8; h + m.len as usize];
        match f.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(DiskError::Corrupt { seq: m.seq, path });
            }
            Err(e) => return Err(DiskError::Io { path, source: e }),
        }
        if !record_ok(&buf, h) {
            return Err(DiskError::Corrupt { seq: m.seq, path });
        }
        let mut buf = Bytes::from(buf);
        Ok(Stored {
            codec: m.codec,
            data: buf.split_off(h + usize::from(m.meta)),
        })
    }

    /// Acknowledges every record up to and including `seq`, persists the ack
    /// and deletes segments that hold nothing unacknowledged.
    pub(crate) fn ack(&mut self, seq: u64) -> Result<(), DiskError> {
        if seq <= self.acked {
            return Ok(());
        }
        while self.index.front().is_some_and(|m| m.seq <= seq) {
            if let Some(m) = self.index.pop_front() {
                self.pending_bytes -= m.disk_len();
                self.pending_samples -= u64::from(m.samples);
            }
        }
        self.acked = seq;
        if self.last_persist.elapsed() >= ACK_PERSIST_EVERY {
            self.persist_ack()?;
        }
        // Drained: close the segment being written once it is sizeable, so
        // that it is deleted now rather than when it is full.
        if self.index.is_empty()
            && self
                .segments
                .back()
                .is_some_and(|s| s.size >= ROLL_DRAINED.min(self.segment_size))
        {
            // No fsync: it is deleted right below.
            self.active = None;
        }
        self.delete_acked_segments();
        Ok(())
    }

    /// Writes the ack file if it is behind.
    pub(crate) fn persist_ack(&mut self) -> Result<(), DiskError> {
        if self.acked > self.persisted_ack {
            write_ack(&self.dir, self.acked)?;
            self.persisted_ack = self.acked;
        }
        self.last_persist = std::time::Instant::now();
        Ok(())
    }

    fn delete_acked_segments(&mut self) {
        // A segment can go once no unacknowledged record lives in it and it
        // is not the one being written.
        let keep_last = self.active.is_some();
        while let Some(&seg) = self.segments.front() {
            if keep_last && self.segments.len() == 1 {
                break;
            }
            if self.index.front().is_some_and(|m| m.segment <= seg.n) {
                break;
            }
            let path = seg_name(&self.dir, seg.n);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %path.display(), error = %e, "queue: cannot delete an acknowledged segment");
                break;
            }
            self.segments.pop_front();
            self.disk_bytes -= seg.size - seg.punched;
        }
    }

    /// Flushes the active segment and the ack to stable storage.
    pub(crate) fn sync(&mut self) -> Result<(), DiskError> {
        if let Some(f) = &self.active {
            f.sync_data().map_err(io(&self.dir))?;
        }
        self.persist_ack()
    }

    /// Unacknowledged records.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Unacknowledged samples.
    pub(crate) fn samples(&self) -> u64 {
        self.pending_samples
    }

    /// Bytes of unacknowledged records on disk.
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    #[cfg(test)]
    /// Bytes of all segment files (what `max_size` bounds).
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Segment files on disk.
    pub(crate) fn segments(&self) -> usize {
        self.segments.len()
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        if let Err(e) = self.persist_ack() {
            tracing::warn!(error = %e, "queue: cannot write the ack file on close");
        }
    }
}

/// Fsyncs a closed segment on a thread of its own (one for the process,
/// taking files in order), so that the write-back of up to 16 MiB never
/// holds up a scrape or the sender; inline if that thread cannot start.
/// A crash of the process loses nothing either way (the data is in the page
/// cache); a power loss can lose what was not yet synced, as the module docs
/// say.
fn sync_in_background(f: File) {
    use std::sync::OnceLock;
    use std::sync::mpsc::Sender;
    static SYNCER: OnceLock<Option<Sender<File>>> = OnceLock::new();
    let tx = SYNCER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<File>();
        std::thread::Builder::new()
            .name("queue-fsync".into())
            .spawn(move || {
                for f in rx {
                    if let Err(e) = f.sync_all() {
                        tracing::warn!(error = %e, "queue: fsync of a closed segment failed");
                    }
                }
            })
            .ok()
            .map(|_| tx)
    });
    match tx {
        Some(tx) => {
            if let Err(std::sync::mpsc::SendError(f)) = tx.send(f) {
                let _ = f.sync_all();
            }
        }
        None => {
            let _ = f.sync_all();
        }
    }
}

fn is_disk_full(e: &DiskError) -> bool {
    matches!(e, DiskError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull
        || source.kind() == std::io::ErrorKind::QuotaExceeded)
}

fn write_ack(dir: &Path, seq: u64) -> Result<(), DiskError> {
    let tmp = dir.join("ack.tmp");
    let dst = dir.join("ack");
    let mut b = seq.to_le_bytes().to_vec();
    b.extend_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&b).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
    sync_dir(dir);
    Ok(())
}

/// `write_all` for several buffers (`Write::write_all_vectored` is not
/// stable yet).
fn write_all_vectored(f: &mut File, mut bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match f.write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::recover::{read_ack, scan};
    use super::*;

    fn open(dir: &Path) -> (SegmentLog, Recovery) {
        SegmentLog::open(dir, 1024, 1 << 30).unwrap()
    }

    fn batch(i: u64) -> Vec<u8> {
        format!("batch-{i}-{}", "x".repeat(300)).into_bytes()
    }

    fn drain(log: &mut SegmentLog) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(m) = log.front() {
            out.push(log.read(&m).unwrap().data.to_vec());
            log.ack(m.seq).unwrap();
        }
        out
    }

    #[test]
    fn append_read_ack_in_order_with_rotation() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = open(d.path());
        for i in 0..20 {
            log.append(&batch(i), Codec::Zstd, 10, i as i64, 0).unwrap();
        }
        assert!(log.segments() > 3, "rotated: {}", log.segments());
        assert_eq!(log.samples(), 200);
        let got = drain(&mut log);
        assert_eq!(got, (0..20).map(batch).collect::<Vec<_>>());
        assert_eq!(log.segments(), 1, "acknowledged segments deleted");
        assert_eq!(log.pending_bytes(), 0);
    }

    #[test]
    fn reopen_resumes_after_the_ack() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(d.path());
            for i in 0..10 {
                log.append(&batch(i), Codec::Zstd, 1, 0, 0).unwrap();
            }
            for _ in 0..4 {
                let m = log.front().unwrap();
                log.ack(m.seq).unwrap();
            }
        }
        let (mut log, rec) = open(d.path());
        assert_eq!(rec.records, 6);
        assert_eq!(drain(&mut log), (4..10).map(batch).collect::<Vec<_>>());
        // Sequence numbers continue after a restart.
        let seq = log.append(&batch(99), Codec::Zstd, 1, 0, 0).unwrap();
        assert_eq!(seq, 11);
    }

    #[test]
    fn torn_tail_is_truncated() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
            for i in 0..3 {
                log.append(&batch(i), Codec::Zstd, 1, 0, 0).unwrap();
            }
        }
        let seg = seg_name(d.path(), 1);
        let len = std::fs::metadata(&seg).unwrap().len();
        // Half a record more: the process died mid-append.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 1, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(f);
        let (mut log, rec) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!((rec.torn, rec.records), (1, 3));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
        // New appends after the repair read back fine.
        log.append(&batch(3), Codec::Zstd, 1, 0, 0).unwrap();
        assert_eq!(drain(&mut log), (0..4).map(batch).collect::<Vec<_>>());
    }

    #[test]
    fn bad_crc_in_the_middle_loses_only_the_damaged_record() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(d.path());
            for i in 0..12 {
                log.append(&batch(i), Codec::Zstd, 7, 0, 0).unwrap();
            }
        }
        // Flip a byte inside the second record of segment 1 (a closed one).
        let seg = seg_name(d.path(), 1);
        let mut data = std::fs::read(&seg).unwrap();
        let metas = scan(1, &data, 0).records;
        assert!(metas.len() >= 3);
        let at = metas[1].offset as usize + HEADER + META + 5;
        data[at] ^= 0xff;
        std::fs::write(&seg, &data).unwrap();
        let (mut log, rec) = open(d.path());
        assert_eq!((rec.corrupt, rec.torn), (1, 0));
        assert_eq!((rec.lost_records, rec.lost_samples), (1, 7));
        let got = drain(&mut log);
        let want: Vec<_> = (0..12).filter(|&i| i != 1).map(batch).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn flipped_bytes_in_the_newest_segment_are_skipped_not_truncated() {
        // The case of issue 12: four bytes flipped mid-segment in the segment
        // being written cost half the queue (it was taken for a torn tail).
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
            for i in 0..20 {
                log.append(&batch(i), Codec::Zstd, 55, 0, 0).unwrap();
            }
        }
        let seg = seg_name(d.path(), 1);
        let mut data = std::fs::read(&seg).unwrap();
        let metas = scan(1, &data, 0).records;
        // Across the header of record 10: magic, length and CRC all hit.
        let at = metas[10].offset as usize + 2;
        for b in &mut data[at..at + 4] {
            *b ^= 0x5a;
        }
        std::fs::write(&seg, &data).unwrap();
        let (mut log, rec) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!(
            (rec.torn, rec.corrupt, rec.lost_records),
            (0, 1, 1),
            "{rec:?}"
        );
        assert_eq!(rec.records, 19);
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            data.len() as u64,
            "not truncated"
        );
        let got = drain(&mut log);
        assert_eq!(
            got,
            (0..20).filter(|&i| i != 10).map(batch).collect::<Vec<_>>()
        );
    }

    #[test]
    fn damage_across_several_records_counts_each() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
            for i in 0..10 {
                log.append(&batch(i), Codec::Zstd, 3, 0, 0).unwrap();
            }
        }
        let seg = seg_name(d.path(), 1);
        let mut data = std::fs::read(&seg).unwrap();
        let metas = scan(1, &data, 0).records;
        // Zero records 3, 4 and 5 whole: no header tells anything there.
        let (from, to) = (metas[3].offset as usize, metas[6].offset as usize);
        data[from..to].fill(0);
        std::fs::write(&seg, &data).unwrap();
        let (mut log, rec) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!(rec.lost_records, 3, "from the sequence gap: {rec:?}");
        assert_eq!(drain(&mut log).len(), 7);
    }

    #[test]
    fn segments_of_the_old_format_are_still_read() {
        let d = tempfile::tempdir().unwrap();
        // A v1 segment: `len | crc(payload) | payload`, no file header.
        let mut v1 = Vec::new();
        for seq in 1..=3u64 {
            let mut payload = seq.to_le_bytes().to_vec();
            payload.extend_from_slice(&2u32.to_le_bytes());
            payload.extend_from_slice(&0i64.to_le_bytes());
            payload.extend_from_slice(&batch(seq));
            v1.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            v1.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            v1.extend_from_slice(&payload);
        }
        std::fs::write(seg_name(d.path(), 1), &v1).unwrap();
        let (mut log, rec) = open(d.path());
        assert_eq!((rec.records, rec.samples), (3, 6));
        // New records go to a new segment in the new format.
        assert_eq!(log.append(&batch(4), Codec::Zstd, 1, 0, 0).unwrap(), 4);
        assert_eq!(drain(&mut log), (1..=4).map(batch).collect::<Vec<_>>());
    }

    #[test]
    fn version_2_segments_are_read_as_snappy_beside_version_3_ones() {
        let d = tempfile::tempdir().unwrap();
        // A version 2 segment: the magic, then `MRQR | len | crc | payload`
        // records whose payload has no codec byte.
        let mut v2 = SEG_MAGIC_V2.to_vec();
        for seq in 1..=2u64 {
            let mut payload = seq.to_le_bytes().to_vec();
            payload.extend_from_slice(&5u32.to_le_bytes());
            payload.extend_from_slice(&0i64.to_le_bytes());
            payload.extend_from_slice(&batch(seq));
            let len = (payload.len() as u32).to_le_bytes();
            let mut crc = crc32fast::Hasher::new();
            crc.update(&len);
            crc.update(&payload);
            v2.extend_from_slice(&REC_MAGIC.to_le_bytes());
            v2.extend_from_slice(&len);
            v2.extend_from_slice(&crc.finalize().to_le_bytes());
            v2.extend_from_slice(&payload);
        }
        std::fs::write(seg_name(d.path(), 1), &v2).unwrap();
        let (mut log, rec) = open(d.path());
        assert_eq!((rec.records, rec.samples, rec.corrupt), (2, 10, 0));
        assert_eq!(log.append(&batch(3), Codec::Zstd, 1, 0, 0).unwrap(), 3);
        assert_eq!(log.segments(), 2, "appended to a new version 3 segment");
        let codecs: Vec<Codec> = log.records().map(|m| m.codec).collect();
        assert_eq!(codecs, [Codec::Snappy, Codec::Snappy, Codec::Zstd]);
        drop(log);
        // Reopened, each record keeps its codec.
        let (mut log, _) = open(d.path());
        let codecs: Vec<Codec> = log.records().map(|m| m.codec).collect();
        assert_eq!(codecs, [Codec::Snappy, Codec::Snappy, Codec::Zstd]);
        assert_eq!(drain(&mut log), (1..=3).map(batch).collect::<Vec<_>>());
    }

    #[test]
    fn a_record_with_an_unknown_codec_is_damage() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(d.path());
            for i in 0..3 {
                log.append(&batch(i), Codec::Zstd, 4, 0, 0).unwrap();
            }
        }
        // Rewrite record 2's codec byte to 9, with a CRC that matches: a
        // record from a future version this one cannot read.
        let seg = seg_name(d.path(), 1);
        let mut data = std::fs::read(&seg).unwrap();
        let metas = super::recover::scan(1, &data, 0).records;
        let at = metas[1].offset as usize;
        let len = metas[1].len as usize;
        data[at + HEADER + META] = 9;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&data[at + 4..at + 8]);
        crc.update(&data[at + HEADER..at + HEADER + len]);
        data[at + 8..at + 12].copy_from_slice(&crc.finalize().to_le_bytes());
        std::fs::write(&seg, &data).unwrap();
        let (mut log, rec) = open(d.path());
        assert_eq!((rec.corrupt, rec.lost_records), (1, 1), "{rec:?}");
        assert_eq!(drain(&mut log), vec![batch(0), batch(2)]);
    }

    #[test]
    fn a_queue_directory_is_locked_while_open() {
        let d = tempfile::tempdir().unwrap();
        let (log, _) = open(d.path());
        match SegmentLog::open(d.path(), 1024, 1 << 30) {
            Err(e @ DiskError::Locked { .. }) => {
                assert!(
                    e.to_string().contains("in use by another metrics-relay"),
                    "{e}"
                )
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened twice"),
        }
        drop(log);
        open(d.path());
    }

    #[test]
    fn max_size_bounds_the_bytes_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let max = 1u64 << 20;
        let (mut log, _) = SegmentLog::open(d.path(), 16 << 20, max).unwrap();
        let big = vec![7u8; 10_000];
        let (mut appended, mut dropped) = (0u64, 0u64);
        // Nothing acknowledged (a receiver that never answers): 5 MiB in.
        for i in 0..500 {
            log.append(&big, Codec::Zstd, 10, i, 0).unwrap();
            appended += 10;
            dropped += log.take_drops().max_size.1;
            let on_disk: u64 = std::fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert!(on_disk <= max + 64, "{on_disk} bytes on disk at append {i}");
            assert_eq!(on_disk, log.disk_bytes(), "accounting");
        }
        assert!(dropped > 0);
        assert_eq!(
            appended,
            dropped + log.samples(),
            "every sample sent or counted"
        );
        // The oldest went first: what is left is the newest, in order.
        let left: Vec<i64> = log.records().map(|m| m.oldest_ms).collect();
        assert_eq!(*left.last().unwrap(), 499);
        assert!(left.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn delivered_records_are_punched_out_and_recovery_reads_past_the_hole() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = SegmentLog::open(d.path(), 16 << 20, 1 << 30).unwrap();
            for i in 0..10 {
                log.append(&batch(i), Codec::Zstd, 2, 0, 0).unwrap();
            }
            // Six delivered, four not: the segment cannot be deleted.
            let sixth = log.records().nth(5).unwrap().seq;
            log.ack(sixth).unwrap();
            let before = log.disk_bytes();
            assert!(log.punch_delivered(), "tmpfs and ext4 punch holes");
            assert!(log.disk_bytes() < before);
            assert!(!log.punch_delivered(), "nothing more to punch");
            assert_eq!(drain(&mut log).len(), 4, "the unsent records still read");
            // A crash before the ack file is written: reopen sees the hole.
        }
        let seg = seg_name(d.path(), 1);
        let data = std::fs::read(&seg).unwrap();
        assert!(data[8..100].iter().all(|&c| c == 0), "punched");
        let (_, rec) = SegmentLog::open(d.path(), 16 << 20, 1 << 30).unwrap();
        assert_eq!(
            (rec.corrupt, rec.lost_records, rec.torn),
            (0, 0, 0),
            "a hole is not damage: {rec:?}"
        );
    }

    #[test]
    fn acknowledged_records_do_not_pile_up() {
        let d = tempfile::tempdir().unwrap();
        let max = 1u64 << 20;
        let (mut log, _) = SegmentLog::open(d.path(), 16 << 20, max).unwrap();
        let big = vec![7u8; 10_000];
        for i in 0..500 {
            let seq = log.append(&big, Codec::Zstd, 10, i, 0).unwrap();
            log.ack(seq).unwrap();
            assert!(
                log.disk_bytes() <= max / 16 + 20_000,
                "{}",
                log.disk_bytes()
            );
        }
        assert_eq!(
            log.take_drops(),
            Drops::default(),
            "nothing unsent was dropped"
        );
    }

    #[test]
    fn lost_or_corrupt_ack_file_resends_everything() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
            for i in 0..3 {
                log.append(&batch(i), Codec::Zstd, 1, 0, 0).unwrap();
            }
            let m = log.front().unwrap();
            log.ack(m.seq).unwrap();
        }
        std::fs::write(d.path().join("ack"), b"garbage").unwrap();
        let (mut log, rec) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!(rec.records, 3, "duplicates over loss");
        assert_eq!(drain(&mut log).len(), 3);
        drop(log);
        std::fs::remove_file(d.path().join("ack")).unwrap();
        let (log, _) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!(
            log.len(),
            0,
            "acknowledged segments were deleted, so nothing comes back"
        );
    }

    #[test]
    fn ack_file_is_written_lazily_but_never_lost_on_close() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
            for i in 0..3 {
                log.append(&batch(i), Codec::Zstd, 1, 0, 0).unwrap();
            }
            let m = log.front().unwrap();
            log.ack(m.seq).unwrap();
            // Within five seconds: not yet on disk (a crash now resends batch 0).
            assert_eq!(read_ack(&d.path().join("ack")), None);
        } // closing writes it
        assert_eq!(read_ack(&d.path().join("ack")), Some(1));
        let (mut log, _) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
        assert_eq!(drain(&mut log), vec![batch(1), batch(2)]);
    }

    #[test]
    fn stale_ack_ahead_of_everything_is_harmless() {
        let d = tempfile::tempdir().unwrap();
        write_ack(d.path(), 500).unwrap();
        let (mut log, _) = open(d.path());
        assert!(log.is_empty());
        let seq = log.append(&batch(1), Codec::Zstd, 1, 0, 0).unwrap();
        assert_eq!(seq, 501);
        assert_eq!(drain(&mut log), vec![batch(1)]);
    }

    #[test]
    fn a_full_disk_fails_appends_and_recovers() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = open(d.path());
        // The next segment file lands on /dev/full: writes fail with ENOSPC.
        let next = log.segments.back().map_or(1, |s| s.n + 1);
        std::os::unix::fs::symlink("/dev/full", seg_name(d.path(), next)).unwrap();
        let e = log.append(&batch(0), Codec::Zstd, 1, 0, 0).unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        // The failed segment is abandoned; the next append starts a real one.
        log.append(&batch(1), Codec::Zstd, 1, 0, 0).unwrap();
        log.append(&batch(2), Codec::Zstd, 1, 0, 0).unwrap();
        assert_eq!(drain(&mut log), vec![batch(1), batch(2)]);
        assert!(
            std::fs::symlink_metadata(seg_name(d.path(), next))
                .unwrap()
                .file_type()
                .is_file(),
            "the abandoned segment was removed and its name used for a real one"
        );
    }

    #[test]
    fn read_detects_corruption_after_open() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
        log.append(&batch(0), Codec::Zstd, 1, 0, 0).unwrap();
        let m = log.front().unwrap();
        let seg = seg_name(d.path(), 1);
        let mut data = std::fs::read(&seg).unwrap();
        let n = data.len();
        data[n - 1] ^= 1;
        std::fs::write(&seg, &data).unwrap();
        assert!(matches!(log.read(&m), Err(DiskError::Corrupt { .. })));
    }
}
