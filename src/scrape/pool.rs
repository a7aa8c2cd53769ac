//! Scrape buffers shared by all targets (bodies, encoded samples), handed
//! out per scrape and given back after it; a buffer one huge scrape grew is
//! freed, not kept.

use std::sync::Mutex;

use crate::remote_write::samples::{EncodedSamples, POOL_KEEP_MAX};

/// Scrape buffers shared by all targets. Scrapes of different targets rarely
/// overlap, so a handful of buffers serves any number of targets instead of
/// every target keeping its own body, inflate and output buffers at their
/// largest size between scrapes. A pool keeps at most [`POOL_BUDGET`] bytes
/// (and 8 buffers); a buffer given back past that is freed.
pub(super) struct Pool<T> {
    free: Mutex<Vec<T>>,
}

/// Bytes one pool keeps between scrapes, at most.
pub(crate) const POOL_BUDGET: usize = 32 << 20;

impl<T: Default> Pool<T> {
    const fn new() -> Self {
        Pool {
            free: Mutex::new(Vec::new()),
        }
    }
    pub(super) fn take(&self) -> T {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }
    pub(super) fn give(&self, v: T)
    where
        T: Retained,
    {
        // A buffer that grew for one huge scrape is freed, not kept. An
        // empty one (a slot handed back after its buffer already was) is
        // not kept either: taken first (last in, first out), it would make
        // the next scrape grow a new buffer while a grown one sits idle.
        if v.retained() == 0 || v.retained() > POOL_KEEP_MAX {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let kept: usize = free.iter().map(Retained::retained).sum();
        if free.len() < 8 && kept + v.retained() <= POOL_BUDGET {
            free.push(v);
        }
    }
}

/// Bytes a pooled buffer holds on to.
pub(super) trait Retained {
    fn retained(&self) -> usize;
}

impl Retained for Vec<u8> {
    fn retained(&self) -> usize {
        self.capacity()
    }
}

impl Retained for EncodedSamples {
    fn retained(&self) -> usize {
        self.retained_bytes()
    }
}

pub(super) static BYTES: Pool<Vec<u8>> = Pool::new();
pub(super) static SAMPLES: Pool<EncodedSamples> = Pool::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_buffer_given_back_never_hides_a_grown_one() {
        let pool: Pool<Vec<u8>> = Pool::new();
        pool.give(Vec::with_capacity(4096));
        // A scrape gives its buffers back twice: once grown, once emptied.
        pool.give(Vec::new());
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        assert!(
            pool.take().capacity() >= 4096,
            "the grown buffer comes back"
        );
        assert_eq!(pool.take().capacity(), 0, "then a new one");
    }

    #[test]
    fn a_buffer_past_the_keep_limit_is_freed() {
        let pool: Pool<Vec<u8>> = Pool::new();
        pool.give(Vec::with_capacity(POOL_KEEP_MAX + 1));
        assert!(pool.free.lock().unwrap().is_empty());
    }
}
