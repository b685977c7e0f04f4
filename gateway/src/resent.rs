//! Re-sent readings: a device platform that got no answer (a timeout on its side, a
//! gateway killed between the broker's acknowledgement and the answer) sends the same
//! reading again. Downstream cannot drop the repeat: the router's delivery id is made from
//! the source position (topic, partition, offset), and a second record has another
//! offset, so the consumer SDK would hand it to the subscriber twice. So the gateway
//! remembers what it published recently and answers a re-send with the original
//! acknowledgement, without publishing again.
//!
//! What counts as the same reading: the same kind (reading or self-report), from the same
//! platform, with the same `source_id` (the platform's own id of it; the event id is
//! derived from the three), and the same content apart from the gateway's receive time. A
//! reading with the same source id and other content (a correction) is published.
//! Readings without a source id cannot be recognised and are always published.
//!
//! The window: a re-send is recognised if it comes within `resend_window` of the
//! original's acknowledgement, and while the original is among the last `resend_memory`
//! acknowledged (the oldest are forgotten first; 100,000 entries take about 15 MB). A
//! re-send that arrives while the original is still being published waits for it. The
//! memory survives a restart: on start the gateway reads back the tails of the reading
//! topics (at most `resend_memory` records per topic, within the window). It is per
//! gateway instance: with several instances behind a load balancer, a re-send that reaches
//! another instance than the original is recognised only if that instance started after
//! the original was published. A named measurement re-sent past all that is still not
//! delivered twice: the router keeps who received each named reading and withholds a
//! re-send as `resent` (`dho_routing_core::delivered`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dho_kafka::{AvroSerde, KafkaSettings};
use dho_schemas::fhir::Ingested;
use dho_schemas::model::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::event_id::{Kind, derived_event_id};

use dho_publisher::Receipt;

/// A reading, by kind and the event id derived from (platform, kind, source id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    event_id: uuid::Uuid,
}

/// A digest of a reading's content, the gateway's receive time left out.
type Fingerprint = [u8; 16];

enum Slot {
    /// Being published; waiters see its sender dropped when that is over.
    InFlight(watch::Receiver<()>),
    /// Acknowledged at `partition`/`offset`.
    Done {
        fingerprint: Fingerprint,
        partition: i32,
        offset: i64,
        at: Instant,
        generation: u64,
    },
}

struct State {
    slots: HashMap<Key, Slot>,
    /// Acknowledged entries, oldest first, by generation (a replaced entry leaves a stale
    /// line here, skipped when it comes up).
    order: VecDeque<(Key, Instant, u64)>,
    generation: u64,
}

/// The gateway's memory of recently published readings.
#[derive(Clone)]
pub(crate) struct Recent {
    state: Arc<Mutex<State>>,
    capacity: usize,
    window: Duration,
    measurements: Arc<str>,
    selfreports: Arc<str>,
}

/// What to do with a reading.
pub(crate) enum Claim {
    /// Published before with the same content: its acknowledgement.
    Answered(Receipt),
    /// Being published by another request: wait until that is over, then claim again.
    Wait(watch::Receiver<()>),
    /// Publish it, then [`Ticket::finish`] with the result.
    Publish(Ticket),
}

/// The right to publish a reading the memory does not hold; dropped without
/// [`finish`](Self::finish), it leaves nothing behind.
pub(crate) struct Ticket {
    recent: Recent,
    key: Key,
    fingerprint: Fingerprint,
    _done: watch::Sender<()>,
    finished: bool,
}

