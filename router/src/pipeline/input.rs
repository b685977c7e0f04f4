//! The router's input: its consumer of the event topics, in the router's group, and the
//! partitions the group takes away. A revocation is served inside the consumer's `recv`;
//! the rebalance callback only notes it, and the loop applies it right after that `recv`,
//! to what it held before (see `Router::run`).
//!
//! The group assigns the measurements topic's partitions, cooperatively (only the ones that
//! move are revoked); each brings the self-reports partition of the same number along. The
//! topics are co-partitioned by patient, and one instance must hold a patient's state,
//! readings and self-reports together: the cooperative-sticky assignor balances each
//! topic's partitions on its own, where eager `range` kept equal numbers together.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dho_schemas::TopicNames;
use dho_telemetry::{InternalEvent, KafkaStats, StatsContext};
use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::Notify;
use tracing::warn;

use super::error::{Error, Result};
use crate::config::RouterConfig;
use crate::events::RetentionGap;

/// The consumer of the event topics.
pub(super) type EventConsumer = StreamConsumer<RebalanceTracker>;

/// Remembers revoked partitions so the loop drops their state before the next batch, and
/// wakes the loop on an assignment so it loads the new partitions' state without waiting
/// for a record (readiness on an idle start).
pub(super) struct RebalanceTracker {
    revoked: Arc<Mutex<Vec<i32>>>,
    /// An assignment or revocation the consumer refused (the loop stops on it).
    refused: Arc<Mutex<Option<KafkaError>>>,
    assigned: Arc<Notify>,
    stats: StatsContext,
    /// The topic whose partitions follow the measurements' (see the module's comment).
    selfreports: String,
}

impl RebalanceTracker {
    /// `list` with the self-reports partition of each measurements partition in it.
    fn with_selfreports(&self, list: &TopicPartitionList) -> TopicPartitionList {
        let mut both = list.clone();
        for e in list.elements() {
            both.add_partition(&self.selfreports, e.partition());
        }
        both
    }
}

impl ClientContext for RebalanceTracker {
    /// librdkafka's periodic statistics: consumer lag per group and input topic, the broker
    /// round-trip time; and "state loaded" once the group assigned this member nothing.
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.stats.observe(&statistics);
    }
}

impl ConsumerContext for RebalanceTracker {
    /// rdkafka's own handling (cooperative: incremental), with the self-reports partitions
    /// added to what is assigned and revoked; a revocation is noted for the loop, and an
    /// assignment is looked at for retention gaps and wakes the loop.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let assign = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => true,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                revoked.extend(list.elements().iter().map(|e| e.partition()));
                false
            }
            other => {
                warn!(error = ?other, "the group's rebalance failed; dropping the assignment");
                false
            }
        };
        let both = self.with_selfreports(list);
        let applied = match assign {
            true => consumer.incremental_assign(&both),
            false => consumer.incremental_unassign(&both),
        };
        if let Err(e) = applied {
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        }
        if assign && list.count() > 0 {
            // Now, before anything of these partitions is committed: the committed offsets
            // are still the ones the gap would start at.
            retention_gaps(consumer, &both);
            // Kept as a permit if the loop is busy: it loads them when it next waits.
            self.assigned.notify_one();
        }
    }
}

/// Counts and logs the input records retention deleted before the group read them (see
/// [`dho_kafka::retention`]). A failed look is logged: the assignment goes on.
fn retention_gaps(consumer: &BaseConsumer<RebalanceTracker>, assigned: &TopicPartitionList) {
    match dho_kafka::retention::gaps(consumer, assigned, Duration::from_secs(10)) {
        Ok(gaps) => {
            for gap in &gaps {
                let kind = if gap.topic.ends_with(".measurements") {
                    "measurements"
                } else {
                    "selfreports"
                };
                RetentionGap { gap, kind }.emit();
            }
        }
        Err(e) => warn!(error = %e, "could not look for retention gaps on assignment"),
    }
}

/// The event consumer, the names of the topics it reads, and its revocations.
pub(super) struct Input {
    /// Shared with `run`, whose batches borrow their records from it (no copy per record).
    pub(super) consumer: Arc<EventConsumer>,
    revoked: Arc<Mutex<Vec<i32>>>,
    refused: Arc<Mutex<Option<KafkaError>>>,
    /// Notified when the group assigns this instance partitions.
    pub(super) assigned: Arc<Notify>,
    /// Made once: `TopicNames` formats on every call, and these are compared per record.
    pub(super) measurements: String,
    pub(super) selfreports: String,
}

impl Input {
    /// Joins the router's group on the event topics. `state_loaded` is readiness: the
    /// statistics set it while the group assigns this member nothing.
    pub(super) fn subscribe(
        config: &RouterConfig,
        topics: &TopicNames,
        kafka_stats: KafkaStats,
        state_loaded: Arc<AtomicBool>,
    ) -> Result<Self> {
        let settings = &config.kafka;
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(None));
        let assigned = Arc::new(Notify::new());
        let session_timeout = config.session_timeout.as_millis().to_string();
        let heartbeat = (config.session_timeout.as_millis() / 4)
            .max(100)
            .to_string();
        let mut membership = vec![("group.id", config.group_id.as_str())];
        if let Some(id) = &config.group_instance_id {
            membership.push(("group.instance.id", id.as_str()));
        }
        let events: EventConsumer = settings
            .client_config_tuned(
                &[
                    membership.as_slice(),
                    &[
                        ("enable.auto.commit", "false"),
                        ("enable.auto.offset.store", "false"),
                        ("auto.offset.reset", "earliest"),
                        // Incremental: a rebalance takes from this instance only the
                        // partitions that move, and it keeps routing (and the state of)
                        // the rest. Eager assignment revoked and reloaded them all.
                        ("partition.assignment.strategy", "cooperative-sticky"),
                        ("isolation.level", "read_committed"),
                        ("session.timeout.ms", session_timeout.as_str()),
                        ("heartbeat.interval.ms", heartbeat.as_str()),
                        ("statistics.interval.ms", "5000"),
                    ],
                ]
                .concat(),
                dho_kafka::FETCH_PROMPTLY,
            )?
            .create_with_context(RebalanceTracker {
                revoked: revoked.clone(),
                refused: refused.clone(),
                assigned: assigned.clone(),
                stats: StatsContext::new(kafka_stats).ready_when_unassigned(state_loaded),
                selfreports: topics.selfreports(),
            })?;
        events.subscribe(&[&topics.measurements()])?;
        Ok(Self {
            consumer: Arc::new(events),
            revoked,
            refused,
            assigned,
            measurements: topics.measurements(),
            selfreports: topics.selfreports(),
        })
    }

    /// Stops the router if the consumer failed for good (fenced for a duplicate
    /// `group_instance_id`) or refused an assignment.
    pub(super) fn check_fatal(&self) -> Result<()> {
        if let Some((code, reason)) = self.consumer.client().fatal_error() {
            return Err(Error::ConsumerFatal { code, reason });
        }
        match self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(e) => Err(Error::AssignmentRefused(e)),
            None => Ok(()),
        }
    }

    /// The partitions revoked since the last look (the rebalance callback notes them).
    pub(super) fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The partitions of `topic` the group assigned this instance.
    pub(super) fn assigned(&self, topic: &str) -> Result<BTreeSet<i32>, KafkaError> {
        Ok(self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .filter(|e| e.topic() == topic)
            .map(|e| e.partition())
            .collect())
    }
}
