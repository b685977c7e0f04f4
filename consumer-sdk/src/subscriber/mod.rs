//! The subscriber: connect, receive typed deliveries, hand them to the application, commit.

mod context;
mod park;
mod start;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dho_kafka::outage::Outage;
use dho_kafka::{AvroSerde, TopicSpec};
use dho_schemas::Delivery;
use dho_schemas::model::now_millis;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::info;

use crate::events::{
    AfterFailure, DeliveryHandled, DeliveryParked, DuplicateDropped, HandedOver, HandlerFailed,
};
use crate::metrics::reasons;
use crate::{
    Dedup, DedupStore, Error, FailurePolicy, MemoryStore, Result, SqliteStore, StartFrom,
    SubscriberConfig,
};
use context::SubscriberContext;
use dho_telemetry::InternalEvent;
use park::{Failure, Parking, RawRecord};

/// One delivery, decoded, with where it sits on the subscriber topic.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope and its one payload ([`Delivery::payload`]).
    pub delivery: Delivery,
    pub partition: i32,
    pub offset: i64,
    /// The broker timestamp in milliseconds since the epoch, if the record has one.
    pub timestamp: Option<i64>,
    raw: Arc<RawRecord>,
}

impl Received {
    /// What the delivery is: new, or a retraction or correction of an earlier delivery to
    /// this subscriber (see [`DeliveryKind`](dho_schemas::model::DeliveryKind)).
    pub fn kind(&self) -> dho_schemas::model::DeliveryKind<'_> {
        self.delivery.kind()
    }

    /// A received delivery without a raw record, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(delivery: Delivery) -> Self {
        Self {
            delivery,
            partition: 0,
            offset: 0,
            timestamp: None,
            raw: Arc::new(RawRecord {
                key: None,
                payload: None,
            }),
        }
    }
}

