//! Single flight: concurrent misses of one key in this process run one computation.
//!
//! The first caller to miss a key leads its flight; later callers follow it and receive the
//! leader's result if the leader stored it. A flight is closed to newcomers before its result
//! is stored (see [`Flight::close`]), and ends when its leader is dropped (finished, failed or
//! cancelled), giving back the distributed lease it may still hold.

use std::collections::HashMap;
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
