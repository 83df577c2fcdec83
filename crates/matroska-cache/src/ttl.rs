//! Durations: the one TTL rule of both backends, and saturating conversions for settings.
//!
//! An entry's TTL must be above zero and at most [`MAX_TTL`]; anything else is
//! [`Error::InvalidTtl`] on every backend. A TTL below one millisecond is rounded up to one
//! (Redis counts in milliseconds), so both backends keep an entry equally long.
//!
//! Settings (timeouts, lease and ticket ages, intervals) are different: `Duration::MAX` is how
//! people say "no limit", so they saturate instead of overflowing or failing.

use std::time::Duration;

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
