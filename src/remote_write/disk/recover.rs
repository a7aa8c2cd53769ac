//! Opening a segment log: locking the directory, scanning every segment's
//! records (checking magic, length and CRC), resyncing past damage, cutting
//! a torn tail, and skipping what the acknowledgement file says was sent.

use super::*;

impl SegmentLog {
    /// Opens (creating if needed) the queue in `dir`, locks it and repairs it
    /// as described in the module docs. Segments are closed at
    /// `segment_size`, or at a sixteenth of `max_size` if that is smaller
    /// (64 KiB at least).
    pub(crate) fn open(
        dir: &Path,
        segment_size: u64,
        max_size: u64,
    ) -> Result<(SegmentLog, Recovery), DiskError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = lock_dir(dir)?;
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
        let mut index: VecDeque<RecordMeta> = VecDeque::new();
        let mut segments = VecDeque::new();
        let last = numbers.last().copied();
        for n in numbers {
            let path = seg_name(dir, n);
            let data = std::fs::read(&path).map_err(io(&path))?;
            let after = index.back().map_or(0, |m| m.seq);
            let scanned = scan(n, &data, after);
            let mut size = data.len() as u64;
            for region in &scanned.damaged {
                // Delivered records punched out on a full disk: not damage.
                if region.zeros && region.last_seq.is_some_and(|s| s <= acked) {
                    continue;
                }
                rec.corrupt += 1;
                rec.corrupt_bytes += region.bytes;
                let lost = region.records.max(u64::from(region.bytes > 0));
                // Damaged records at or below the ack had been delivered.
                if region.last_seq.is_none_or(|s| s > acked) {
                    rec.lost_records += lost;
                    rec.lost_samples += region.samples;
                }
                tracing::warn!(file = %path.display(), offset = region.offset, bytes = region.bytes, records = lost, samples = region.samples, "queue: damaged records skipped; the scan resumed at the next intact record");
            }
            if let Some(tail) = scanned.bad_tail {
                let bad = data.len() as u64 - tail;
                if Some(n) == last {
                    tracing::warn!(file = %path.display(), kept = tail, dropped = bad, "queue: torn tail truncated");
                    rec.torn += 1;
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io(&path))?;
                    f.set_len(tail).map_err(io(&path))?;
                    f.sync_all().map_err(io(&path))?;
                    size = tail;
                } else {
                    tracing::warn!(file = %path.display(), kept = tail, lost = bad, "queue: the end of a closed segment is damaged; skipped");
                    rec.corrupt += 1;
                    rec.corrupt_bytes += bad;
                    rec.lost_records += 1;
                }
            }
            for m in scanned.records {
                // Sequence numbers must increase; anything else is corruption.
                if index.back().is_some_and(|b| m.seq <= b.seq) {
                    rec.corrupt += 1;
                    continue;
                }
                if m.seq > acked {
                    rec.records += 1;
                    rec.samples += u64::from(m.samples);
                }
                index.push_back(m);
            }
            segments.push_back(Segment {
                n,
                size,
                version: scanned.version,
                punched: 0,
            });
        }
        let next_seq = index.back().map_or(acked, |m| m.seq.max(acked)) + 1;
        let max_size = max_size.max(MIN_SEGMENT);
        let mut log = SegmentLog {
            dir: dir.to_path_buf(),
            _lock: lock,
            segment_size: segment_size.min((max_size / 16).max(MIN_SEGMENT)).max(1024),
            max_size,
            disk_bytes: segments.iter().map(|s| s.size).sum(),
            index,
            segments,
            active: None,
            acked,
            persisted_ack: acked,
            last_persist: std::time::Instant::now(),
            next_seq,
            pending_bytes: 0,
            pending_samples: 0,
            drops: Drops::default(),
        };
        log.index.retain(|m| m.seq > acked);
        log.pending_bytes = log.index.iter().map(RecordMeta::disk_len).sum();
        log.pending_samples = log.index.iter().map(|m| u64::from(m.samples)).sum();
        log.delete_acked_segments();
        Ok((log, rec))
    }
}

/// Whether `buf` (header of `h` bytes, then the payload) is an intact record.
pub(super) fn record_ok(buf: &[u8], h: usize) -> bool {
    if buf.len() < h + META {
        return false;
    }
    let crc = u32::from_le_bytes([buf[h - 4], buf[h - 3], buf[h - 2], buf[h - 1]]);
    let payload = &buf[h..];
    if h == HEADER {
        let mut c = crc32fast::Hasher::new();
        c.update(&buf[4..8]);
        c.update(payload);
        u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) == REC_MAGIC && c.finalize() == crc
    } else {
        crc32fast::hash(payload) == crc
    }
}

/// A damaged region found by [`scan`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Damaged {
    pub(super) offset: u64,
    pub(super) bytes: u64,
    /// Records lost (from the sequence gap, or the damaged headers).
    pub(super) records: u64,
    /// Their samples, as far as the damaged headers tell.
    pub(super) samples: u64,
    /// The highest sequence number among them, if known.
    pub(super) last_seq: Option<u64>,
    /// All zeros (a hole punched out on a full disk, if all acknowledged).
    pub(super) zeros: bool,
}

