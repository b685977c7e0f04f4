//! Remembering which deliveries were handled, so a delivery re-sent by a replaying router
//! (same delivery id, new offset) or re-read after a crash (same offset) reaches the
//! handler once.
//!
//! The SDK calls [`DedupStore::contains`] before the handler and [`DedupStore::insert`]
//! after it succeeded (or after the delivery was parked), *before* the offset is committed.
//! See the crate documentation for the crash window this leaves and how an application
//! closes it.

mod memory;
mod sqlite;

pub use memory::{MemoryStore, RecentIds};
pub use sqlite::SqliteStore;

use crate::Result;

/// A store of handled delivery ids.
///
/// Calls are synchronous and short (one indexed lookup or insert); a store that talks to a
/// remote database should keep its own connection ready rather than reconnect per call.
pub trait DedupStore: Send {
    /// Whether `delivery_id` was handled before.
    fn contains(&mut self, delivery_id: &str) -> Result<bool>;
    /// Remembers `delivery_id` as handled. Durable stores return only once it is durable.
    /// Inserting an id that is already there is not an error.
    fn insert(&mut self, delivery_id: &str) -> Result<()>;
}

impl<S: DedupStore + ?Sized> DedupStore for Box<S> {
    fn contains(&mut self, delivery_id: &str) -> Result<bool> {
        (**self).contains(delivery_id)
    }
    fn insert(&mut self, delivery_id: &str) -> Result<()> {
        (**self).insert(delivery_id)
    }
}
