//! The durable per-destination queue: a segment log on disk.
//!
//! # Format
//! A queue directory holds segment files named by a 20-digit, zero-padded,
//! increasing number (`00000000000000000001.seg`) and one `ack` file.
//! A segment is a sequence of records:
//!
//! ```text
//! u32 LE  payload length (n)
//! u32 LE  CRC-32 (IEEE) of the payload
//! n bytes payload = u64 LE seq | u32 LE samples | i64 LE oldest sample ms | batch
//! ```
//!
//! where `batch` is a sealed, snappy-compressed remote-write request, ready to
//! send as is. `ack` holds `u64 LE seq | u32 LE CRC-32 of those 8 bytes`: every
//! record with a sequence number up to `seq` was acknowledged (or given up on
//! and counted) and may be deleted. It is replaced atomically (write a temp
//! file, fsync it, rename over `ack`, fsync the directory).
//!
//! # Invariants
//! - Sequence numbers increase by one per record, across segments and restarts.
//! - A record is appended before it is sent; it is acknowledged only after the
//!   receiver answered 2xx (or it was dropped and counted); a segment is deleted
//!   only when all its records are acknowledged and it is not the one written to.
//!
//! # Recovery
//! On open every segment is scanned. A short or bad-CRC record at the end of
//! the last segment is a torn write (the process died mid-append): the file is
//! truncated there, with a warning and a counter. A bad record inside an older
//! segment makes the rest of that segment unreadable (there is no resync
//! marker); it is skipped and counted, and the next segment is read as usual, so
//! a corrupt segment never stops start-up and never costs the healthy part of
//! the queue. A missing or unreadable `ack` file means "nothing acknowledged":
//! records are re-sent (duplicates of identical samples are harmless to
//! Prometheus-compatible receivers); an `ack` behind the oldest segment is
//! simply ahead of nothing.
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

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

const HEADER: usize = 8;
const META: usize = 8 + 4 + 8;
/// Records larger than this are treated as corruption (a batch is far smaller).
const MAX_RECORD: usize = 256 << 20;

/// One record's place and summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
    /// Payload length (meta + batch).
    pub len: u32,
    pub samples: u32,
    pub oldest_ms: i64,
}

/// What [`SegmentLog::open`] found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub records: usize,
    pub samples: u64,
    /// Torn tails truncated.
    pub torn: usize,
    /// Corrupt regions skipped (records inside them are lost).
    pub corrupt: usize,
    pub corrupt_bytes: u64,
}

