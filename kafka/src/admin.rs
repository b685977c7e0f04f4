use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::{Error, KafkaSettings, Result};

/// One topic the hub needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Compacted (latest value per key) rather than deleted after retention.
    pub compact: bool,
    /// Retention, for delete topics; `None` keeps the broker default.
    pub retention_ms: Option<i64>,
    /// Part of the co-partitioned input set: an existing topic with another partition
    /// count is an error, not something to live with.
    pub co_partitioned: bool,
}

impl TopicSpec {
    pub fn events(name: String, partitions: i32) -> Self {
        Self {
            name,
            partitions,
            compact: false,
            retention_ms: None,
            co_partitioned: true,
        }
    }

    pub fn state(name: String, partitions: i32) -> Self {
        Self {
            compact: true,
            ..Self::events(name, partitions)
        }
    }

    pub fn output(name: String, partitions: i32, retention_ms: Option<i64>) -> Self {
        Self {
            retention_ms,
            co_partitioned: false,
            ..Self::events(name, partitions)
        }
    }
}

/// Audit records are kept long: Norwegian health law requires the disclosure log to be
/// available to the patient for years (ten years here). Consent, subscription and care-plan
/// changes and redriven dead letters are kept as long as the disclosures they explain.
const AUDIT_RETENTION_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// Every topic the hub itself owns (per-subscriber delivery topics are created on demand).
///
/// The audit topics (disclosures; consent, subscription, care-plan and enrolment changes;
/// redrives; refused requests; operators' reviews) are history, not state: every record is
/// kept for the retention, never compacted (compaction would keep one change per key and
/// lose who changed what before).
pub fn hub_topics(settings: &KafkaSettings) -> Vec<TopicSpec> {
    let t = settings.topics();
    let n = settings.partitions;
    vec![
        TopicSpec::events(t.measurements(), n),
        TopicSpec::events(t.selfreports(), n),
        TopicSpec::state(t.consents(), n),
        TopicSpec::state(t.subscriptions(), n),
        TopicSpec::state(t.careplans(), n),
        TopicSpec::state(t.alert_state(), n),
        TopicSpec::state(t.enrolments(), n),
        TopicSpec::output(t.audit(), n, Some(AUDIT_RETENTION_MS)),
        TopicSpec::output(t.consent_audit(), n, Some(AUDIT_RETENTION_MS)),
        TopicSpec::output(t.careplan_audit(), n, Some(AUDIT_RETENTION_MS)),
        TopicSpec::output(t.subscription_audit(), n, Some(AUDIT_RETENTION_MS)),
        TopicSpec::output(t.redrive_audit(), n, Some(AUDIT_RETENTION_MS)),
        TopicSpec::output(t.enrolment_audit(), n, Some(AUDIT_RETENTION_MS)),
        TopicSpec::output(t.refusal_audit(), n, Some(AUDIT_RETENTION_MS)),
        TopicSpec::output(t.operator_audit(), n, Some(AUDIT_RETENTION_MS)),
        TopicSpec::output(t.deadletter(), n, None),
    ]
}

/// Creates the topics that do not exist yet and checks co-partitioning of those that do. A
/// topic the broker's ACLs keep this principal from creating is checked if it may see it and
/// skipped if not (it may not use it either); missing, it is an error.
pub async fn ensure_topics(settings: &KafkaSettings, specs: &[TopicSpec]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config(&[])?.create()?;
    let retention: Vec<String> = specs
        .iter()
        .map(|s| s.retention_ms.map(|r| r.to_string()).unwrap_or_default())
        .collect();
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&retention)
        .map(|(spec, retention)| {
            let mut topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(-1))
                .set(
                    "cleanup.policy",
                    if spec.compact { "compact" } else { "delete" },
                );
            if !retention.is_empty() {
                topic = topic.set("retention.ms", retention);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    // Topics the broker's ACLs do not let this principal create: another's to make.
    let mut not_ours = Vec::new();
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, RDKafkaErrorCode::TopicAuthorizationFailed)) => not_ours.push(topic),
            Err((topic, code)) => {
                return Err(Error::Topic {
                    topic,
                    detail: format!("could not be created: {code}"),
                });
            }
        }
    }
    for spec in specs {
        let actual = if not_ours.contains(&spec.name) {
            match visible_partition_count(settings, &spec.name).await? {
                Visible::Partitions(n) => n,
                // Nothing this principal may use either: the broker refuses it any access.
                Visible::Hidden => continue,
                Visible::Missing => {
                    return Err(Error::Topic {
                        topic: spec.name.clone(),
                        detail: "does not exist, and the broker's ACLs do not let this \
                                 principal create it"
                            .into(),
                    });
                }
            }
        } else {
            created_partition_count(settings, &spec.name).await?
        };
        if spec.co_partitioned && actual != spec.partitions {
            return Err(Error::PartitionMismatch {
                topic: spec.name.clone(),
                expected: spec.partitions,
                actual,
            });
        }
    }
    Ok(())
}

