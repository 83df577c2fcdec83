//! Durations: the one TTL rule of both backends, and saturating conversions for settings.
//!
//! An entry's TTL must be above zero and at most [`MAX_TTL`]; anything else is
//! [`Error::InvalidTtl`] on every backend. A TTL below one millisecond is rounded up to one
//! (Redis counts in milliseconds), so both backends keep an entry equally long.
//!
//! Settings (timeouts, lease and ticket ages, intervals) are different: `Duration::MAX` is how
//! people say "no limit", so they saturate instead of overflowing or failing.
//!
//! **Freshness.** A read-through entry with [fail-safe or refresh-ahead](crate::Entry) is
//! stored longer than its TTL (the fallback window) and carries its [`Freshness`]: when it
//! stops being fresh and when it is due for a refresh, in milliseconds since the UNIX epoch
//! on the writer's clock. Every read goes through [`Freshness::age`]: a plain `get` misses a
//! [`Age::Stale`] entry; only read-through's fail-safe may return it, and only when computing
//! fails. (Clock skew between processes moves these instants by the skew; it never makes an
//! invalidated entry readable: invalidation deletes the entry, fallback and all.)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// The longest TTL an entry may have: 100 years (365-day years).
///
/// Longer would not fit in Redis's expiry clock; an entry meant to live "forever" is better
/// served by this bound than by an error.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The TTL an entry is stored with: `ttl` rounded up to whole milliseconds, or
/// [`Error::InvalidTtl`] if it is zero or above [`MAX_TTL`].
pub(crate) fn check(ttl: Duration) -> Result<Duration> {
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(Error::InvalidTtl { ttl });
    }
    Ok(Duration::from_millis(millis(ttl)))
}

/// `ttl` (checked) spread by a random factor in `1 - fraction ..= 1 + fraction`, in whole
/// milliseconds, at least 1 ms and at most [`MAX_TTL`].
pub(crate) fn jittered(ttl: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 {
        return ttl;
    }
    let factor = 1.0 + rand::random_range(-fraction..=fraction);
    let ms = (ttl.as_millis() as f64 * factor).round();
    let ms = ms.clamp(1.0, millis(MAX_TTL) as f64) as u64;
    Duration::from_millis(ms)
}

/// When a stored entry stops being fresh, and when it is due for a refresh (both in
/// milliseconds since the UNIX epoch); entries without fail-safe or refresh-ahead have none
/// (their TTL is all there is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Freshness {
    /// From this instant on the entry is a fallback only.
    pub fresh_until_ms: u64,
    /// From this instant on a hit starts a refresh (at most `fresh_until_ms`).
    pub refresh_at_ms: u64,
}

/// How old an entry is, by its [`Freshness`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Age {
    /// Within its TTL and not due for a refresh.
    Fresh,
    /// Within its TTL, due for a refresh.
    Due,
    /// Past its TTL: kept only as a fail-safe fallback.
    Stale,
}

impl Freshness {
    /// The freshness of an entry stored now for `ttl`, refreshed after `refresh_after`.
    pub(crate) fn starting_now(ttl: Duration, refresh_after: Option<Duration>) -> Freshness {
        let now = now_ms();
        let fresh_until_ms = now.saturating_add(millis(ttl));
        let refresh_at_ms = refresh_after
            .map_or(fresh_until_ms, |after| now.saturating_add(millis(after)))
            .min(fresh_until_ms);
        Freshness {
            fresh_until_ms,
            refresh_at_ms,
        }
    }

    /// The entry's age at `now_ms`.
    pub fn age(&self, now_ms: u64) -> Age {
        if now_ms >= self.fresh_until_ms {
            Age::Stale
        } else if now_ms >= self.refresh_at_ms {
            Age::Due
        } else {
            Age::Fresh
        }
    }
}

/// The age of an entry with `freshness` now (untimed entries are fresh while they exist).
pub(crate) fn age_of(freshness: Option<&Freshness>) -> Age {
    freshness.map_or(Age::Fresh, |f| f.age(now_ms()))
}

/// What a read-through [`begin`](crate::Backend::begin) accepts as already cached: an entry
/// that is still fresh at `now_ms`, or, for a refresh, only one that is not even due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// An entry fresh at this instant (ms since the UNIX epoch).
    Fresh(u64),
    /// An entry not due for a refresh at this instant.
    NotDue(u64),
}

impl Want {
    /// An entry fresh now.
    pub fn fresh() -> Want {
        Want::Fresh(now_ms())
    }

    /// Whether an entry with `freshness` is what the caller wants.
    pub fn accepts(&self, freshness: Option<&Freshness>) -> bool {
        match (self, freshness) {
            (_, None) => true,
            (Want::Fresh(now), Some(f)) => f.age(*now) != Age::Stale,
            (Want::NotDue(now), Some(f)) => f.age(*now) == Age::Fresh,
        }
    }
}

/// Milliseconds since the UNIX epoch on this machine's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// Whole milliseconds, rounded up, saturating at `u64::MAX`.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Milliseconds for a Redis expiry (`PX`) or a clock comparison in a script: rounded up, at
/// least 1, at most [`MAX_TTL`], whatever the setting.
#[cfg(feature = "redis")]
pub(crate) fn redis_millis(duration: Duration) -> u64 {
    millis(duration.min(MAX_TTL)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn jitter_spreads_within_the_fraction_and_the_rule() {
        let ttl = Duration::from_secs(100);
        assert_eq!(jittered(ttl, 0.0), ttl);
        let spread: Vec<Duration> = (0..1000).map(|_| jittered(ttl, 0.2)).collect();
        assert!(spread
            .iter()
            .all(|t| *t >= Duration::from_secs(80) && *t <= Duration::from_secs(120)));
        let below = spread.iter().filter(|t| **t < ttl).count();
        assert!((300..700).contains(&below), "{below} of 1000 below the TTL");
        assert!(jittered(Duration::from_millis(1), 0.99) >= Duration::from_millis(1));
        assert!(jittered(MAX_TTL, 0.99) <= MAX_TTL);
    }

    #[test]
    fn the_rule() {
        assert!(check(Duration::ZERO).is_err());
        assert!(check(Duration::MAX).is_err());
        assert!(check(MAX_TTL + Duration::from_nanos(1)).is_err());
        assert_eq!(check(MAX_TTL).unwrap(), MAX_TTL);
        assert_eq!(
            check(Duration::from_nanos(1)).unwrap(),
            Duration::from_millis(1)
        );
        #[cfg(feature = "redis")]
        {
            assert_eq!(redis_millis(Duration::MAX), millis(MAX_TTL));
            assert_eq!(redis_millis(Duration::ZERO), 1);
        }
    }

    proptest! {
        #[test]
        fn checked_ttls_are_whole_milliseconds_in_range(secs in 0..u64::MAX, nanos in 0..1_000_000_000u32) {
            let ttl = Duration::new(secs, nanos);
            match check(ttl) {
                Ok(stored) => {
                    prop_assert!(stored >= ttl && stored - ttl < Duration::from_millis(1));
                    prop_assert_eq!(stored.subsec_nanos() % 1_000_000, 0);
                    prop_assert!(stored <= MAX_TTL);
                }
                Err(_) => prop_assert!(ttl.is_zero() || ttl > MAX_TTL),
            }
        }
    }
}
