//! Keeping within the disk: rolling drained segments, giving delivered bytes
//! back first (deleting drained segments, punching out a delivered prefix),
//! and only then dropping the oldest unsent segment, counted.

use super::*;

impl SegmentLog {
    /// Makes room on a full disk: delivered data first, then the oldest
    /// unsent segment. False if nothing could be freed.
    pub(super) fn free_for_space(&mut self) -> bool {
        // The segment being written goes too if everything in it was sent.
        let active_n = self.segments.back().map(|s| s.n);
        if self
            .index
            .back()
            .is_none_or(|m| Some(m.segment) != active_n)
        {
            self.close_active();
        }
        let before = self.segments.len();
        self.delete_acked_segments();
        if self.segments.len() < before {
            return true;
        }
        // Delivered records ahead of the oldest unsent one: punched out.
        if self.punch_delivered() {
            return true;
        }
        self.give_up_oldest_segment(true)
    }

    /// Punches out (`fallocate` PUNCH_HOLE) the delivered records at the
    /// start of the segment holding the oldest unsent record. True if that
    /// freed anything.
    pub(super) fn punch_delivered(&mut self) -> bool {
        use rustix::fs::{FallocateFlags, fallocate};
        let Some(front) = self.index.front().copied() else {
            return false;
        };
        let Some(pos) = self.segments.iter().position(|s| s.n == front.segment) else {
            return false;
        };
        let from = SEG_MAGIC.len() as u64 + self.segments[pos].punched;
        if self.segments[pos].version == 1 || front.offset <= from {
            return false;
        }
        let seg = &mut self.segments[pos];
        let path = seg_name(&self.dir, seg.n);
        let Ok(f) = OpenOptions::new().write(true).open(&path) else {
            return false;
        };
        let len = front.offset - from;
        match fallocate(
            &f,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            from,
            len,
        ) {
            Ok(()) => {
                seg.punched += len;
                self.disk_bytes -= len;
                // Recovery tells a hole from damage by the ack, so it is
                // made current now that there is room to write it.
                if let Err(e) = self.persist_ack() {
                    tracing::warn!(error = %e, "queue: cannot write the ack file after freeing space");
                }
                true
            }
            Err(e) => {
                tracing::debug!(file = %path.display(), error = %e, "queue: cannot punch out delivered records");
                false
            }
        }
    }

    pub(super) fn close_active(&mut self) {
        if let Some(f) = self.active.take() {
            sync_in_background(f);
        }
    }

    /// Deletes the oldest segment, counting its unacknowledged records as
    /// dropped (`disk_full` or `max_size`). False if there is none.
    pub(super) fn give_up_oldest_segment(&mut self, disk_full: bool) -> bool {
        let Some(seg) = self.segments.front().copied() else {
            return false;
        };
        if self.segments.len() == 1 {
            self.close_active();
        }
        let (mut records, mut samples) = (0u64, 0u64);
        while self.index.front().is_some_and(|m| m.segment <= seg.n) {
            if let Some(m) = self.index.pop_front() {
                self.pending_bytes -= m.disk_len();
                self.pending_samples -= u64::from(m.samples);
                self.acked = self.acked.max(m.seq);
                records += 1;
                samples += u64::from(m.samples);
            }
        }
        let d = if disk_full {
            &mut self.drops.disk_full
        } else {
            &mut self.drops.max_size
        };
        d.0 += records;
        d.1 += samples;
        let path = seg_name(&self.dir, seg.n);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), error = %e, "queue: cannot delete a segment given up on");
        }
        self.segments.pop_front();
        self.disk_bytes -= seg.size - seg.punched;
        true
    }

    /// What appends gave up since the last call.
    pub(crate) fn take_drops(&mut self) -> Drops {
        std::mem::take(&mut self.drops)
    }

    pub(super) fn rotate(&mut self) -> Result<(), DiskError> {
        self.close_active();
        let n = self.segments.back().map_or(1, |s| s.n + 1);
        let path = seg_name(&self.dir, n);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        if let Err(e) = f.write_all(SEG_MAGIC) {
            drop(f);
            let _ = std::fs::remove_file(&path);
            return Err(DiskError::Io { path, source: e });
        }
        sync_dir(&self.dir);
        self.segments.push_back(Segment {
            n,
            size: SEG_MAGIC.len() as u64,
            version: VERSION,
            punched: 0,
        });
        self.disk_bytes += SEG_MAGIC.len() as u64;
        self.active = Some(f);
        Ok(())
    }
}
