//! Publishing into the hub: the typed [`Publisher`] that device platforms written in Rust
//! embed (and that the gateway, the admin tools and the simulator use), and the simulator.

mod publisher;
pub mod simulator;

pub use publisher::{Error, Publisher, Receipt, Result};