/// What [`scan`] found in one segment.
#[derive(Debug, Default)]
pub(super) struct Scanned {
    pub(super) records: Vec<RecordMeta>,
    /// Regions skipped between intact records.
    pub(super) damaged: Vec<Damaged>,
    /// Where a bad region that runs to the end of the file starts.
    pub(super) bad_tail: Option<u64>,
    /// The segment's format version (1, 2 or 3).
    version: u8,
}

pub(super) fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// The header and meta lengths of a segment version's records.
fn layout(version: u8) -> (usize, usize) {
    match version {
        1 => (HEADER_V1, META),
        2 => (HEADER, META),
        _ => (HEADER, META_V3),
    }
}

/// The intact record at `off` of a segment in format `version`, if there
/// is one.
pub(super) fn record_at(segment: u64, data: &[u8], off: usize, version: u8) -> Option<RecordMeta> {
    let (h, meta) = layout(version);
    if off + h > data.len() {
        return None;
    }
    let len = u32_at(data, off + h - 8) as usize;
    if !(meta..=MAX_RECORD).contains(&len) || off + h + len > data.len() {
        return None;
    }
    let rec = &data[off..off + h + len];
    if !record_ok(rec, h) {
        return None;
    }
    let p = &rec[h..];
    let codec = if meta == META_V3 {
        // An unknown codec cannot be read: damage.
        Codec::from_tag(p[20])?
    } else {
        Codec::Snappy
    };
    let oldest_ms = i64::from_le_bytes(p[12..20].try_into().ok()?);
    Some(RecordMeta {
        seq: u64::from_le_bytes(p[0..8].try_into().ok()?),
        segment,
        offset: off as u64,
        len: len as u32,
        samples: u32::from_le_bytes(p[8..12].try_into().ok()?),
        oldest_ms,
        born: crate::clock::mono_born(oldest_ms),
        stream: 0,
        header: h as u8,
        meta: meta as u8,
        codec,
    })
}

/// Scans a segment: the records that read back whole, the damaged regions
/// between them, and a damaged tail. `after`: the last good sequence number
/// before this segment (0 if none).
pub(super) fn scan(segment: u64, data: &[u8], after: u64) -> Scanned {
    let mut out = Scanned::default();
    let version = if data.starts_with(SEG_MAGIC) {
        VERSION
    } else if data.starts_with(SEG_MAGIC_V2) {
        2
    } else {
        1
    };
    out.version = version;
    let v1 = version == 1;
    let (h, meta) = layout(version);
    let mut off = if v1 { 0 } else { SEG_MAGIC.len() };
    let mut last_seq = after;
    while off < data.len() {
        if let Some(m) = record_at(segment, data, off, version) {
            last_seq = m.seq;
            off += h + m.len as usize;
            out.records.push(m);
            continue;
        }
        // Damage at `off`. Old segments have no magic to find the next record
        // by: the rest of the file is lost.
        let next = if v1 {
            None
        } else {
            let magic = REC_MAGIC.to_le_bytes();
            (off + 1..data.len().saturating_sub(HEADER - 1))
                .filter(|&p| data[p..p + 4] == magic)
                .find_map(|p| {
                    record_at(segment, data, p, version)
                        .filter(|m| m.seq > last_seq)
                        .map(|m| (p, m.seq))
                })
        };
        let Some((resume, resume_seq)) = next else {
            out.bad_tail = Some(off as u64);
            break;
        };
        let zeros = data[off..resume].iter().all(|&c| c == 0);
        // What the damaged headers still tell (unverified).
        let (mut walked, mut samples, mut q) = (0u64, 0u64, off);
        let mut top = None;
        while q + h + meta <= resume {
            let len = u32_at(data, q + h - 8) as usize;
            let magic_ok = v1 || u32_at(data, q) == REC_MAGIC;
            if !magic_ok || !(meta..=MAX_RECORD).contains(&len) || q + h + len > resume {
                break;
            }
            let seq = u64::from_le_bytes(data[q + h..q + h + 8].try_into().unwrap_or_default());
            if seq > last_seq && seq < resume_seq {
                top = Some(seq);
                samples += u64::from(u32_at(data, q + h + 8));
                walked += 1;
            }
            q += h + len;
        }
        let gap = if last_seq > 0 {
            resume_seq.saturating_sub(last_seq + 1)
        } else {
            0
        };
        out.damaged.push(Damaged {
            offset: off as u64,
            bytes: (resume - off) as u64,
            records: gap.max(walked),
            samples,
            // Every record in the region precedes the one found after it.
            last_seq: Some(resume_seq - 1).or(top),
            zeros,
        });
        off = resume;
    }
    out
}

pub(super) fn read_ack(path: &Path) -> Option<u64> {
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
