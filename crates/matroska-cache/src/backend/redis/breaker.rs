//! The circuit breaker: a server that stopped answering fails calls at once.
//!
//! A hung server (a paused VM, a dropped network path) keeps its connections open and
//! answers nothing, so every call would wait out the whole timeout. Each server has a
//! breaker: after `failures` consecutive timeouts or connection failures it *opens*, and
//! calls to that server fail at once with [`Error::Unavailable`] (which `get_or_compute`
//! absorbs as a fault, computing instead). After `open_for`, one call goes through as a
//! *probe*: its success closes the breaker, its failure opens it again. A server that
//! answers with an error (`OOM`, `NOSCRIPT`) answered: that counts as a success.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::error::Error;

/// When breakers open, and for how long (see [`RedisBackendBuilder::circuit_breaker`]).
///
/// [`RedisBackendBuilder::circuit_breaker`]: super::RedisBackendBuilder::circuit_breaker
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) failures: u32,
    pub(crate) open_for: Duration,
    /// Openings of every breaker of the backend.
    pub(crate) openings: Arc<AtomicU64>,
    /// The prefix, for the metrics label.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) label: Arc<str>,
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One call is finding out whether the server answers again.
    Probing,
}

/// One server's breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }
}

/// A call let through: report how it ended with [`Breaker::record`]. A probe dropped
/// unreported (its call was cancelled) lets the next call probe.
#[must_use]
pub(crate) struct Admission<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe {
            let mut state = self.breaker.lock();
            if matches!(*state, State::Probing) {
                *state = State::Open {
                    until: Instant::now(),
                };
            }
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a call to `server` through, or fails it at once while the breaker is open.
    pub(crate) fn admit(&self, server: &str) -> Result<Admission<'_>, Error> {
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() >= until => {
                *state = State::Probing;
                true
            }
            State::Open { .. } | State::Probing => {
                return Err(Error::Unavailable {
                    server: server.to_owned(),
                })
            }
        };
        Ok(Admission {
            breaker: self,
            probe,
        })
    }

    /// How the admitted call ended: `answered` unless it timed out or lost its connection.
    pub(crate) fn record(
        &self,
        admission: Admission<'_>,
        answered: bool,
        settings: &Settings,
        server: &str,
    ) {
        let mut state = self.lock();
        let opened = match (&*state, answered) {
            (State::Closed { failures: 0 }, true) => false,
            (_, true) => {
                if matches!(*state, State::Probing) {
                    info!(server, "Redis answers again: circuit breaker closed");
                }
                *state = State::Closed { failures: 0 };
                false
            }
            (State::Closed { failures }, false) if failures + 1 < settings.failures => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            // A probe that failed, or one failure too many; another call's failure while
            // open changes nothing.
            (State::Open { .. }, false) => false,
            (State::Closed { .. } | State::Probing, false) => {
                *state = State::Open {
                    until: Instant::now() + settings.open_for,
                };
                true
            }
        };
        drop(state);
        drop(admission);
        if opened {
            settings.openings.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            metrics::counter!("matroska_cache_breaker_openings_total", "prefix" => settings.label.to_string())
                .increment(1);
            warn!(
                server,
                open_for = ?settings.open_for,
                "Redis does not answer: circuit breaker open, calls to it fail at once"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            failures: 3,
            open_for: Duration::from_millis(50),
            openings: Arc::default(),
            label: Arc::from("p"),
        }
    }

    #[test]
    fn opens_after_failures_then_one_probe_decides() {
        let s = settings();
        let b = Breaker::default();
        for _ in 0..2 {
            let a = b.admit("n").unwrap();
            b.record(a, false, &s, "n");
        }
        // A success in between starts the count again.
        let a = b.admit("n").unwrap();
        b.record(a, true, &s, "n");
        for _ in 0..3 {
            let a = b.admit("n").unwrap();
            b.record(a, false, &s, "n");
        }
        assert_eq!(s.openings.load(Ordering::Relaxed), 1);
        assert!(matches!(b.admit("n"), Err(Error::Unavailable { .. })));
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.admit("n").unwrap();
        // While the probe runs, others fail fast.
        assert!(b.admit("n").is_err());
        b.record(probe, false, &s, "n");
        assert_eq!(s.openings.load(Ordering::Relaxed), 2);
        assert!(b.admit("n").is_err());
        std::thread::sleep(Duration::from_millis(60));
        // A cancelled probe lets the next call probe.
        drop(b.admit("n").unwrap());
        let probe = b.admit("n").unwrap();
        b.record(probe, true, &s, "n");
        for _ in 0..5 {
            let a = b.admit("n").unwrap();
            b.record(a, true, &s, "n");
        }
    }
}
