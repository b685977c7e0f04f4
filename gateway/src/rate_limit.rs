//! A token bucket per credential: at most its `per_minute` actions a minute, in bursts of at
//! most that many. Consent changes go through it (see `routes/consent.rs`): one stolen
//! credential must not rewrite many patients' consent before anyone notices.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// Takes one action's token for `credential` (allowed `per_minute`) at `now`, or says
    /// how long until one is there.
    pub(crate) fn take(
        &self,
        credential: &str,
        per_minute: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let per_minute = f64::from(per_minute.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let full = Bucket {
            tokens: per_minute,
            at: now,
        };
        let bucket = buckets.entry(credential.to_string()).or_insert(full);
        let rate = per_minute / 60.0;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(per_minute);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_limit_then_one_per_refill_per_credential() {
        let limit = RateLimit::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limit.take("a", 3, t0).is_ok());
        }
        let wait = limit.take("a", 3, t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another credential has its own bucket.
        assert!(limit.take("b", 3, t0).is_ok());
        // One token back after 20 s (3 a minute), not two.
        let t1 = t0 + Duration::from_secs(20);
        assert!(limit.take("a", 3, t1).is_ok());
        assert!(limit.take("a", 3, t1).is_err());
    }
}
