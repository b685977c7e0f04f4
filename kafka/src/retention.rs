//! Retention gaps: records a consumer group never read because the log deleted them first.
//! A committed offset below the log start makes librdkafka start the partition at the log
//! start (`auto.offset.reset`) and say nothing; the hub's consumers look for such gaps when
//! they are assigned partitions, while the committed offsets are still the old ones, and
//! report each one as an outcome (count, log line, operator alert), never a silent skip.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

/// Records a group lost to retention on one partition: offsets `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset: the first record it had not read.
    pub first: i64,
    /// The last record deleted before the group read it (the log start minus one).
    pub last: i64,
}

impl Gap {
    /// How many records the gap holds (some may have been transaction markers).
    pub fn records(&self) -> i64 {
        self.last - self.first + 1
    }
}

/// The gaps among `assigned`: partitions whose committed offset is below the log start. A
/// partition the group never committed has no gap: where it starts is the consumer's
/// `auto.offset.reset` choice. Call it from the rebalance callback on an assignment,
/// before the consumer commits anything for those partitions.
pub fn gaps<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    assigned: &TopicPartitionList,
    timeout: Duration,
) -> KafkaResult<Vec<Gap>> {
    let committed = consumer.committed_offsets(assigned.clone(), timeout)?;
    let mut gaps = Vec::new();
    for element in committed.elements() {
        let Offset::Offset(next) = element.offset() else {
            continue;
        };
        let (log_start, _) =
            consumer.fetch_watermarks(element.topic(), element.partition(), timeout)?;
        if next < log_start {
            gaps.push(Gap {
                topic: element.topic().to_string(),
                partition: element.partition(),
                first: next,
                last: log_start - 1,
            });
        }
    }
    Ok(gaps)
}