/// The partition count of a topic just created: Apache Kafka answers CreateTopics once its
/// controller has the topic, and its brokers learn of it a moment later, so metadata may
/// still say "unknown" for a while.
async fn created_partition_count(settings: &KafkaSettings, topic: &str) -> Result<i32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match partition_count(settings, topic).await {
            Err(Error::Topic { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// What metadata tells this principal of a topic.
enum Visible {
    Partitions(i32),
    /// The broker's ACLs hide it from this principal.
    Hidden,
    Missing,
}

async fn visible_partition_count(settings: &KafkaSettings, topic: &str) -> Result<Visible> {
    let consumer: BaseConsumer = settings.client_config(&[])?.create()?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(Visible::Missing);
        };
        Ok(match found.error().map(RDKafkaErrorCode::from) {
            None if !found.partitions().is_empty() => {
                Visible::Partitions(found.partitions().len() as i32)
            }
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Visible::Hidden,
            _ => Visible::Missing,
        })
    })
    .await
    .map_err(|e| Error::Config(format!("metadata task failed: {e}")))?
}

/// The partition count of an existing topic.
pub async fn partition_count(settings: &KafkaSettings, topic: &str) -> Result<i32> {
    let consumer: BaseConsumer = settings.client_config(&[])?.create()?;
    let topic = topic.to_string();
    // Metadata calls block; keep them off the async workers.
    tokio::task::spawn_blocking(move || {
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty());
        match found {
            Some(t) => Ok(t.partitions().len() as i32),
            None => Err(Error::Topic {
                topic,
                detail: "does not exist".into(),
            }),
        }
    })
    .await
    .map_err(|e| Error::Config(format!("metadata task failed: {e}")))?
}

/// How long the broker keeps `topic`'s records (`retention.ms`); None if forever.
pub async fn topic_retention(settings: &KafkaSettings, topic: &str) -> Result<Option<Duration>> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config(&[])?.create()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let unreadable = |detail: String| Error::Topic {
        topic: topic.to_string(),
        detail,
    };
    let results = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
        .await?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| unreadable("the broker described no configuration".into()))?
        .map_err(|code| unreadable(format!("its configuration could not be read: {code}")))?;
    let value = resource
        .get("retention.ms")
        .and_then(|entry| entry.value.as_deref())
        .ok_or_else(|| unreadable("its configuration names no retention.ms".into()))?;
    let millis: i64 = value
        .parse()
        .map_err(|_| unreadable(format!("its retention.ms {value:?} is not a number")))?;
    Ok(u64::try_from(millis).ok().map(Duration::from_millis))
}

/// The partition ids of `topic` (none if it does not exist), from the metadata `consumer`
/// fetches. Blocks for up to `timeout`.
pub fn partition_ids<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<Vec<i32>> {
    Ok(consumer
        .fetch_metadata(Some(topic), timeout)?
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Checks topics provisioned by operators, creating nothing: each must exist, and a
/// co-partitioned one must have the expected partition count. Needs only metadata access
/// (no CreateTopics right, no controller), so it works where creation is not allowed.
pub async fn check_topics(settings: &KafkaSettings, specs: &[TopicSpec]) -> Result<()> {
    for spec in specs {
        let actual = partition_count(settings, &spec.name)
            .await
            .map_err(|e| match e {
                Error::Topic { topic, .. } => Error::Topic {
                    topic,
                    detail: "does not exist, and creating topics is off".into(),
                },
                other => other,
            })?;
        if spec.co_partitioned && actual != spec.partitions {
            return Err(Error::PartitionMismatch {
                topic: spec.name.clone(),
                expected: spec.partitions,
                actual,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_topics_are_hub_topics_kept_ten_years_and_never_compacted() {
        let mut settings = KafkaSettings::new("localhost:9092", "http://localhost:8081");
        settings.topic_prefix = "x".into();
        let topics = hub_topics(&settings);
        let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
        let audit: Vec<&TopicSpec> = topics
            .iter()
            .filter(|t| t.name.starts_with("x.audit"))
            .collect();
        assert_eq!(
            audit.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            [
                "x.audit",
                "x.audit.consents",
                "x.audit.careplans",
                "x.audit.subscriptions",
                "x.audit.redrives",
                "x.audit.enrolments",
                "x.audit.refusals",
                "x.audit.operator"
            ],
            "{names:?}"
        );
        for topic in audit {
            assert!(
                !topic.compact,
                "{}: compaction would lose history",
                topic.name
            );
            assert_eq!(
                topic.retention_ms,
                Some(AUDIT_RETENTION_MS),
                "{}",
                topic.name
            );
            assert_eq!(topic.partitions, settings.partitions, "{}", topic.name);
        }
    }
}