/// A connected subscriber.
pub struct Subscriber {
    config: SubscriberConfig,
    consumer: Arc<StreamConsumer<SubscriberContext>>,
    serde: AvroSerde,
    topic: String,
    store: Box<dyn DedupStore>,
    parking: Option<Parking>,
    /// The next offset to commit per partition, kept for the final synchronous commit.
    handled: BTreeMap<i32, i64>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic)
            .field("group_id", &self.config.group_id)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Connects with the duplicate store `config.dedup` names.
    pub async fn connect(config: SubscriberConfig) -> Result<Self> {
        Self::prepare(&config).await?;
        let store: Box<dyn DedupStore> = match &config.dedup {
            Dedup::Memory { window } => Box::new(MemoryStore::new(*window)),
            Dedup::Sqlite { path, keep } => {
                let path = path.clone().unwrap_or_else(|| config.default_dedup_path());
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Error::Config(format!(
                            "the duplicate store's directory {}: {e}",
                            dir.display()
                        ))
                    })?;
                }
                let keep = match keep {
                    Some(keep) => Some(*keep),
                    None => dho_kafka::topic_retention(&config.kafka, &config.topic()).await?,
                };
                info!(path = %path.display(), keep_secs = keep.map(|k| k.as_secs()), "duplicate store");
                Box::new(SqliteStore::open(&path)?.keep_for(keep)?)
            }
        };
        Self::start(config, store).await
    }

    /// Connects with an application-provided duplicate store.
    pub async fn connect_with_store(
        config: SubscriberConfig,
        store: Box<dyn DedupStore>,
    ) -> Result<Self> {
        Self::prepare(&config).await?;
        Self::start(config, store).await
    }

    /// Checks the configuration and makes the topics the subscriber reads and parks to.
    async fn prepare(config: &SubscriberConfig) -> Result<()> {
        config.validate()?;
        let topic = config.topic();
        let partitions = config.kafka.partitions;
        // The router creates the topic on its first delivery; creating it here too lets a
        // subscriber start first.
        let mut specs = vec![TopicSpec::output(topic.clone(), partitions, None)];
        if config.failure_policy == FailurePolicy::Park {
            specs.push(TopicSpec::output(config.dlq_topic(), partitions, None));
        }
        dho_kafka::ensure_topics(&config.kafka, &specs).await?;
        if let StartFrom::Timestamp(millis) = config.start_from {
            let (settings, group, topic) =
                (config.kafka.clone(), config.group_id.clone(), topic.clone());
            tokio::task::spawn_blocking(move || {
                start::seed_timestamp(&settings, &group, &topic, millis)
            })
            .await
            .map_err(|e| Error::Config(format!("backfill task: {e}")))??;
        }
        Ok(())
    }

    /// Joins the group with `store` as the duplicate store.
    async fn start(config: SubscriberConfig, store: Box<dyn DedupStore>) -> Result<Self> {
        let topic = config.topic();
        let statistics_ms = config.statistics_interval.as_millis().to_string();
        let consumer: StreamConsumer<SubscriberContext> = config
            .kafka
            .client_config_tuned(
                &[
                    ("group.id", config.group_id.as_str()),
                    ("enable.auto.commit", "false"),
                    ("enable.auto.offset.store", "false"),
                    (
                        "auto.offset.reset",
                        start::auto_offset_reset(config.start_from),
                    ),
                    // Only committed records when the router runs with transactions.
                    ("isolation.level", "read_committed"),
                    ("statistics.interval.ms", statistics_ms.as_str()),
                ],
                // An alert should reach the care service at once, and a backlog after an
                // outage should not stall (see FETCH_PROMPTLY).
                dho_kafka::FETCH_PROMPTLY,
            )?
            .create_with_context(SubscriberContext::new(&config.group_id))?;
        consumer.subscribe(&[&topic])?;
        let parking = match config.failure_policy {
            FailurePolicy::Park => Some(Parking::new(&config.kafka, config.dlq_topic())?),
            FailurePolicy::Stop => None,
        };
        info!(topic = %topic, group = %config.group_id, "subscriber connected");
        Ok(Self {
            serde: AvroSerde::new(&config.kafka.schema_registry_url),
            config,
            consumer: Arc::new(consumer),
            topic,
            store,
            parking,
            handled: BTreeMap::new(),
        })
    }

    /// The next delivery not handled before. Duplicates are committed and dropped here;
    /// under [`FailurePolicy::Park`] undecodable records are parked and committed here.
    pub async fn next(&mut self) -> Result<Received> {
        let mut broker_down = Outage::new("deliveries");
        loop {
            // librdkafka reconnects by itself: a broker outage is waited out here, never
            // handed to the application as a reason to stop.
            let message = match self.consumer.recv().await {
                Ok(message) => message,
                Err(e) => {
                    // A short pause, not none: librdkafka can hand back error events at
                    // once, and a loop that never waits starves the runtime.
                    if !dho_kafka::outage::is_transient(&e) {
                        return Err(e.into());
                    }
                    tokio::time::sleep(broker_down.event_pause(&e)).await;
                    continue;
                }
            };
            let (partition, offset) = (message.partition(), message.offset());
            let raw = RawRecord {
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
            };
            let timestamp = message.timestamp().to_millis();
            drop(message);
            let decoded =
                decode_waiting(&self.serde, raw.payload.as_deref().unwrap_or_default()).await;
            let delivery: Delivery = match decoded {
                Ok(delivery) => delivery,
                Err(e) => {
                    let Some(parking) = &self.parking else {
                        return Err(Error::Undecodable {
                            partition,
                            offset,
                            detail: e.to_string(),
                        });
                    };
                    let failure = Failure {
                        reason: reasons::UNDECODABLE,
                        detail: e.to_string(),
                        attempts: 0,
                        delivery_id: None,
                    };
                    parking
                        .park(&raw, &self.topic, partition, offset, &failure)
                        .await?;
                    DeliveryParked {
                        reason: failure.reason,
                        partition,
                        offset,
                    }
                    .emit();
                    self.commit_position(partition, offset)?;
                    continue;
                }
            };
            if self.store.contains(&delivery.delivery_id)? {
                DuplicateDropped { partition, offset }.emit();
                self.commit_position(partition, offset)?;
                continue;
            }
            HandedOver {
                delivery: &delivery,
                now: now_millis(),
            }
            .emit();
            return Ok(Received {
                delivery,
                partition,
                offset,
                timestamp,
                raw: Arc::new(raw),
            });
        }
    }

    /// Marks a delivery handled: its id goes into the duplicate store (durably, for a
    /// durable store), then its offset is committed.
    pub fn commit(&mut self, received: &Received) -> Result<()> {
        self.store.insert(&received.delivery.delivery_id)?;
        self.commit_position(received.partition, received.offset)
    }

    /// Parks a delivery the application cannot handle on the subscriber's `.dlq` topic
    /// (waiting for the acknowledgement), then marks it handled and commits it. Fails with
    /// a configuration error unless the policy is [`FailurePolicy::Park`].
    pub async fn park(&mut self, received: &Received, detail: &str) -> Result<()> {
        self.park_failed(received, detail.to_string(), 0).await
    }

    async fn park_failed(
        &mut self,
        received: &Received,
        detail: String,
        attempts: u32,
    ) -> Result<()> {
        let Some(parking) = &self.parking else {
            return Err(Error::Config(
                "parking needs failure_policy = Park (it creates the .dlq topic)".into(),
            ));
        };
        let failure = Failure {
            reason: reasons::HANDLER_FAILED,
            detail,
            attempts,
            delivery_id: Some(&received.delivery.delivery_id),
        };
        parking
            .park(
                &received.raw,
                &self.topic,
                received.partition,
                received.offset,
                &failure,
            )
            .await?;
        DeliveryParked {
            reason: failure.reason,
            partition: received.partition,
            offset: received.offset,
        }
        .emit();
        // A parked delivery has had its one outcome: a replayed copy is a duplicate.
        self.commit(received)
    }

    fn commit_position(&mut self, partition: i32, offset: i64) -> Result<()> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, partition, Offset::Offset(offset + 1))?;
        // Asynchronous: a commit lost in a crash only means the delivery is read again
        // and dropped as a duplicate.
        self.consumer.commit(&list, CommitMode::Async)?;
        self.handled.insert(partition, offset + 1);
        Ok(())
    }

    /// Hands every new delivery to `handler`, committing after it succeeded. A failing
    /// handler is retried with backoff; after the last attempt the failure policy applies:
    /// [`FailurePolicy::Stop`] returns [`Error::HandlerFailed`] with the delivery
    /// uncommitted, [`FailurePolicy::Park`] parks it and goes on. Returns Ok when
    /// `shutdown` completes (a delivery in retry stays uncommitted and comes again).
    pub async fn run<H, F, E>(
        mut self,
        mut handler: H,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()>
    where
        H: FnMut(Received) -> F,
        F: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut shutdown = std::pin::pin!(shutdown);
        'deliveries: loop {
            let received = tokio::select! {
                _ = &mut shutdown => break,
                received = self.next() => received?,
            };
            let mut backoff = self.config.retry_backoff;
            let mut attempt = 1;
            loop {
                let started = Instant::now();
                let error = match handler(received.clone()).await {
                    Ok(()) => {
                        DeliveryHandled {
                            elapsed: started.elapsed(),
                        }
                        .emit();
                        self.commit(&received)?;
                        break;
                    }
                    Err(e) => e,
                };
                if attempt < self.config.handler_attempts {
                    HandlerFailed {
                        elapsed: started.elapsed(),
                        next: AfterFailure::Retry,
                        attempt,
                        error: &error,
                    }
                    .emit();
                    tokio::select! {
                        _ = &mut shutdown => break 'deliveries,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_retry_backoff);
                    attempt += 1;
                    continue;
                }
                match self.config.failure_policy {
                    FailurePolicy::Stop => {
                        HandlerFailed {
                            elapsed: started.elapsed(),
                            next: AfterFailure::Stop,
                            attempt,
                            error: &error,
                        }
                        .emit();
                        self.final_commit();
                        return Err(Error::HandlerFailed {
                            delivery_id: received.delivery.delivery_id.clone(),
                            attempts: attempt,
                            detail: error.to_string(),
                        });
                    }
                    FailurePolicy::Park => {
                        HandlerFailed {
                            elapsed: started.elapsed(),
                            next: AfterFailure::Park,
                            attempt,
                            error: &error,
                        }
                        .emit();
                        self.park_failed(&received, error.to_string(), attempt)
                            .await?;
                        break;
                    }
                }
            }
        }
        self.final_commit();
        Ok(())
    }

    /// Commits what was handled, synchronously, before the consumer leaves the group.
    fn final_commit(&mut self) {
        if self.handled.is_empty() {
            return;
        }
        // Only partitions still owned: another instance may be ahead on the others.
        let owned = self.consumer.assignment().unwrap_or_default();
        let mut list = TopicPartitionList::new();
        for (&partition, &next) in &self.handled {
            if owned.find_partition(&self.topic, partition).is_some() {
                let _ = list.add_partition_offset(&self.topic, partition, Offset::Offset(next));
            }
        }
        if list.count() == 0 {
            return;
        }
        // Bounded: a broker that is down would keep a stopping subscriber waiting for ever.
        if let Err(e) =
            dho_kafka::outage::commit_within(&self.consumer, list, Duration::from_secs(10))
        {
            // Not fatal: the deliveries come again and are dropped as duplicates.
            tracing::warn!(error = %e, "final offset commit failed");
        }
    }
}

/// Decodes a delivery, waiting while the registry is unreachable: the registry being
/// down is no reason to park a good record, nor to stop.
async fn decode_waiting(serde: &AvroSerde, payload: &[u8]) -> Result<Delivery, dho_kafka::Error> {
    let mut registry_down = Outage::new("the schema registry, to decode a delivery");
    loop {
        match serde.decode(payload).await {
            Err(e) if e.is_retriable() => tokio::time::sleep(registry_down.pause_after(&e)).await,
            other => return other,
        }
    }
}
