//! librdkafka's statistics (`statistics.interval.ms`) as gauges, in the manner of vector's
//! `KafkaStatisticsContext`: consumer lag per group and topic, the slowest broker's
//! round-trip time, and the producer's queue depth.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::statistics::Statistics;

use crate::names::StatsNames;

/// Records one client's statistics under a component's gauge names.
#[derive(Debug, Clone)]
pub struct KafkaStats {
    names: StatsNames,
    group: String,
}

impl KafkaStats {
    /// `group` labels the lag gauge: the consumer group id (configuration, so bounded). A
    /// producer-only component passes an empty string.
    pub fn new(names: StatsNames, group: impl Into<String>) -> Self {
        Self {
            names,
            group: group.into(),
        }
    }

    /// Sets the gauges from one statistics report.
    pub fn record(&self, statistics: &Statistics) {
        let client = match statistics.client_type.as_str() {
            "consumer" => "consumer",
            "producer" => "producer",
            _ => "other",
        };
        if let Some(name) = self.names.broker_rtt {
            // Microseconds in librdkafka; a broker with no request in the window has cnt 0.
            let rtt = statistics
                .brokers
                .values()
                .filter_map(|b| b.rtt.as_ref())
                .filter(|w| w.cnt > 0)
                .map(|w| w.avg)
                .max();
            if let Some(rtt) = rtt {
                metrics::gauge!(name, "client" => client).set(rtt as f64 / 1e6);
            }
        }
        if client == "consumer"
            && let Some(name) = self.names.consumer_lag
        {
            for (topic, stats) in &statistics.topics {
                // Partition -1 is librdkafka's internal unassigned queue; lag -1 means unknown
                // (not assigned to this member, or not fetched yet). An instance that lost all
                // of a topic's partitions reports 0, so a sum over instances stays right.
                let lag: i64 = stats
                    .partitions
                    .values()
                    .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                    .map(|p| p.consumer_lag)
                    .sum();
                metrics::gauge!(name, "group" => self.group.clone(), "topic" => topic.clone())
                    .set(lag as f64);
            }
        }
        if client == "producer"
            && let Some(name) = self.names.producer_queue_depth
        {
            metrics::gauge!(name).set(statistics.msg_cnt as f64);
        }
    }
}

/// A client context that records its statistics, for clients that need nothing else from
/// their context (a consumer or a producer). Optionally marks a readiness flag once the
/// consumer group has assigned this member nothing, see [`StatsContext::ready_when_unassigned`].
#[derive(Debug, Clone)]
pub struct StatsContext {
    stats: KafkaStats,
    unassigned: Option<Arc<AtomicBool>>,
}

impl StatsContext {
    pub fn new(stats: KafkaStats) -> Self {
        Self {
            stats,
            unassigned: None,
        }
    }

    /// Sets `flag` when a statistics report shows the member joined to its group (join
    /// state `steady`) with no partitions assigned: it then has no state to load.
    pub fn ready_when_unassigned(mut self, flag: Arc<AtomicBool>) -> Self {
        self.unassigned = Some(flag);
        self
    }

    /// What the context does with a report (also for contexts of their own that delegate).
    pub fn observe(&self, statistics: &Statistics) {
        self.stats.record(statistics);
        if let Some(flag) = &self.unassigned
            && statistics
                .cgrp
                .as_ref()
                .is_some_and(|g| g.join_state == "steady" && g.assignment_size == 0)
        {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        self.observe(&statistics);
    }
}

impl ConsumerContext for StatsContext {}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;
    use crate::names;
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// A consumer's report in librdkafka's shape (STATISTICS.md): two partitions of
    /// `dho.measurements` assigned with lag 7 and 5, one not assigned (lag -1), the internal
    /// partition -1; `dho.selfreports` not fetched yet; two brokers with 1.5 ms and 4 ms
    /// average round trips, and a bootstrap broker that has made no request.
    fn consumer_sample() -> Statistics {
        serde_json::from_str(include_str!("../tests/consumer_statistics.json")).unwrap()
    }

    fn render(f: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, f);
        handle.render()
    }

    fn value(text: &str, series: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn a_consumer_report_becomes_lag_per_group_and_topic_and_broker_rtt() {
        let stats = consumer_sample();
        let text = render(|| {
            KafkaStats::new(names::router::STATS, "dho-router").record(&stats);
        });
        assert_eq!(
            value(
                &text,
                r#"dho_router_consumer_lag_records{group="dho-router",topic="dho.measurements"}"#
            ),
            12.0
        );
        assert_eq!(
            value(
                &text,
                r#"dho_router_consumer_lag_records{group="dho-router",topic="dho.selfreports"}"#
            ),
            0.0,
            "no known lag is 0, not a stale value"
        );
        assert_eq!(
            value(&text, r#"dho_router_broker_rtt_seconds{client="consumer"}"#),
            0.004
        );
        assert!(
            !text.contains("dho_router_producer_queue_depth"),
            "a consumer has no producer queue:\n{text}"
        );
    }

    #[test]
    fn a_producer_report_becomes_queue_depth_and_no_lag() {
        let mut stats = consumer_sample();
        stats.client_type = "producer".into();
        stats.msg_cnt = 42;
        let text = render(|| {
            KafkaStats::new(names::router::STATS, "dho-router").record(&stats);
        });
        assert_eq!(value(&text, "dho_router_producer_queue_depth"), 42.0);
        assert_eq!(
            value(&text, r#"dho_router_broker_rtt_seconds{client="producer"}"#),
            0.004
        );
        assert!(!text.contains("consumer_lag"), "{text}");
    }

    #[test]
    fn the_sdk_names_have_no_producer_gauge() {
        let mut stats = consumer_sample();
        let text = render(|| {
            KafkaStats::new(names::consumer::STATS, "gp").record(&stats);
            stats.client_type = "producer".into();
            KafkaStats::new(names::consumer::STATS, "gp").record(&stats);
        });
        assert_eq!(
            value(
                &text,
                r#"dho_consumer_lag_records{group="gp",topic="dho.measurements"}"#
            ),
            12.0
        );
        assert!(!text.contains("queue"), "{text}");
    }

    #[test]
    fn an_up_member_with_nothing_assigned_has_its_state_loaded() {
        let flag = Arc::new(AtomicBool::new(false));
        let context = StatsContext::new(KafkaStats::new(names::router::STATS, "g"))
            .ready_when_unassigned(flag.clone());
        let mut stats = consumer_sample();
        render(|| context.observe(&stats));
        assert!(!flag.load(Ordering::Relaxed), "2 partitions assigned");
        stats.cgrp.as_mut().unwrap().assignment_size = 0;
        stats.cgrp.as_mut().unwrap().join_state = "wait-join".into();
        render(|| context.observe(&stats));
        assert!(!flag.load(Ordering::Relaxed), "still joining the group");
        stats.cgrp.as_mut().unwrap().join_state = "steady".into();
        render(|| context.observe(&stats));
        assert!(flag.load(Ordering::Relaxed));
    }
}
