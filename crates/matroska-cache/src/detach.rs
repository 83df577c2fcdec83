//! Work that must finish once it has begun, even if the caller stops waiting.
//!
//! An invalidation dropped half-way (a timeout around it, a web client that disconnects)
//! would leave the rest of its dependents readable until their TTL. So the work runs in a
//! task of its own, and the caller's future only waits for it: dropping the caller's future
//! detaches the task, which goes on to the end.

use std::future::Future;

use crate::error::{Error, Result};

/// Runs `work` to completion in a spawned task and returns its output, or
/// [`Error::RuntimeShutdown`] if the runtime shut down first. A panic in `work` is resumed in
/// the caller. Outside a Tokio runtime (nothing to spawn on) it runs in place.
pub(crate) async fn run_to_completion<T>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T>
where
    T: Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Ok(work.await);
    };
    match runtime.spawn(work).await {
        Ok(output) => Ok(output),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(Error::RuntimeShutdown),
    }
}
