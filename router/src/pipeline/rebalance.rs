//! What the router does when the group moves partitions: load the state of those it is
//! given, drop what it kept for those taken away, and, in exactly-once mode, route again a
//! batch whose offsets the group refused because it moved on meanwhile.

use std::collections::BTreeSet;

use dho_telemetry::InternalEvent;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use tracing::{debug, warn};

use super::{Error, Result, Router};
use crate::events::BatchRewound;

impl Router {
    /// Exactly-once mode: the group moved on while the batch was routed (with cooperative
    /// assignment any member joining or leaving bumps the generation, though this instance
    /// keeps its partitions), so the coordinator refused the batch's offsets and its
    /// transaction was aborted. Its records are read again from `from`, their first
    /// offsets, and routed on state loaded afresh: the in-memory alert tracks hold the
    /// aborted batch's changes. A partition the group took away meanwhile is not sought:
    /// its new owner routes it from the committed offset.
    pub(super) fn rewind(
        &mut self,
        from: TopicPartitionList,
        events: usize,
        cause: &Error,
    ) -> Result<()> {
        // Fenced for a duplicate group_instance_id: nothing to rewind for.
        self.input.check_fatal()?;
        BatchRewound {
            events,
            partitions: from.count(),
            cause: cause.to_string(),
        }
        .emit();
        self.commits.rewound();
        // Every owned partition's state, not only the batch's: the state sync inside the
        // aborted transaction may have handled another partition's records too (a
        // misplaced record's hold marker, a dead letter), and those outputs are gone.
        let owned = self.state.owned_partitions();
        self.forget_partitions(owned);
        let consumer = &self.input.consumer;
        let sought = tokio::task::block_in_place(|| {
            consumer.seek_partitions(from, std::time::Duration::from_secs(10))
        });
        match sought {
            Ok(list) => {
                for e in list.elements() {
                    if let Err(error) = e.error() {
                        debug!(partition = e.partition(), %error, "not rewound: no longer assigned");
                    }
                }
            }
            // The consumer's position is unknown: stop, so the next instance starts from
            // the committed offsets rather than skip the batch.
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Loads the state of the partitions the group assigned this instance (all of them:
    /// the ones it had are caught up in passing).
    pub(super) async fn load_assigned(&mut self) -> Result<()> {
        // If the assignment is unknown, the first record or the next no-data check loads
        // them instead.
        let Some(partitions) = self.settle_and_list("state load on assignment").await? else {
            return Ok(());
        };
        // Begun before the state sync, which may dead-letter a state record (see
        // route_batch); librdkafka ends a transaction with nothing in it locally.
        self.commits.begin(&self.outputs)?;
        self.state
            .sync(&partitions, self.outputs.producer())
            .await?;
        if self.config.transactional_id.is_some() {
            self.commits
                .commit_transaction(&self.outputs, &TopicPartitionList::new(), None)?;
        }
        self.state.gauges();
        Ok(())
    }

    /// Before a step over every owned partition (`step`, for the log): drops what was
    /// revoked, finishes the batches in flight, and lists the partitions this instance
    /// owns; None if it owns none, or the assignment is unknown (logged).
    pub(super) async fn settle_and_list(
        &mut self,
        step: &'static str,
    ) -> Result<Option<BTreeSet<i32>>> {
        // Revoked partitions' part of the batches in flight is dropped before they finish.
        self.drop_revoked();
        self.finish_in_flight().await?;
        match self.input.assigned(&self.input.measurements) {
            Ok(partitions) if partitions.is_empty() => Ok(None),
            Ok(partitions) => Ok(Some(partitions)),
            Err(e) => {
                warn!(error = %e, step, "skipped: the assignment is unknown");
                Ok(None)
            }
        }
    }

    /// Drops what this instance kept for the partitions the group took away: their state,
    /// and the part of the batch in flight that is theirs (its offsets are not committed
    /// and its alert tracks not written: the new owner routes those records again, with the
    /// same ids, and a late write from here could overwrite the new owner's).
    pub(super) fn drop_revoked(&mut self) {
        let revoked = self.input.take_revoked();
        self.forget_partitions(revoked);
    }

    /// See [`drop_revoked`](Self::drop_revoked).
    pub(super) fn forget_partitions(&mut self, revoked: Vec<i32>) {
        if revoked.is_empty() {
            return;
        }
        self.commits.forget(&revoked);
        self.silence.forget(&revoked);
        self.state.forget(&revoked);
    }
}
