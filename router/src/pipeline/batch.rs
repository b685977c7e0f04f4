//! Filling a batch: the first record and what else arrives soon after, up to `max_batch`.
//! The batch borrows its records from the consumer (no copy per record), and drops those of
//! partitions the group took away while it filled.

use rdkafka::message::{BorrowedMessage, Message};

use super::error::Result;
use super::input::{EventConsumer, Input};
use super::state_sync::{EndsAnswer, StateSync};
use crate::config::RouterConfig;

/// A filled batch, and the state ends asked for while it filled if they hold for all of it.
pub(super) struct Filled<'c> {
    pub(super) batch: Vec<BorrowedMessage<'c>>,
    pub(super) ends: Option<EndsAnswer>,
    /// Partitions the group took away while the batch filled. Their records fetched before
    /// that are already out of `batch`; what is left of them was fetched after the group
    /// gave them back, and is this instance's to route.
    pub(super) revoked: Vec<i32>,
}

/// A batch: `first` and what else arrives within `batch_wait` (2 ms) of the last
/// record, up to `max_batch`. Once half a wait has passed with no record, the state
/// ends are asked for, so the broker answers while the batch waits (not at once: the
/// records of one Fetch reach the queue a partition at a time). The answer holds for
/// the batch only if no record came after the question (see `route_batch`).
pub(super) async fn fill_batch<'c>(
    events: &'c EventConsumer,
    first: BorrowedMessage<'c>,
    config: &RouterConfig,
    input: &Input,
    state: &StateSync,
) -> Result<Filled<'c>> {
    let wait = config.batch_wait;
    let mut batch = vec![first];
    let mut asked: Option<(EndsAnswer, usize)> = None;
    let mut revoked = Vec::new();
    while batch.len() < config.max_batch {
        // What is already fetched needs no timer (a timer per record showed in profiles).
        let next = match futures::FutureExt::now_or_never(events.recv()) {
            Some(next) => next,
            None => {
                let deadline = tokio::time::Instant::now() + wait;
                let mut next = None;
                if asked.is_none() {
                    match tokio::time::timeout(wait / 2, events.recv()).await {
                        Ok(early) => next = Some(early),
                        Err(_) => {
                            let partitions = batch.iter().map(|m| m.partition()).collect();
                            asked = Some((state.ask_ends(&partitions)?, batch.len()));
                        }
                    }
                }
                match next {
                    Some(next) => next,
                    None => match tokio::time::timeout_at(deadline, events.recv()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    },
                }
            }
        };
        // The recv that returned `next` may have served a revocation: the records in hand
        // of those partitions are the new owner's, `next` is not (it came after).
        forget_revoked_records(input, &mut batch, &mut revoked);
        match next {
            Ok(message) => batch.push(message),
            Err(_) => break,
        }
    }
    forget_revoked_records(input, &mut batch, &mut revoked);
    let ends = asked
        .filter(|(_, in_hand)| *in_hand == batch.len())
        .map(|(ends, _)| ends);
    Ok(Filled {
        batch,
        ends,
        revoked,
    })
}

/// Takes the revocations noticed since the last look and removes their partitions'
/// records from `batch` (fetched before the revocation); notes them in `revoked` for
/// the state to be dropped before the batch is routed.
fn forget_revoked_records(
    input: &Input,
    batch: &mut Vec<BorrowedMessage<'_>>,
    revoked: &mut Vec<i32>,
) {
    let newly = input.take_revoked();
    if newly.is_empty() {
        return;
    }
    batch.retain(|m| !newly.contains(&m.partition()));
    revoked.extend(newly);
}
