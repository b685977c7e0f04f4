//! The subscriber's consumer context: librdkafka's statistics as the lag and broker
//! round-trip gauges, labelled with the subscriber's group; and on each assignment, the
//! deliveries retention deleted before this group read them (see
//! [`dho_kafka::retention`]), counted and logged, never skipped silently.

use std::time::Duration;

use dho_telemetry::names::consumer as names;
use dho_telemetry::{InternalEvent, KafkaStats, StatsContext};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use tracing::warn;

use crate::events::RetentionGap;

pub(crate) struct SubscriberContext {
    stats: StatsContext,
}

impl SubscriberContext {
    pub(crate) fn new(group: &str) -> Self {
        Self {
            stats: StatsContext::new(KafkaStats::new(names::STATS, group)),
        }
    }
}

impl ClientContext for SubscriberContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.stats.observe(&statistics);
    }
}

impl ConsumerContext for SubscriberContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        // Now, before anything of these partitions is committed: the committed offsets
        // are still the ones a gap would start at.
        match dho_kafka::retention::gaps(consumer, assigned, Duration::from_secs(10)) {
            Ok(gaps) => gaps.iter().for_each(|gap| RetentionGap { gap }.emit()),
            Err(e) => warn!(error = %e, "could not look for retention gaps on assignment"),
        }
    }
}
