//! The development stack's broker: a real Kafka-API broker (nisshi, pinned) run as a child
//! process, so the demo and the tests talk to the same protocol as production, with no Docker.
//!
//! The broker binary is installed once into a cache outside the repository by `./dev`
//! (`cargo install nisshi --version 0.8.1`); this crate only finds and runs it. A missing
//! binary is an error that says how to install it, never a silently skipped test.

mod broker;

pub use broker::{Broker, BrokerOptions, Storage, broker_binary, cache_dir};

/// The broker release this project is tested against.
pub const NISSHI_VERSION: &str = "0.8.1";

/// Errors starting or stopping the development broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the development broker is not installed at {path}: run `./dev install-broker` \
         (or set DHO_NISSHI_BIN to a nisshi {version} binary)"
    )]
    NotInstalled { path: String, version: &'static str },
    #[error("could not start the broker {path}: {source}")]
    Spawn {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the broker exited during start-up ({status}); its log: {log}")]
    ExitedEarly { status: String, log: String },
    #[error("the broker did not answer metadata requests within {seconds}s; its log: {log}")]
    NotReady { seconds: u64, log: String },
    #[error("i/o error in the development stack: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
