#![doc = include_str!("../../../README.md")]
//!
//! # Layout
//!
//! - [`cache`] holds [`MatroskaCache`], the front door: it encodes values, dedupes
//!   dependencies, counts and logs.
//! - [`dep`] holds [`Dep`] and one file per kind of dependency (`id`, `tag`/`ntag`, `pk`),
//!   with their collision-free text form.
//! - [`codec`] says how values are stored (strings as they are, the rest as JSON).
//! - [`backend`] holds the [`Backend`] trait, [`backend::memory`] (moka plus a dependency
//!   index) and [`backend::redis`] (hashes, with the Lua scripts beside the code that runs
//!   them).
//! - [`collect`] gathers the dependencies of nested values ([`Dependencies`], derivable).
//! - `orm` (feature `sea-orm`) names SeaORM models' dependencies and invalidates after commit.
//! - [`scopes`] gives cached filtered lists their dependencies (declared filters, run on
//!   every write), and [`changes`] lists the fields a write changed.
//! - [`read_through`] adds `get_or_compute`: stale-set fencing, single flight, leases and
//!   nested dependency propagation.
//! - [`stats`] holds the counters, [`error`] the one error type, [`ttl`] the one TTL rule.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backend;
pub mod cache;
pub mod changes;
pub mod codec;
pub mod collect;
pub mod dep;
mod detach;
pub mod error;
mod flight;
#[cfg(feature = "sea-orm")]
#[cfg_attr(docsrs, doc(cfg(feature = "sea-orm")))]
pub mod orm;
pub mod read_through;
pub mod scopes;
pub mod stats;
pub mod ttl;

pub use backend::memory::{MemoryBackend, MemoryBackendBuilder};
#[cfg(feature = "redis")]
pub use backend::redis::{RedisBackend, RedisBackendBuilder};
pub use backend::{Backend, Fenced, Lease, PruneReport, Ticket};
pub use cache::{MatroskaCache, MatroskaCacheBuilder};
pub use collect::{DepSet, Dependencies};
pub use dep::Dep;
pub use error::{Error, Result, ServerError};
pub use read_through::depends_on;
pub use stats::Stats;
pub use ttl::MAX_TTL;

/// What the derive macros' expansions name; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use serde;
}

/// Derives [`Dependencies`] (`derive` feature); see the trait for the attributes.
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use matroska_cache_derive::Dependencies;
