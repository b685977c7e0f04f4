use std::time::Duration;

use dho_kafka::{AvroSerde, KafkaSettings, TopicSpec};
use dho_schemas::Delivery;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::RecentIds;

/// SDK errors, by what the caller should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fix the configuration; retrying will not help.
    #[error("configuration: {0}")]
    Config(String),
    /// The broker or registry is unavailable or refused: retry later.
    #[error(transparent)]
    Hub(#[from] dho_kafka::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A record on the subscriber topic could not be decoded: it is not skipped silently;
    /// the consumer stops at it so an operator can look.
    #[error("delivery at partition {partition} offset {offset} could not be decoded: {detail}")]
    Undecodable {
        partition: i32,
        offset: i64,
        detail: String,
    },
    /// The handler kept failing; the delivery was not committed and will come again.
    #[error("the handler failed {attempts} times on delivery {delivery_id}: {detail}")]
    HandlerFailed {
        delivery_id: String,
        attempts: u32,
        detail: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a subscriber connects.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    pub kafka: KafkaSettings,
    /// The subscriber id the hub delivers to (`<prefix>.deliver.<subscriber_id>`).
    pub subscriber_id: String,
    /// Consumer group; instances of the same system share it.
    pub group_id: String,
    /// How many times the handler is tried per delivery before `run` stops.
    pub handler_attempts: u32,
    /// Backoff before the first retry; doubles per attempt.
    pub retry_backoff: Duration,
    /// How many recent delivery ids are remembered to drop duplicates.
    pub dedup_window: usize,
}

impl SubscriberConfig {
    pub fn new(kafka: KafkaSettings, subscriber_id: impl Into<String>) -> Self {
        let subscriber_id = subscriber_id.into();
        Self {
            group_id: format!("dho-subscriber-{subscriber_id}"),
            kafka,
            subscriber_id,
            handler_attempts: 5,
            retry_backoff: Duration::from_millis(200),
            dedup_window: 100_000,
        }
    }
}

/// One delivery, decoded, with where it sits on the subscriber topic.
#[derive(Debug, Clone)]
pub struct Received {
    pub delivery: Delivery,
    pub partition: i32,
    pub offset: i64,
}

/// A connected subscriber.
pub struct Subscriber {
    config: SubscriberConfig,
    consumer: StreamConsumer,
    serde: AvroSerde,
    topic: String,
    seen: RecentIds,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    pub async fn connect(config: SubscriberConfig) -> Result<Self> {
        config.kafka.validate()?;
        dho_schemas::validate::subscriber_id(&config.subscriber_id)
            .map_err(|e| Error::Config(e.to_string()))?;
        let topic = config.kafka.topics().deliver(&config.subscriber_id);
        // The router creates the topic on its first delivery; creating it here too lets a
        // subscriber start first.
        dho_kafka::ensure_topics(
            &config.kafka,
            &[TopicSpec::output(
                topic.clone(),
                config.kafka.partitions,
                None,
            )],
        )
        .await?;
        let consumer: StreamConsumer = config
            .kafka
            .client_config(&[
                ("group.id", config.group_id.as_str()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
            ])?
            .create()?;
        consumer.subscribe(&[&topic])?;
        info!(topic = %topic, "subscriber connected");
        Ok(Self {
            serde: AvroSerde::new(&config.kafka.schema_registry_url),
            seen: RecentIds::new(config.dedup_window),
            config,
            consumer,
            topic,
        })
    }

    /// The next delivery not seen before. Duplicates are committed and skipped here.
    pub async fn next(&mut self) -> Result<Received> {
        loop {
            let message = self.consumer.recv().await?;
            let (partition, offset) = (message.partition(), message.offset());
            let bytes = message.payload().unwrap_or_default();
            let delivery: Delivery =
                self.serde
                    .decode(bytes)
                    .await
                    .map_err(|e| Error::Undecodable {
                        partition,
                        offset,
                        detail: e.to_string(),
                    })?;
            if self.seen.contains(&delivery.delivery_id) {
                self.commit_position(partition, offset)?;
                continue;
            }
            return Ok(Received {
                delivery,
                partition,
                offset,
            });
        }
    }

    /// Marks a delivery handled: its id is remembered and its offset committed.
    pub fn commit(&mut self, received: &Received) -> Result<()> {
        self.seen.insert(&received.delivery.delivery_id);
        self.commit_position(received.partition, received.offset)
    }

    fn commit_position(&self, partition: i32, offset: i64) -> Result<()> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, partition, Offset::Offset(offset + 1))?;
        self.consumer.commit(&list, CommitMode::Async)?;
        Ok(())
    }

    /// Hands every new delivery to `handler`, committing after it succeeded. A failing
    /// handler is retried with backoff; after the last attempt `run` returns the error with
    /// the delivery uncommitted, so it comes again on restart. Returns Ok on `shutdown`.
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
        loop {
            let received = tokio::select! {
                _ = &mut shutdown => break,
                received = self.next() => received?,
            };
            let mut backoff = self.config.retry_backoff;
            let mut attempt = 1;
            loop {
                match handler(received.clone()).await {
                    Ok(()) => break,
                    Err(e) if attempt >= self.config.handler_attempts => {
                        return Err(Error::HandlerFailed {
                            delivery_id: received.delivery.delivery_id.clone(),
                            attempts: attempt,
                            detail: e.to_string(),
                        });
                    }
                    Err(e) => {
                        warn!(attempt, error = %e, "handler failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        attempt += 1;
                    }
                }
            }
            self.commit(&received)?;
        }
        let _ = self.consumer.commit_consumer_state(CommitMode::Sync);
        Ok(())
    }
}