/// Errors of the segment log; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("queue {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("queue record {seq} in {path} is corrupt (bad CRC or length)")]
    Corrupt { seq: u64, path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// See the module docs.
pub struct SegmentLog {
    dir: PathBuf,
    segment_size: u64,
    index: VecDeque<RecordMeta>,
    /// Segments on disk, oldest first, with their sizes.
    segments: VecDeque<(u64, u64)>,
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

impl SegmentLog {
    /// Opens (creating if needed) the queue in `dir`, repairing as described
    /// in the module docs.
    pub fn open(dir: &Path, segment_size: u64) -> Result<(SegmentLog, Recovery), DiskError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        numbers.sort_unstable();
        let acked = read_ack(&dir.join("ack")).unwrap_or(0);
        let mut rec = Recovery::default();
        let mut index = VecDeque::new();
        let mut segments = VecDeque::new();
        let last = numbers.last().copied();
        for n in numbers {
            let path = seg_name(dir, n);
            let data = std::fs::read(&path).map_err(io(&path))?;
            let (metas, good_len) = scan(n, &data);
            if good_len < data.len() {
                if Some(n) == last {
                    tracing::warn!(file = %path.display(), kept = good_len, dropped = data.len() - good_len, "queue: torn tail truncated");
                    rec.torn += 1;
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io(&path))?;
                    f.set_len(good_len as u64).map_err(io(&path))?;
                    f.sync_all().map_err(io(&path))?;
                } else {
                    tracing::warn!(file = %path.display(), kept = good_len, lost = data.len() - good_len, "queue: corrupt record inside a segment; the rest of this segment is skipped");
                    rec.corrupt += 1;
                    rec.corrupt_bytes += (data.len() - good_len) as u64;
                }
            }
            for m in metas {
                // Sequence numbers must increase; anything else is corruption.
                if index.back().is_some_and(|b: &RecordMeta| m.seq <= b.seq) {
                    rec.corrupt += 1;
                    continue;
                }
                if m.seq > acked {
                    rec.records += 1;
                    rec.samples += u64::from(m.samples);
                }
                index.push_back(m);
            }
            segments.push_back((n, good_len as u64));
        }
        let next_seq = index.back().map_or(acked, |m| m.seq.max(acked)) + 1;
        let mut log = SegmentLog {
            dir: dir.to_path_buf(),
            segment_size: segment_size.max(1024),
            index,
            segments,
            active: None,
            acked,
            persisted_ack: acked,
            last_persist: std::time::Instant::now(),
            next_seq,
            pending_bytes: 0,
            pending_samples: 0,
        };
        log.index.retain(|m| m.seq > acked);
        log.pending_bytes = log
            .index
            .iter()
            .map(|m| u64::from(m.len) + HEADER as u64)
            .sum();
        log.pending_samples = log.index.iter().map(|m| u64::from(m.samples)).sum();
        log.delete_acked_segments();
        Ok((log, rec))
    }

    /// Appends a sealed batch; returns its sequence number.
    pub fn append(&mut self, batch: &[u8], samples: u32, oldest_ms: i64) -> Result<u64, DiskError> {
        let seq = self.next_seq;
        let mut meta = [0u8; META];
        meta[..8].copy_from_slice(&seq.to_le_bytes());
        meta[8..12].copy_from_slice(&samples.to_le_bytes());
        meta[12..].copy_from_slice(&oldest_ms.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&meta);
        crc.update(batch);
        let payload_len = META + batch.len();
        let need_new = match self.segments.back() {
            None => true,
            Some((_, size)) => *size >= self.segment_size || self.active.is_none(),
        };
        if need_new {
            self.rotate()?;
        }
        let (n, size) = *self.segments.back().ok_or_else(|| DiskError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("no active segment"),
        })?;
        let path = seg_name(&self.dir, n);
        let f = self.active.as_mut().ok_or_else(|| DiskError::Io {
            path: path.clone(),
            source: std::io::Error::other("no active segment"),
        })?;
        // One (vectored) write per record: header and batch as they are.
        let mut head = [0u8; HEADER + META];
        head[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        head[HEADER..].copy_from_slice(&meta);
        let rec_len = head.len() + batch.len();
        if let Err(e) = write_all_vectored(f, &mut [IoSlice::new(&head), IoSlice::new(batch)]) {
            // Leave no partial record behind (disk full): cut back to the old
            // size, and start a fresh segment next time rather than trusting
            // this handle again.
            let _ = f.set_len(size);
            let _ = f.seek(SeekFrom::Start(size));
            if let Some(f) = self.active.take() {
                let _ = f.sync_all();
            }
            return Err(DiskError::Io { path, source: e });
        }
        self.next_seq += 1;
        if let Some(last) = self.segments.back_mut() {
            last.1 += rec_len as u64;
        }
        self.pending_bytes += rec_len as u64;
        self.pending_samples += u64::from(samples);
        self.index.push_back(RecordMeta {
            seq,
            segment: n,
            offset: size,
            len: payload_len as u32,
            samples,
            oldest_ms,
        });
        Ok(seq)
    }

    fn rotate(&mut self) -> Result<(), DiskError> {
        if let Some(f) = self.active.take() {
            let _ = f.sync_all();
        }
        let n = self.segments.back().map_or(1, |(n, _)| n + 1);
        let path = seg_name(&self.dir, n);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        sync_dir(&self.dir);
        self.segments.push_back((n, 0));
        self.active = Some(f);
        Ok(())
    }

    /// The oldest unacknowledged record's summary.
    pub fn front(&self) -> Option<RecordMeta> {
        self.index.front().copied()
    }

    /// Unacknowledged records, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &RecordMeta> {
        self.index.iter()
    }

    /// Reads a record's batch back from disk, checking its CRC.
    pub fn read(&self, m: &RecordMeta) -> Result<Bytes, DiskError> {
        let path = seg_name(&self.dir, m.segment);
        let mut f = File::open(&path).map_err(io(&path))?;
        f.seek(SeekFrom::Start(m.offset)).map_err(io(&path))?;
        let mut buf = vec![0u8; HEADER + m.len as usize];
        f.read_exact(&mut buf).map_err(io(&path))?;
        let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let payload = &buf[HEADER..];
        if crc32fast::hash(payload) != crc {
            return Err(DiskError::Corrupt { seq: m.seq, path });
        }
        Ok(Bytes::copy_from_slice(&payload[META..]))
    }

    /// Acknowledges every record up to and including `seq`, persists the ack
    /// and deletes segments that hold nothing unacknowledged.
    pub fn ack(&mut self, seq: u64) -> Result<(), DiskError> {
        if seq <= self.acked {
            return Ok(());
        }
        while self.index.front().is_some_and(|m| m.seq <= seq) {
            if let Some(m) = self.index.pop_front() {
                self.pending_bytes -= u64::from(m.len) + HEADER as u64;
                self.pending_samples -= u64::from(m.samples);
            }
        }
        self.acked = seq;
        if self.last_persist.elapsed() >= ACK_PERSIST_EVERY {
            self.persist_ack()?;
        }
        self.delete_acked_segments();
        Ok(())
    }

    /// Writes the ack file if it is behind.
    pub fn persist_ack(&mut self) -> Result<(), DiskError> {
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
        while let Some(&(n, _)) = self.segments.front() {
            if keep_last && self.segments.len() == 1 {
                break;
            }
            if self.index.front().is_some_and(|m| m.segment <= n) {
                break;
            }
            let path = seg_name(&self.dir, n);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "queue: cannot delete an acknowledged segment");
                    break;
                }
            }
            self.segments.pop_front();
        }
    }

    /// Flushes the active segment and the ack to stable storage.
    pub fn sync(&mut self) -> Result<(), DiskError> {
        if let Some(f) = &self.active {
            f.sync_data().map_err(io(&self.dir))?;
        }
        self.persist_ack()
    }

    /// Unacknowledged records.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Unacknowledged samples.
    pub fn samples(&self) -> u64 {
        self.pending_samples
    }

    /// Bytes of unacknowledged records on disk.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Segment files on disk.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        if let Err(e) = self.persist_ack() {
            tracing::warn!(error = %e, "queue: cannot write the ack file on close");
        }
    }
}

