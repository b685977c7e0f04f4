//! The no-data timer's judgement: which alert tracks have been silent past their care
//! plan's interval. A silence counts only once every reading that could end it is routed,
//! so a backlog is never taken for silence, and steady load does not hide one.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use dho_routing_core::alerts::Track;
use dho_routing_core::tracks::plan_of_owner;
use dho_schemas::model::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::error::Result;
use super::input::EventConsumer;
use super::state_sync::StateSync;

/// How far behind the newest routed reading a silence must have ended before it counts
/// while the partition is not caught up: producers' clocks and in-flight records.
const SILENCE_MARGIN_MS: Millis = 60_000;

/// A track silent past its deadline, with the `NO_DATA` alert it raised.
pub(super) struct Silent {
    pub(super) partition: i32,
    /// The track's `patient|<track id>` key.
    pub(super) key: String,
    /// The track after the silence.
    pub(super) track: Track,
    pub(super) alert: Alert,
    /// The care organisation whose plan set the interval.
    pub(super) data_controller: OrganisationIdentifier,
}

/// How far each input partition's readings are routed.
#[derive(Debug, Default)]
pub(super) struct Silence {
    /// Per input partition, the newest measurement timestamp routed.
    routed_until: HashMap<i32, Millis>,
}

impl Silence {
    /// Notes a batch's newest reading of `partition` (its timestamp).
    pub(super) fn routed(&mut self, partition: i32, at: Millis) {
        let until = self.routed_until.entry(partition).or_insert(at);
        *until = (*until).max(at);
    }

    pub(super) fn forget(&mut self, revoked: &[i32]) {
        for partition in revoked {
            self.routed_until.remove(partition);
        }
    }

    /// The tracks of `partitions` silent at `now`, each moved on by its `NO_DATA` alert (not
    /// yet applied to `owned`): each track under its own owner's plan. `caught_up`: the
    /// partitions whose readings are all routed. Tracks from before plans per organisation
    /// must be migrated first (they are skipped).
    pub(super) fn due(
        &self,
        owned: &StateSync,
        partitions: &BTreeSet<i32>,
        caught_up: &BTreeSet<i32>,
        now: Millis,
    ) -> Vec<Silent> {
        let mut raised = Vec::new();
        for &partition in partitions {
            let Some(state) = owned.partition(partition) else {
                continue;
            };
            // How far the partition is routed: all of it, or up to the newest reading's
            // timestamp. A partition is in ingest order, so once a reading received after a
            // track's deadline (with a margin for producers' clocks) is routed, no reading of
            // that patient from before the deadline can still be waiting: under steady load
            // a partition is never quite caught up, and silence must still be noticed.
            let routed_until = if caught_up.contains(&partition) {
                Millis::MAX
            } else {
                self.routed_until
                    .get(&partition)
                    .map_or(Millis::MIN, |t| t.saturating_sub(SILENCE_MARGIN_MS))
            };
            for (patient_key, patient) in state.iter() {
                for (track_id, track) in &patient.alerts {
                    let Some(owner) = &track.state.owner else {
                        continue;
                    };
                    let codes: Vec<&str> = track.target_codes.iter().map(String::as_str).collect();
                    let code = &track.state.code;
                    let plans = patient.care_plans.values();
                    let Some(plan) = plan_of_owner(plans, owner, code, &codes) else {
                        continue;
                    };
                    match track.silence_deadline(plan) {
                        Some(deadline) if deadline <= now && deadline <= routed_until => {}
                        _ => continue,
                    }
                    let mut track = track.clone();
                    if let Some(alert) = track.check_silence(plan, now) {
                        let key = format!("{patient_key}|{track_id}");
                        raised.push(Silent {
                            partition,
                            key,
                            track,
                            alert,
                            data_controller: plan.updated_by.clone(),
                        });
                    }
                }
            }
        }
        raised
    }
}

/// The partitions of `topic` whose committed position has reached the end.
pub(super) fn caught_up(
    events: &EventConsumer,
    ends_client: &BaseConsumer,
    topic: &str,
    partitions: &BTreeSet<i32>,
) -> Result<BTreeSet<i32>> {
    if partitions.is_empty() {
        return Ok(BTreeSet::new());
    }
    let mut ends = TopicPartitionList::new();
    let mut list = TopicPartitionList::new();
    for &partition in partitions {
        ends.add_partition_offset(topic, partition, Offset::End)?;
        list.add_partition(topic, partition);
    }
    let (ends, committed) = tokio::task::block_in_place(|| {
        let ends = ends_client.offsets_for_times(ends, Duration::from_secs(10))?;
        let committed = events.committed_offsets(list, Duration::from_secs(10))?;
        Ok::<_, KafkaError>((ends, committed))
    })?;
    let offset_of = |list: &TopicPartitionList, partition: i32| {
        list.find_partition(topic, partition).map(|e| e.offset())
    };
    Ok(partitions
        .iter()
        .copied()
        .filter(|&p| match (offset_of(&ends, p), offset_of(&committed, p)) {
            (Some(Offset::Offset(end)), Some(Offset::Offset(next))) => next >= end,
            (Some(Offset::Offset(0) | Offset::End | Offset::Beginning), _) => true,
            _ => false,
        })
        .collect())
}
