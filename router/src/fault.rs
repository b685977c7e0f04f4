//! Faults injected on purpose, for the exactly-once tests on Apache Kafka.
//!
//! A SIGKILL or an abort must land between a batch's produce and its commit: a window of a
//! few milliseconds that a test cannot hit from outside the process. Compiled only with the
//! `fault-injection` feature (the test harness builds the router with it; release builds
//! and the images do not), and inert unless `DHO_ROUTER_FAULT` names a fault:
//!
//! - `hold-before-commit@N`: the Nth batch's outputs are produced and acknowledged, then
//!   the router holds its transaction open forever (the test kills it there);
//! - `abort-before-commit@N`: the Nth batch's commit fails, so the router takes its abort
//!   path, as it would for a commit the broker refused.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::error::KafkaError;

/// The variable naming the fault, read once.
pub const VARIABLE: &str = "DHO_ROUTER_FAULT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    HoldBeforeCommit(u64),
    AbortBeforeCommit(u64),
}

fn parse(spec: &str) -> Option<Fault> {
    let (name, batch) = spec.split_once('@')?;
    let batch: u64 = batch.parse().ok().filter(|&n| n > 0)?;
    match name {
        "hold-before-commit" => Some(Fault::HoldBeforeCommit(batch)),
        "abort-before-commit" => Some(Fault::AbortBeforeCommit(batch)),
        _ => None,
    }
}

fn configured() -> Option<Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    *FAULT.get_or_init(|| {
        let spec = std::env::var(VARIABLE).ok()?;
        let fault = parse(&spec);
        // A misspelt fault would make its test pass for the wrong reason: refuse to run.
        assert!(fault.is_some(), "{VARIABLE}={spec:?} names no fault");
        fault
    })
}

/// Called once per consuming batch, after its outputs are acknowledged and before its
/// offsets and transaction are committed. Blocks forever or fails, as configured.
pub fn before_commit() -> Result<(), KafkaError> {
    static BATCHES: AtomicU64 = AtomicU64::new(0);
    let Some(fault) = configured() else {
        return Ok(());
    };
    let batch = BATCHES.fetch_add(1, Ordering::Relaxed) + 1;
    match fault {
        Fault::HoldBeforeCommit(n) if n == batch => {
            tracing::warn!(
                batch,
                "fault injected: holding the transaction open before its commit"
            );
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        Fault::AbortBeforeCommit(n) if n == batch => {
            tracing::warn!(batch, "fault injected: failing the commit");
            Err(KafkaError::Canceled)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_named_with_their_batch() {
        assert_eq!(
            parse("hold-before-commit@3"),
            Some(Fault::HoldBeforeCommit(3))
        );
        assert_eq!(
            parse("abort-before-commit@1"),
            Some(Fault::AbortBeforeCommit(1))
        );
        assert_eq!(parse("abort-before-commit@0"), None);
        assert_eq!(parse("abort-before-commit"), None);
        assert_eq!(parse("crash@2"), None);
    }
}