/// Scans a segment: the records that read back whole, and where they end.
fn scan(segment: u64, data: &[u8]) -> (Vec<RecordMeta>, usize) {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + HEADER <= data.len() {
        let len =
            u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        let crc = u32::from_le_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]]);
        if !(META..=MAX_RECORD).contains(&len) || off + HEADER + len > data.len() {
            break;
        }
        let payload = &data[off + HEADER..off + HEADER + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let seq = u64::from_le_bytes(payload[0..8].try_into().unwrap_or_default());
        let samples = u32::from_le_bytes(payload[8..12].try_into().unwrap_or_default());
        let oldest_ms = i64::from_le_bytes(payload[12..20].try_into().unwrap_or_default());
        out.push(RecordMeta {
            seq,
            segment,
            offset: off as u64,
            len: len as u32,
            samples,
            oldest_ms,
        });
        off += HEADER + len;
    }
    (out, off)
}

fn read_ack(path: &Path) -> Option<u64> {
    let b = std::fs::read(path).ok()?;
    if b.len() != 12 {
        tracing::warn!(file = %path.display(), "queue: ack file has the wrong size; resending from the oldest record");
        return None;
    }
    let crc = u32::from_le_bytes(b[8..12].try_into().ok()?);
    if crc32fast::hash(&b[..8]) != crc {
        tracing::warn!(file = %path.display(), "queue: ack file is corrupt; resending from the oldest record");
        return None;
    }
    Some(u64::from_le_bytes(b[..8].try_into().ok()?))
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
    use super::*;

    fn open(dir: &Path) -> (SegmentLog, Recovery) {
        SegmentLog::open(dir, 1024).unwrap()
    }

    fn batch(i: u64) -> Vec<u8> {
        format!("batch-{i}-{}", "x".repeat(300)).into_bytes()
    }

    fn drain(log: &mut SegmentLog) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(m) = log.front() {
            out.push(log.read(&m).unwrap().to_vec());
            log.ack(m.seq).unwrap();
        }
        out
    }

    #[test]
    fn append_read_ack_in_order_with_rotation() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = open(d.path());
        for i in 0..20 {
            log.append(&batch(i), 10, i as i64).unwrap();
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
                log.append(&batch(i), 1, 0).unwrap();
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
        let seq = log.append(&batch(99), 1, 0).unwrap();
        assert_eq!(seq, 11);
    }

    #[test]
    fn torn_tail_is_truncated() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = SegmentLog::open(d.path(), 1 << 20).unwrap();
            for i in 0..3 {
                log.append(&batch(i), 1, 0).unwrap();
            }
        }
        let seg = seg_name(d.path(), 1);
        let len = std::fs::metadata(&seg).unwrap().len();
        // Half a record more: the process died mid-append.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 1, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(f);
        let (mut log, rec) = SegmentLog::open(d.path(), 1 << 20).unwrap();
        assert_eq!((rec.torn, rec.records), (1, 3));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
        // New appends after the repair read back fine.
        log.append(&batch(3), 1, 0).unwrap();
        assert_eq!(drain(&mut log), (0..4).map(batch).collect::<Vec<_>>());
    }

    #[test]
    fn bad_crc_in_the_middle_keeps_the_healthy_rest() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(d.path());
            for i in 0..12 {
                log.append(&batch(i), 1, 0).unwrap();
            }
        }
        // Flip a byte inside the second record of segment 1.
        let seg = seg_name(d.path(), 1);
        let mut data = std::fs::read(&seg).unwrap();
        let (metas, _) = scan(1, &data);
        assert!(metas.len() >= 2);
        let at = metas[1].offset as usize + HEADER + META + 5;
        data[at] ^= 0xff;
        std::fs::write(&seg, &data).unwrap();
        let (mut log, rec) = open(d.path());
        assert_eq!(rec.corrupt, 1);
        let got = drain(&mut log);
        // Record 0 survives, the rest of segment 1 is lost, later segments are whole.
        assert_eq!(got[0], batch(0));
        let lost = metas.len() - 1;
        assert_eq!(got.len(), 12 - lost);
        assert_eq!(got.last().unwrap(), &batch(11));
    }

    #[test]
    fn lost_or_corrupt_ack_file_resends_everything() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = SegmentLog::open(d.path(), 1 << 20).unwrap();
            for i in 0..3 {
                log.append(&batch(i), 1, 0).unwrap();
            }
            let m = log.front().unwrap();
            log.ack(m.seq).unwrap();
        }
        std::fs::write(d.path().join("ack"), b"garbage").unwrap();
        let (mut log, rec) = SegmentLog::open(d.path(), 1 << 20).unwrap();
        assert_eq!(rec.records, 3, "duplicates over loss");
        assert_eq!(drain(&mut log).len(), 3);
        std::fs::remove_file(d.path().join("ack")).unwrap();
        let (log, _) = SegmentLog::open(d.path(), 1 << 20).unwrap();
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
            let (mut log, _) = SegmentLog::open(d.path(), 1 << 20).unwrap();
            for i in 0..3 {
                log.append(&batch(i), 1, 0).unwrap();
            }
            let m = log.front().unwrap();
            log.ack(m.seq).unwrap();
            // Within five seconds: not yet on disk (a crash now resends batch 0).
            assert_eq!(read_ack(&d.path().join("ack")), None);
        } // closing writes it
        assert_eq!(read_ack(&d.path().join("ack")), Some(1));
        let (mut log, _) = SegmentLog::open(d.path(), 1 << 20).unwrap();
        assert_eq!(drain(&mut log), vec![batch(1), batch(2)]);
    }

    #[test]
    fn stale_ack_ahead_of_everything_is_harmless() {
        let d = tempfile::tempdir().unwrap();
        write_ack(d.path(), 500).unwrap();
        let (mut log, _) = open(d.path());
        assert!(log.is_empty());
        let seq = log.append(&batch(1), 1, 0).unwrap();
        assert_eq!(seq, 501);
        assert_eq!(drain(&mut log), vec![batch(1)]);
    }

    #[test]
    fn a_full_disk_fails_appends_and_recovers() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = open(d.path());
        // The next segment file lands on /dev/full: writes fail with ENOSPC.
        let next = log.segments.back().map_or(1, |s| s.0 + 1);
        std::os::unix::fs::symlink("/dev/full", seg_name(d.path(), next)).unwrap();
        let e = log.append(&batch(0), 1, 0).unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        // The failed segment is abandoned; the next append starts a real one.
        log.append(&batch(1), 1, 0).unwrap();
        log.append(&batch(2), 1, 0).unwrap();
        assert_eq!(drain(&mut log), vec![batch(1), batch(2)]);
        assert!(
            std::fs::symlink_metadata(seg_name(d.path(), next)).is_err(),
            "abandoned segment cleaned up"
        );
    }

    #[test]
    fn read_detects_corruption_after_open() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(d.path(), 1 << 20).unwrap();
        log.append(&batch(0), 1, 0).unwrap();
        let m = log.front().unwrap();
        let seg = seg_name(d.path(), 1);
        let mut data = std::fs::read(&seg).unwrap();
        let n = data.len();
        data[n - 1] ^= 1;
        std::fs::write(&seg, &data).unwrap();
        assert!(matches!(log.read(&m), Err(DiskError::Corrupt { .. })));
    }
}
