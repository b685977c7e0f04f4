//! Alert tracks persisted before plans per organisation (key `<patient>|<code>`, no owner):
//! once the care plans are read, each is taken over by the owner of the plan it followed,
//! or dropped with a reason (`dho_routing_core::tracks::migrate`), in memory at once and on
//! the alert-state topic with the batch (the old key tombstoned, the track written under
//! its owner's key). Idempotent: if the batch is lost, the next owner of the partition
//! finds the old record again and the adopted one, if written, supersedes it.

use dho_routing_core::state::PartitionState;
use dho_routing_core::tracks::Legacy;
use dho_schemas::topics::state_key;
use tracing::{info, warn};

use super::commit::BatchOutputs;
use super::state_sync::StateSync;

/// Migrates the legacy tracks of `partition`, noting the writes in `out`.
pub(super) fn legacy_tracks(state: &mut StateSync, partition: i32, out: &mut BatchOutputs) {
    if !state
        .partition(partition)
        .is_some_and(PartitionState::has_legacy_tracks)
    {
        return;
    }
    for migrated in state.partition_mut(partition).migrate_legacy_tracks() {
        out.tracks.insert((partition, migrated.legacy_key), None);
        // Logged without the key: it names the patient.
        match migrated.outcome {
            Legacy::Adopted(track) => {
                info!(
                    partition,
                    "an alert track from before plans per organisation was taken over by the \
                     owner of the plan it followed"
                );
                let key = state_key(&track.state.patient, &track.id());
                out.tracks.insert((partition, key), Some(track));
            }
            Legacy::Dropped(reason) => warn!(
                partition,
                reason = reason.as_str(),
                open_red_episode = migrated.was_red,
                "an alert track from before plans per organisation was dropped"
            ),
        }
    }
}
