//! State records on another partition than their patient's: handled once each, not on
//! every reload of the partition they are on (see [`Misplaced`]), and the hold markers
//! that stand for them on the patient's own partition.

use std::collections::BTreeSet;

use dho_schemas::topics::patient_key;
use rdkafka::message::{Headers, Message, OwnedMessage};

use super::{StateSync, StateTopic};
use crate::outputs::{Acks, Output, OutputProducer};
use crate::pipeline::error::{Error, Result, await_acks};

/// A state partition's records that belong to another partition. Each is handled once,
/// not on every reload of the partition: a dead letter, a hold marker on the patient's
/// own partition, and a note of it in the router's alert-state topic on this partition
/// (key `<patient>|misplaced:<topic>:<offset>`). A second marker, written on a reload
/// after a valid record had replaced the first, would hold the patient again.
#[derive(Debug, Default)]
pub(super) struct Misplaced {
    /// Found while catching up, not handled yet.
    pub(super) pending: Vec<OwnedMessage>,
    /// Handled before (read back from the alert-state topic): topic label and offset.
    pub(super) handled: BTreeSet<(String, i64)>,
}

impl StateSync {
    /// Handles the state records found on another partition than their patient's, each
    /// once (see [`Misplaced`]): parked, a hold marker on the patient's own partition,
    /// and a note that it was handled.
    pub(super) async fn handle_misplaced(&mut self, producer: &OutputProducer) -> Result<()> {
        let alert_state = self.topic_name(StateTopic::AlertState).to_string();
        for (partition, misplaced) in &mut self.misplaced {
            for message in std::mem::take(&mut misplaced.pending) {
                let topic = StateTopic::ALL
                    .into_iter()
                    .find(|t| self.topics[*t as usize] == message.topic())
                    .unwrap_or(StateTopic::Consents);
                let note = (topic.label().to_string(), message.offset());
                if misplaced.handled.contains(&note) {
                    continue;
                }
                let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    continue;
                };
                let own = self.decoder.partition_of(patient_key(key));
                self.dead_letters
                    .park(
                        producer,
                        &message,
                        "wrong_partition",
                        format!(
                            "written to partition {partition}, but its patient's partition \
                             is {own} (Java's murmur2 of the patient key; librdkafka: \
                             partitioner = murmur2_random)"
                        ),
                    )
                    .await?;
                self.dead_letters
                    .hold_on_own_partition(producer, &message, own, "wrong_partition")
                    .await?;
                let note_key = format!("{}|misplaced:{}:{}", patient_key(key), note.0, note.1);
                let acks = Acks::new();
                crate::outputs::send(
                    producer,
                    Output {
                        topic: &alert_state,
                        partition: Some(*partition),
                        key: Some(note_key.as_str()),
                        payload: Some(b"{}".as_slice()),
                        headers: None,
                    },
                    &acks,
                )
                .await
                .map_err(Error::NotAcknowledged)?;
                await_acks(&acks).await?;
                misplaced.handled.insert(note);
            }
        }
        Ok(())
    }
}

/// The topic label and offset a `<patient>|misplaced:<topic>:<offset>` note in the
/// alert-state topic names (see [`Misplaced`]).
pub(super) fn misplaced_note(key: &str) -> Option<(String, i64)> {
    let (_, note) = key.split_once("|misplaced:")?;
    let (topic, offset) = note.rsplit_once(':')?;
    Some((topic.to_string(), offset.parse().ok()?))
}

/// The reason of a hold marker (see `DeadLetters::hold_on_own_partition`), if `message`
/// is one.
pub(super) fn hold_marker(message: &OwnedMessage) -> Option<&str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == dho_schemas::topics::headers::HOLD)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}
