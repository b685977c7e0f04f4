//! State records on another partition than their patient's: handled once each, not on
//! every reload of the partition they are on (see [`Misplaced`]), and the hold markers
//! that stand for them on the patient's own partition.

use std::collections::BTreeSet;

use dho_schemas::topics::patient_key;
use rdkafka::message::{Headers, Message, OwnedMessage};

use super::{StateSync, StateTopic};
use crate::outputs::{Output, OutputProducer};
use crate::pipeline::dead_letters::DeadLetter;
use crate::pipeline::error::{Result, send_acknowledged};

/// A state partition's records that belong to another partition. Each is handled once,
/// not on every reload of the partition: a dead letter, a hold marker on the patient's
/// own partition, and a note of it in the router's alert-state topic on this partition
/// (key `<patient>|misplaced:<topic>:<offset>`). A second marker, written on a reload
/// after a valid record had replaced the first, would hold the patient again.
#[derive(Debug, Default)]
pub(super) struct Misplaced {
    /// Found while catching up, not handled yet.
    pub(super) pending: Vec<Pending>,
    /// Handled before (read back from the alert-state topic): topic and offset.
    pub(super) handled: BTreeSet<(StateTopic, i64)>,
}

/// A misplaced record, as the state sync found it.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) topic: StateTopic,
    pub(super) key: String,
    pub(super) message: OwnedMessage,
    /// Its dead letter (`wrong_partition`, with the partitions in its detail).
    pub(super) dead: DeadLetter,
}

impl StateSync {
    /// Handles the state records found on another partition than their patient's, each
    /// once (see [`Misplaced`]): parked, a hold marker on the patient's own partition,
    /// and a note that it was handled.
    pub(super) async fn handle_misplaced(&mut self, producer: &OutputProducer) -> Result<()> {
        let alert_state = self.topic_name(StateTopic::AlertState).to_string();
        for (partition, misplaced) in &mut self.misplaced {
            for pending in std::mem::take(&mut misplaced.pending) {
                let Pending {
                    topic,
                    key,
                    message,
                    dead,
                } = pending;
                let note = (topic, message.offset());
                if misplaced.handled.contains(&note) {
                    continue;
                }
                self.dead_letters
                    .park(producer, &message, dead.reason, dead.detail)
                    .await?;
                let patient = patient_key(&key);
                let own = self.decoder.partition_of(patient);
                self.dead_letters
                    .hold_on_own_partition(producer, &message, own, dead.reason)
                    .await?;
                let note_key = format!("{patient}|misplaced:{}:{}", topic.label(), note.1);
                let written = Output {
                    topic: &alert_state,
                    partition: Some(*partition),
                    key: Some(note_key.as_str()),
                    payload: Some(b"{}".as_slice()),
                    headers: None,
                };
                send_acknowledged(producer, written).await?;
                misplaced.handled.insert(note);
            }
        }
        Ok(())
    }
}

/// The topic and offset a `<patient>|misplaced:<topic>:<offset>` note in the alert-state
/// topic names (see [`Misplaced`]).
pub(super) fn misplaced_note(key: &str) -> Option<(StateTopic, i64)> {
    let (_, note) = key.split_once("|misplaced:")?;
    let (topic, offset) = note.rsplit_once(':')?;
    Some((StateTopic::from_label(topic)?, offset.parse().ok()?))
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
