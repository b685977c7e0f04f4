//! The "sharing ended" notices: after a state sync, each patient whose consents changed is
//! judged against the consents last judged (`dho_routing_core::sharing`), each subscriber
//! whose deliveries the change ended gets a notice without clinical content, and the new
//! sharing snapshot is written with the batch's alert tracks, after the notices are
//! acknowledged (in exactly-once mode, in the same transaction). A router that dies before
//! that leaves the next owner the old snapshot: it judges the same change again and sends
//! the same notice, with the same delivery id (its source is the consent record's
//! position). Nothing here runs per reading: only for consent records the sync applied.

use dho_routing_core::decision::PatientState;
use dho_routing_core::sharing::{Ended, Judged, SharingSnapshot, judge, snapshot_key};
use dho_schemas::model::*;
use tracing::info;

use super::Router;
use super::commit::BatchOutputs;
use super::disclose::Notice;
use super::error::Result;
use super::state_sync::{ConsentSeen, StateTopic};

/// What judging one patient's change calls for.
struct Judgement {
    partition: i32,
    /// The patient's key.
    patient: String,
    snapshot: SharingSnapshot,
    ended: Vec<Ended>,
    /// The changed consent record (None: deleted), and the one it replaced, if known.
    current: Option<Consent>,
    withdrawn: Option<Consent>,
    seen: ConsentSeen,
}

impl Router {
    /// Judges the patients whose consents changed in the syncs so far, adds the notices to
    /// `out` and the new snapshots to its alert-state writes.
    pub(super) async fn judge_sharing(
        &mut self,
        now: Millis,
        out: &mut BatchOutputs,
    ) -> Result<()> {
        let changes = self.state.take_consent_changes();
        if changes.is_empty() {
            return Ok(());
        }
        let mut judged = Vec::new();
        let mut later = Vec::new();
        let nobody = PatientState::default();
        for ((partition, patient), seen) in changes {
            let Some(state) = self.state.partition(partition) else {
                continue; // taken away meanwhile
            };
            let after = state.patient(&patient).unwrap_or(&nobody);
            let before = state.sharing(&patient);
            let ended = match before {
                _ if after.is_on_hold() => {
                    // What the held record said is unknown: judged once it is replaced.
                    later.push((partition, patient, seen));
                    continue;
                }
                // Judged for the first time (a new patient, or one from before these
                // notices): nothing was known to be shared, so nothing ended.
                None if after.consents().is_empty() => continue,
                None => Vec::new(),
                Some(before) => match judge(before, after, now) {
                    Judged::Unchanged => continue,
                    Judged::OnHold => {
                        later.push((partition, patient, seen));
                        continue;
                    }
                    Judged::Changed(ended) => ended,
                },
            };
            judged.push(Judgement {
                partition,
                patient,
                snapshot: SharingSnapshot {
                    consents: after.consents().clone(),
                    consents_offset: seen.offset,
                },
                ended,
                current: after.consents().get(&seen.record_id).cloned(),
                withdrawn: before.and_then(|b| b.consents.get(&seen.record_id).cloned()),
                seen,
            });
        }
        for (partition, patient, seen) in later {
            self.state.judge_later(partition, patient, seen);
        }
        for judgement in judged {
            self.notify(&judgement, now, out).await?;
            let Judgement {
                partition,
                patient,
                snapshot,
                ..
            } = judgement;
            let key = snapshot_key(&patient);
            self.state
                .partition_mut(partition)
                .apply_sharing(&key, Some(snapshot.clone()));
            out.sharing.insert((partition, key), snapshot);
        }
        Ok(())
    }

    /// Sends each subscriber in `judgement.ended` its notice.
    async fn notify(&mut self, j: &Judgement, now: Millis, out: &mut BatchOutputs) -> Result<()> {
        let source = SourcePosition {
            topic: self.state.topic_name(StateTopic::Consents).to_string(),
            partition: j.partition,
            offset: j.seen.offset,
        };
        let known = j.current.as_ref().or(j.withdrawn.as_ref());
        for ended in &j.ended {
            let subscription = &ended.subscription;
            let notice = SharingEnded {
                recorded_by: j.current.as_ref().map(|c| c.recorded_by.clone()),
                recorded_at: j.current.as_ref().map_or(j.seen.at, |c| c.recorded_at),
                categories: ended.categories.iter().copied().collect(),
            };
            let notice = Notice {
                patient: &subscription.patient,
                subscription,
                consent_id: &j.seen.record_id,
                source: &source,
                legal_basis: known.map_or("", |c| c.legal_basis.as_str()),
                controller: known.map_or(&subscription.subscriber_org, |c| &c.recorded_by),
                ended: &notice,
            };
            self.disclosure
                .sharing_ended(notice, &mut self.outputs, now, &mut out.outbox)
                .await?;
            info!(
                subscriber = %subscription.subscriber_id,
                categories = ended.categories.len(),
                "sharing ended: notice sent"
            );
        }
        Ok(())
    }
}
