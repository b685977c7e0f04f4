//! Where a new consumer group starts: `auto.offset.reset` for earliest and latest, and
//! offsets-for-times, committed for the group before it joins, for a point in time.

use std::time::Duration;

use dho_kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::info;

use crate::{Result, StartFrom};

const TIMEOUT: Duration = Duration::from_secs(15);

/// The `auto.offset.reset` for `start`: where a partition without a committed offset
/// starts. A timestamp start commits its offsets first, so `earliest` only covers a
/// partition that appears later.
pub(crate) fn auto_offset_reset(start: StartFrom) -> &'static str {
    match start {
        StartFrom::Latest => "latest",
        StartFrom::Earliest | StartFrom::Timestamp(_) => "earliest",
    }
}

/// For [`StartFrom::Timestamp`], commits for `group` on every partition of `topic` that
/// has no committed offset yet the first offset whose timestamp is at or after `millis`
/// (the high watermark if there is none). Partitions the group already committed keep
/// their offsets: a restarted subscriber resumes, it does not backfill again.
///
/// Runs before the group's consumer joins, from a consumer that never joins, so the
/// commit is a plain offset commit for an empty group (blocking: call it off the runtime).
pub(crate) fn seed_timestamp(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
    millis: i64,
) -> Result<()> {
    let consumer: BaseConsumer = settings
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])?
        .create()?;
    let partitions = dho_kafka::partition_ids(&consumer, topic, TIMEOUT)?;
    let mut all = TopicPartitionList::new();
    for &p in &partitions {
        all.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(all, TIMEOUT)?;
    let mut query = TopicPartitionList::new();
    let mut high = Vec::new();
    for &p in &partitions {
        let done = committed
            .find_partition(topic, p)
            .is_some_and(|e| matches!(e.offset(), Offset::Offset(_)));
        if !done {
            // The watermark first: a record appended after it is at or after `millis`
            // anyway, so falling back to this watermark never skips one.
            let (_, hw) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
            high.push((p, hw));
            query.add_partition_offset(topic, p, Offset::Offset(millis))?;
        }
    }
    if high.is_empty() {
        return Ok(());
    }
    let found = consumer.offsets_for_times(query, TIMEOUT)?;
    let mut start = TopicPartitionList::new();
    for (p, hw) in high {
        let offset = match found.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => o,
            // No record at or after the time: start at the end.
            _ => hw,
        };
        start.add_partition_offset(topic, p, Offset::Offset(offset))?;
    }
    consumer.commit(&start, CommitMode::Sync)?;
    info!(
        partitions = start.count(),
        from_millis = millis,
        "backfill start offsets committed"
    );
    Ok(())
}