impl Recent {
    /// Remembers at most `capacity` readings (0: none) for `window`.
    pub(crate) fn new(settings: &KafkaSettings, capacity: usize, window: Duration) -> Self {
        let topics = settings.topics();
        Self {
            state: Arc::new(Mutex::new(State {
                slots: HashMap::new(),
                order: VecDeque::new(),
                generation: 0,
            })),
            capacity,
            window,
            measurements: topics.measurements().into(),
            selfreports: topics.selfreports().into(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What to do with `event`, published by `platform`. `None`: nothing to remember
    /// (no source id, or the memory is off); publish it.
    pub(crate) fn claim(
        &self,
        event: &Ingested,
        platform: &OrganisationIdentifier,
    ) -> Option<Claim> {
        if self.capacity == 0 {
            return None;
        }
        let key = key(event, platform)?;
        let fingerprint = fingerprint(event);
        let mut state = self.lock();
        match state.slots.get(&key) {
            Some(Slot::InFlight(done)) => return Some(Claim::Wait(done.clone())),
            Some(Slot::Done {
                fingerprint: f,
                partition,
                offset,
                at,
                ..
            }) if *f == fingerprint && at.elapsed() <= self.window => {
                return Some(Claim::Answered(self.receipt(key.kind, *partition, *offset)));
            }
            _ => {}
        }
        let (done, waiting) = watch::channel(());
        state.slots.insert(key, Slot::InFlight(waiting));
        Some(Claim::Publish(Ticket {
            recent: self.clone(),
            key,
            fingerprint,
            _done: done,
            finished: false,
        }))
    }

    fn receipt(&self, kind: Kind, partition: i32, offset: i64) -> Receipt {
        Receipt {
            topic: match kind {
                Kind::Measurement => self.measurements.to_string(),
                Kind::SelfReport => self.selfreports.to_string(),
            },
            partition,
            offset,
        }
    }

    /// Remembers an acknowledged reading (acknowledged at `at`), then forgets what is
    /// beyond the capacity or the window.
    fn remember(
        &self,
        state: &mut State,
        key: Key,
        fingerprint: Fingerprint,
        receipt: (i32, i64),
        at: Instant,
    ) {
        state.generation += 1;
        let generation = state.generation;
        state.slots.insert(
            key,
            Slot::Done {
                fingerprint,
                partition: receipt.0,
                offset: receipt.1,
                at,
                generation,
            },
        );
        state.order.push_back((key, at, generation));
        while let Some(&(old, at, generation)) = state.order.front() {
            if state.order.len() <= self.capacity && at.elapsed() <= self.window {
                break;
            }
            state.order.pop_front();
            if matches!(state.slots.get(&old), Some(Slot::Done { generation: g, .. }) if *g == generation)
            {
                state.slots.remove(&old);
            }
        }
    }

    /// Readings remembered now (acknowledged, within the window or not yet forgotten).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock()
            .slots
            .values()
            .filter(|s| matches!(s, Slot::Done { .. }))
            .count()
    }

    /// Reads back the tails of the reading topics (at most `capacity` records per topic,
    /// published within the window) and remembers the readings the gateway published with
    /// an id derived from a source id. Returns how many it remembered.
    pub(crate) async fn warm_up(&self, settings: &KafkaSettings) -> dho_kafka::Result<usize> {
        if self.capacity == 0 {
            return Ok(0);
        }
        let since = now_millis() - i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let serde = AvroSerde::new(&settings.schema_registry_url);
        // (published at, key, fingerprint, partition, offset): small, unlike the records.
        let mut readings = vec![];
        for (kind, topic) in [
            (Kind::Measurement, self.measurements.to_string()),
            (Kind::SelfReport, self.selfreports.to_string()),
        ] {
            let settings = settings.clone();
            let capacity = self.capacity;
            let tail =
                tokio::task::spawn_blocking(move || tail(&settings, &topic, capacity, since))
                    .await
                    .map_err(|e| {
                        dho_kafka::Error::Config(format!("reading back {kind:?}s: {e}"))
                    })??;
            for record in tail {
                let event = match kind {
                    Kind::Measurement => serde
                        .decode::<Measurement>(&record.value)
                        .await
                        .map(Ingested::Measurement),
                    Kind::SelfReport => serde
                        .decode::<SelfReport>(&record.value)
                        .await
                        .map(Ingested::SelfReport),
                };
                // Records the router dead-letters are no readings to remember.
                let Ok(event) = event else { continue };
                let platform = match &event {
                    Ingested::Measurement(m) => &m.data_controller,
                    Ingested::SelfReport(r) => &r.data_controller,
                };
                // Only records whose id the gateway derived from a source id: a re-send of
                // anything else cannot be recognised anyway.
                let Some(key) = key(&event, platform) else {
                    continue;
                };
                if key.event_id.to_string() == event.event_id() {
                    let fingerprint = fingerprint(&event);
                    readings.push((
                        record.timestamp,
                        key,
                        fingerprint,
                        record.partition,
                        record.offset,
                    ));
                }
            }
        }
        // Oldest first, as they would have been remembered.
        readings.sort_by_key(|r| r.0);
        let (now, now_ms) = (Instant::now(), now_millis());
        let mut state = self.lock();
        for &(published, key, fingerprint, partition, offset) in &readings {
            let age = Duration::from_millis(u64::try_from(now_ms - published).unwrap_or(0));
            let at = now.checked_sub(age).unwrap_or(now);
            self.remember(&mut state, key, fingerprint, (partition, offset), at);
        }
        Ok(readings.len())
    }
}

impl Ticket {
    /// Records the outcome: an acknowledged reading is remembered; a failed one is
    /// forgotten, so its re-send is published. Waiters are released either way.
    pub(crate) fn finish(mut self, result: &dho_publisher::Result<Receipt>) {
        self.finished = true;
        let recent = self.recent.clone();
        let mut state = recent.lock();
        match result {
            Ok(receipt) => recent.remember(
                &mut state,
                self.key,
                self.fingerprint,
                (receipt.partition, receipt.offset),
                Instant::now(),
            ),
            Err(_) => {
                state.slots.remove(&self.key);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.recent.lock();
            if matches!(state.slots.get(&self.key), Some(Slot::InFlight(_))) {
                state.slots.remove(&self.key);
            }
        }
    }
}

/// The key of a reading with a source id, sent by `platform`.
fn key(event: &Ingested, platform: &OrganisationIdentifier) -> Option<Key> {
    let (kind, source_id) = match event {
        Ingested::Measurement(m) => (Kind::Measurement, m.source_id.as_deref()?),
        Ingested::SelfReport(r) => (Kind::SelfReport, r.source_id.as_deref()?),
    };
    Some(Key {
        kind,
        event_id: derived_event_id(platform, kind, source_id),
    })
}

/// A digest of everything in the reading but the gateway's receive time.
fn fingerprint(event: &Ingested) -> Fingerprint {
    let json = match event {
        Ingested::Measurement(m) => serde_json::to_vec(&Measurement {
            received_time: 0,
            ..m.clone()
        }),
        Ingested::SelfReport(r) => serde_json::to_vec(&SelfReport {
            received_time: 0,
            ..r.clone()
        }),
    };
    let digest = Sha256::digest(json.unwrap_or_default());
    let mut out = [0; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// One record read back.
struct Tail {
    partition: i32,
    offset: i64,
    timestamp: Millis,
    value: Vec<u8>,
}

/// The last records of `topic` (about `capacity` over all partitions) written since
/// `since`.
fn tail(
    settings: &KafkaSettings,
    topic: &str,
    capacity: usize,
    since: Millis,
) -> dho_kafka::Result<Vec<Tail>> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let consumer: BaseConsumer = settings
        .client_config(&[
            ("group.id", "dho-ingest-resend-memory"),
            ("enable.auto.commit", "false"),
        ])?
        .create()?;
    let partitions = dho_kafka::partition_ids(&consumer, topic, TIMEOUT)?;
    let per_partition =
        i64::try_from(capacity.div_ceil(partitions.len().max(1))).unwrap_or(i64::MAX);
    let mut list = TopicPartitionList::new();
    let mut remaining = HashMap::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
        if high > low {
            let start = low.max(high.saturating_sub(per_partition));
            list.add_partition_offset(topic, partition, Offset::Offset(start))?;
            remaining.insert(partition, high);
        }
    }
    let mut out = vec![];
    if remaining.is_empty() {
        return Ok(out);
    }
    consumer.assign(&list)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(dho_kafka::Error::Topic {
                topic: topic.to_string(),
                detail: "reading back its recent records took over a minute".into(),
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let partition = message.partition();
        if remaining
            .get(&partition)
            .is_some_and(|high| message.offset() + 1 >= *high)
        {
            remaining.remove(&partition);
        }
        let timestamp = message.timestamp().to_millis().unwrap_or(0);
        if let Some(value) = message.payload()
            && timestamp >= since
        {
            out.push(Tail {
                partition,
                offset: message.offset(),
                timestamp,
                value: value.to_vec(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;

    fn recent(capacity: usize, window: Duration) -> Recent {
        Recent::new(
            &KafkaSettings::new("localhost:9092", "http://localhost:8081"),
            capacity,
            window,
        )
    }

    fn reading(source_id: &str, value: f64) -> Ingested {
        let mut m = fixtures::spo2(&fixtures::patient(1), value, 1_700_000_000_000);
        m.source_id = Some(source_id.into());
        Ingested::Measurement(m)
    }

    fn receipt(offset: i64) -> dho_publisher::Result<Receipt> {
        Ok(Receipt {
            topic: "dho.measurements".into(),
            partition: 2,
            offset,
        })
    }

    fn publish(recent: &Recent, event: &Ingested, offset: i64) {
        match recent.claim(event, &fixtures::platform()) {
            Some(Claim::Publish(ticket)) => ticket.finish(&receipt(offset)),
            _ => panic!("expected to publish"),
        }
    }

    fn answered(recent: &Recent, event: &Ingested) -> Option<i64> {
        match recent.claim(event, &fixtures::platform()) {
            Some(Claim::Answered(r)) => Some(r.offset),
            _ => None,
        }
    }

    #[test]
    fn a_resend_is_answered_with_the_original_and_anything_else_is_published() {
        let recent = recent(10, Duration::from_secs(60));
        let a = reading("obs-1", 95.0);
        publish(&recent, &a, 7);
        // The same reading, received again later: the original acknowledgement.
        let mut again = a.clone();
        if let Ingested::Measurement(m) = &mut again {
            m.received_time += 5_000;
        }
        assert_eq!(answered(&recent, &again), Some(7));
        // Another source id, or the same one with other content, or from another
        // platform: published.
        assert!(answered(&recent, &reading("obs-2", 95.0)).is_none());
        assert!(answered(&recent, &reading("obs-1", 94.0)).is_none());
        assert!(matches!(
            recent.claim(&a, &fixtures::gp()),
            Some(Claim::Publish(_))
        ));
        // No source id: nothing to recognise.
        let mut anonymous = a.clone();
        if let Ingested::Measurement(m) = &mut anonymous {
            m.source_id = None;
        }
        assert!(recent.claim(&anonymous, &fixtures::platform()).is_none());
    }

    #[test]
    fn a_resend_during_the_original_waits_and_a_failed_one_is_forgotten() {
        let recent = recent(10, Duration::from_secs(60));
        let a = reading("obs-1", 95.0);
        let Some(Claim::Publish(ticket)) = recent.claim(&a, &fixtures::platform()) else {
            panic!("expected to publish");
        };
        let Some(Claim::Wait(waiting)) = recent.claim(&a, &fixtures::platform()) else {
            panic!("expected to wait");
        };
        assert!(waiting.has_changed().is_ok(), "still in flight");
        ticket.finish(&Err(dho_publisher::Error::Backpressure));
        assert!(waiting.has_changed().is_err(), "released");
        // The failed one left nothing: the re-send is published, and a dropped ticket
        // leaves nothing either.
        let Some(Claim::Publish(ticket)) = recent.claim(&a, &fixtures::platform()) else {
            panic!("expected to publish");
        };
        drop(ticket);
        publish(&recent, &a, 3);
        assert_eq!(answered(&recent, &a), Some(3));
    }

    #[test]
    fn the_memory_forgets_the_oldest_beyond_its_capacity_and_window() {
        let recent = recent(2, Duration::from_secs(60));
        let readings: Vec<Ingested> = (0..3).map(|i| reading(&format!("obs-{i}"), 95.0)).collect();
        for (offset, r) in readings.iter().enumerate() {
            publish(&recent, r, offset as i64);
        }
        assert_eq!(recent.len(), 2);
        assert!(answered(&recent, &readings[0]).is_none(), "forgotten");
        assert_eq!(answered(&recent, &readings[2]), Some(2));

        let recent = self::recent(10, Duration::from_millis(30));
        publish(&recent, &readings[0], 0);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            answered(&recent, &readings[0]).is_none(),
            "out of the window"
        );

        let off = self::recent(0, Duration::from_secs(60));
        assert!(off.claim(&readings[0], &fixtures::platform()).is_none());
    }
}
