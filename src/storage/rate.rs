//! `--limit-upload` / `--limit-download`: transfers are paced so that the
//! average rate stays at the limit. Each transfer reserves its share of time
//! on one shared clock and waits for its turn, so concurrent uploads split
//! the rate instead of each taking all of it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimit {
    bytes_per_sec: f64,
    next_free: Mutex<Instant>,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Blocks until `bytes` more may go without exceeding the rate.
    pub fn pace(&self, bytes: u64) {
        let wait = {
            let mut next = self.next_free.lock().expect("rate lock");
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
            start - now
        };
        std::thread::sleep(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_queue_up_at_the_rate() {
        let limit = RateLimit::new(1000);
        limit.pace(0);
        // two reservations of 1000 bytes: the second starts a second later
        let t = Instant::now();
        limit.pace(1000);
        let first = t.elapsed();
        {
            let next = *limit.next_free.lock().unwrap();
            let ahead = next.saturating_duration_since(Instant::now());
            assert!(ahead > Duration::from_millis(900), "{ahead:?}");
        }
        assert!(first < Duration::from_millis(100), "{first:?}");
    }
}
