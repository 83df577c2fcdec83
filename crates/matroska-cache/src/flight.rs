//! Single flight: concurrent misses of one key in this process run one computation.
//!
//! The first caller to miss a key leads its flight; later callers follow it and receive the
//! leader's result if the leader stored it. A flight is closed to newcomers before its result
//! is stored (see [`Flight::close`]), and ends when its leader is dropped (finished, failed or
//! cancelled), giving back the distributed lease it may still hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::backend::DynBackend;
use crate::codec::Encoded;
use crate::dep::Dep;

/// A stored result a leader shares with the callers waiting for it.
pub(crate) type Shared = Arc<(Encoded, Vec<Dep>)>;

type Flying = Arc<Mutex<HashMap<String, watch::Receiver<Option<Shared>>>>>;

/// The computations running in this process, by key.
#[derive(Default)]
pub(crate) struct Flights(Flying);

/// What a caller that missed does.
pub(crate) enum Role {
    /// Compute, then share the result through the flight.
    Leader(Flight),
    /// Wait for the leader's result.
    Follower(watch::Receiver<Option<Shared>>),
}

impl Flights {
    pub(crate) fn join_or_lead(&self, backend: &Arc<dyn DynBackend>, key: &str) -> Role {
        let mut flights = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = flights.get(key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key.to_owned(), rx);
        Role::Leader(Flight {
            flights: Arc::clone(&self.0),
            backend: Arc::clone(backend),
            key: key.to_owned(),
            tx,
            lease: None,
        })
    }
}

/// The leader's side of a flight. Dropping it (finished, failed or cancelled) ends the flight:
/// followers that got no value compute themselves, and a lease still held is given back.
pub(crate) struct Flight {
    flights: Flying,
    backend: Arc<dyn DynBackend>,
    key: String,
    tx: watch::Sender<Option<Shared>>,
    /// The distributed lease this leader holds, if any.
    pub(crate) lease: Option<u64>,
}

impl Flight {
    /// Lets no new follower join: from now on a caller that misses starts its own flight.
    ///
    /// Called before the result is stored. A follower that joined earlier began its read
    /// before the store, so the fence also covered every invalidation it could have seen
    /// complete; a caller arriving later may have seen an invalidation drop the stored result,
    /// and must not be handed it.
    pub(crate) fn close(&self) {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if flights
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            flights.remove(&self.key);
        }
    }

    /// Hands the stored result to the followers.
    pub(crate) fn share(&self, value: Shared) {
        self.tx.send_replace(Some(value));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.close();
        if let (Some(holder), Ok(runtime)) = (self.lease, tokio::runtime::Handle::try_current()) {
            // Cancelled, failed, or unsure whether the lease was taken (a reply lost with its
            // connection): give it back rather than make others wait for it to expire. The
            // release only deletes a lease this holder owns, so retrying is safe.
            let backend = Arc::clone(&self.backend);
            let key = std::mem::take(&mut self.key);
            runtime.spawn(async move {
                let mut delay = Duration::from_millis(50);
                for _ in 0..5 {
                    if backend.release_lease(&key, holder).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            });
        }
    }
}

/// Single flight when the cache cannot be read (Redis down or hung, its breaker open): the
/// callers of one key in this process take turns, so one computation of the key runs at a
/// time. A caller whose turn comes takes the value of the last computation if that
/// computation *began after the caller arrived*, and computes otherwise.
///
/// Nothing can be fenced while the cache is unreachable, so that rule is what keeps a shared
/// value fresh: a computation that began after a caller arrived read the source of truth
/// after that caller's call began, so any invalidation completed before the call is
/// reflected in it. (Handing out the value of a computation already running when a caller
/// arrives would not be: an invalidation by another process may have completed in between.)
/// A failed or cancelled computation shares nothing; the next caller in line computes.
#[derive(Default)]
pub(crate) struct Turns(Arc<Mutex<HashMap<String, Arc<KeyTurns>>>>);

/// The queue of one key.
#[derive(Default)]
struct KeyTurns {
    /// Computations begun for the key since the queue formed.
    begun: AtomicU64,
    /// Callers in the queue (changed under the map's lock); the queue goes with the last.
    callers: AtomicUsize,
    /// Held by the caller whose turn it is; the last computation's value.
    turn: tokio::sync::Mutex<Option<(u64, Shared)>>,
}

/// A caller's place in a key's queue.
pub(crate) struct Place {
    turns: Arc<Mutex<HashMap<String, Arc<KeyTurns>>>>,
    key: String,
    queue: Arc<KeyTurns>,
    /// Computations begun when this caller arrived.
    arrived: u64,
}

/// A caller's turn: the value to take, or the right to compute.
pub(crate) struct Turn<'a> {
    place: &'a Place,
    last: tokio::sync::MutexGuard<'a, Option<(u64, Shared)>>,
    number: Option<u64>,
}

impl Turns {
    /// Joins the queue of `key`.
    pub(crate) fn enter(&self, key: &str) -> Place {
        let mut turns = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = Arc::clone(turns.entry(key.to_owned()).or_default());
        queue.callers.fetch_add(1, Ordering::SeqCst);
        let arrived = queue.begun.load(Ordering::SeqCst);
        Place {
            turns: Arc::clone(&self.0),
            key: key.to_owned(),
            queue,
            arrived,
        }
    }
}

impl Place {
    /// Waits for this caller's turn (callers are served in the order they arrived).
    pub(crate) async fn turn(&self) -> Turn<'_> {
        Turn {
            place: self,
            last: self.queue.turn.lock().await,
            number: None,
        }
    }

    /// Whether other callers are in the queue (and may take a shared value).
    pub(crate) fn others_waiting(&self) -> bool {
        self.queue.callers.load(Ordering::SeqCst) > 1
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        if self.queue.callers.fetch_sub(1, Ordering::SeqCst) == 1
            && turns
                .get(&self.key)
                .is_some_and(|queue| Arc::ptr_eq(queue, &self.queue))
        {
            turns.remove(&self.key);
        }
    }
}

impl Turn<'_> {
    /// The value of a computation that began after this caller arrived, if one succeeded.
    pub(crate) fn shared(&self) -> Option<Shared> {
        match &*self.last {
            Some((number, shared)) if *number >= self.place.arrived => Some(Arc::clone(shared)),
            _ => None,
        }
    }

    /// Marks the start of this caller's own computation: call it before reading the source
    /// of truth.
    pub(crate) fn begin(&mut self) {
        self.number = Some(self.place.queue.begun.fetch_add(1, Ordering::SeqCst));
    }

    /// Hands the value of this caller's computation to the callers after it.
    pub(crate) fn share(&mut self, value: Shared) {
        if let Some(number) = self.number {
            *self.last = Some((number, value));
        }
    }
}
