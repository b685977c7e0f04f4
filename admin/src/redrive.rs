//! `dho-admin redrive`: sends chosen dead letters back to their source topic with their
//! original key, value and headers, so the router routes them again (after the cause was
//! fixed: a schema registered, a state record corrected).
//!
//! Safe to run twice: each redriven dead letter gets an audit record on
//! `<prefix>.audit.redrives` (who, which dead letter, where to, when) written in the same
//! Kafka transaction as the record it sends back, and a dead letter that already has one is
//! never sent again. The transactional id is fixed per topic prefix, so a second run
//! started while one is under way fences it (its transaction aborts, nothing half-done) and
//! reads the audit only after that.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail};
use dho_kafka::KafkaSettings;
use dho_schemas::ids;
use dho_schemas::model::now_millis;
use dho_schemas::partition::partition_for;
use dho_schemas::topics::{headers, patient_key};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde::{Deserialize, Serialize};

use dho_publisher::state::read_to_end;

/// The header a redriven record carries: `<dead-letter topic>/<partition>/<offset>`.
pub const REDRIVEN_FROM: &str = "dho.redrive.from";

const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Which dead letters to send back; every given condition must hold.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// Only dead letters with this reason (repeatable), e.g. `unknown_schema`.
    #[arg(long = "reason")]
    pub reasons: Vec<String>,
    /// Only dead letters from this source topic.
    #[arg(long)]
    pub source_topic: Option<String>,
    /// Only this partition of the dead-letter topic (with the offset range, as `--dry-run`
    /// lists them).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Only dead letters at or after this offset of the dead-letter topic.
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// Only dead letters at or before this offset of the dead-letter topic.
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// Only dead letters written at or after this time (milliseconds since the epoch).
    #[arg(long)]
    pub since_ms: Option<i64>,
    /// Only dead letters written before this time (milliseconds since the epoch).
    #[arg(long)]
    pub until_ms: Option<i64>,
}

/// Where a record is in a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The audit record of one redriven dead letter (JSON on `<prefix>.audit.redrives`, keyed
/// by the dead letter's position).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedriveRecord {
    pub deadletter: Position,
    pub reason: String,
    /// Where the record was when it was dead-lettered.
    pub source: Position,
    /// The partition it was sent back to (the patient's, by the hub's partitioning).
    pub target_partition: i32,
    pub principal: String,
    pub channel: String,
    pub redriven_at: i64,
}

/// One dead letter, as read.
#[derive(Debug)]
struct DeadLetter {
    message: OwnedMessage,
    reason: String,
    source: Option<Position>,
}

impl DeadLetter {
    fn new(message: OwnedMessage) -> Self {
        let header = |name: &str| {
            message.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let reason = header(headers::REASON).unwrap_or_default();
        let source = (|| {
            Some(Position {
                topic: header(headers::SOURCE_TOPIC)?,
                partition: header(headers::SOURCE_PARTITION)?.parse().ok()?,
                offset: header(headers::SOURCE_OFFSET)?.parse().ok()?,
            })
        })();
        Self {
            message,
            reason,
            source,
        }
    }

    fn position(&self) -> Position {
        Position {
            topic: self.message.topic().to_string(),
            partition: self.message.partition(),
            offset: self.message.offset(),
        }
    }

    fn selected(&self, s: &Selection) -> bool {
        let m = &self.message;
        let at = m.timestamp().to_millis().unwrap_or(0);
        (s.reasons.is_empty() || s.reasons.contains(&self.reason))
            && s.source_topic.as_ref().is_none_or(|t| {
                self.source
                    .as_ref()
                    .is_some_and(|source| &source.topic == t)
            })
            && s.partition.is_none_or(|p| m.partition() == p)
            && s.from_offset.is_none_or(|o| m.offset() >= o)
            && s.to_offset.is_none_or(|o| m.offset() <= o)
            && s.since_ms.is_none_or(|t| at >= t)
            && s.until_ms.is_none_or(|t| at < t)
    }

    /// The partition it goes back to: the patient's (murmur2 of the key's patient part,
    /// as every hub writer partitions), else where it came from.
    fn target_partition(&self, source: &Position, partitions: i32) -> i32 {
        match self.message.key() {
            Some(key) => partition_for(
                patient_key(&String::from_utf8_lossy(key)).as_bytes(),
                partitions,
            ),
            None => source.partition,
        }
    }

    /// Its original headers: the dead letter's own (`dho.deadletter.*`, `dho.source.*`)
    /// removed.
    fn original_headers(&self) -> OwnedHeaders {
        let mut out = OwnedHeaders::new();
        for h in self.message.headers().iter().flat_map(|h| h.iter()) {
            let own = h.key.starts_with("dho.deadletter.") || h.key.starts_with("dho.source.");
            if !own {
                out = out.insert(h);
            }
        }
        out
    }

    /// One line of the listing: where, why, from where, the patient as a pseudonym.
    fn describe(&self, already: bool) -> serde_json::Value {
        let patient = self
            .message
            .key()
            .map(|k| ids::pseudonym(patient_key(&String::from_utf8_lossy(k))));
        serde_json::json!({
            "deadletter": self.position(),
            "reason": self.reason,
            "source": self.source,
            "patient": patient,
            "written_at": self.message.timestamp().to_millis(),
            "already_redriven": already,
        })
    }
}

fn audit_key(position: &Position) -> String {
    format!(
        "{}/{}/{}",
        position.topic, position.partition, position.offset
    )
}

/// What a redrive did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub redriven: usize,
    pub already: usize,
    pub unredrivable: usize,
}

/// Lists (`dry_run`) or redrives the selected dead letters, one JSON line each on stdout.
pub async fn redrive(
    settings: &KafkaSettings,
    selection: &Selection,
    operator: &str,
    dry_run: bool,
) -> anyhow::Result<Outcome> {
    settings.validate()?;
    let topics = settings.topics();
    dho_kafka::ensure_topics(settings, &dho_kafka::hub_topics(settings)).await?;
    // Fence any other run first, so the audit read next is complete.
    let producer = if dry_run {
        None
    } else {
        Some(transactional_producer(settings).await?)
    };
    let done: BTreeSet<String> = read_to_end(settings, &topics.redrive_audit(), None)
        .await?
        .iter()
        .filter_map(|m| m.key().map(|k| String::from_utf8_lossy(k).into_owned()))
        .collect();
    let letters: Vec<DeadLetter> = read_to_end(settings, &topics.deadletter(), None)
        .await?
        .into_iter()
        .map(DeadLetter::new)
        .filter(|d| d.selected(selection))
        .collect();
    let mut outcome = Outcome::default();
    let mut sends = Vec::new();
    for letter in &letters {
        let already = done.contains(&audit_key(&letter.position()));
        let mut line = letter.describe(already);
        if already {
            outcome.already += 1;
        } else if letter.source.is_none() {
            outcome.unredrivable += 1;
            line["unredrivable"] = "no source topic in its headers".into();
        } else if !dry_run {
            sends.push(letter);
        }
        println!("{line}");
    }
    if let Some(producer) = producer {
        outcome.redriven = sends.len();
        send_back(producer, settings, sends, operator).await?;
    }
    println!(
        "{}",
        serde_json::json!({"summary": {
            "selected": letters.len(),
            "redriven": outcome.redriven,
            "already_redriven": outcome.already,
            "unredrivable": outcome.unredrivable,
            "dry_run": dry_run,
        }})
    );
    Ok(outcome)
}

async fn transactional_producer(settings: &KafkaSettings) -> anyhow::Result<BaseProducer> {
    let id = format!("dho-admin-redrive-{}", settings.topic_prefix);
    let producer: BaseProducer = settings
        .client_config(&[
            ("transactional.id", id.as_str()),
            ("enable.idempotence", "true"),
            ("acks", "all"),
        ])?
        .create()
        .context("creating the redrive producer")?;
    tokio::task::spawn_blocking(move || {
        producer
            .init_transactions(TRANSACTION_TIMEOUT)
            .map(|()| producer)
    })
    .await?
    .context("starting the redrive transaction (is the broker up and transactional?)")
}

/// Sends every letter back with its audit record, all in one transaction.
async fn send_back(
    producer: BaseProducer,
    settings: &KafkaSettings,
    letters: Vec<&DeadLetter>,
    operator: &str,
) -> anyhow::Result<()> {
    if letters.is_empty() {
        return Ok(());
    }
    let audit_topic = settings.topics().redrive_audit();
    let now = now_millis();
    let mut records = Vec::new();
    for letter in letters {
        let Some(source) = letter.source.clone() else {
            continue;
        };
        let position = letter.position();
        let target_partition = letter.target_partition(&source, settings.partitions);
        let audit = RedriveRecord {
            deadletter: position.clone(),
            reason: letter.reason.clone(),
            source: source.clone(),
            target_partition,
            principal: operator.to_string(),
            channel: "admin-cli".into(),
            redriven_at: now,
        };
        let from = audit_key(&position);
        let headers = letter.original_headers().insert(Header {
            key: REDRIVEN_FROM,
            value: Some(from.as_str()),
        });
        records.push((
            from,
            serde_json::to_vec(&audit)?,
            source.topic,
            target_partition,
            letter.message.key().map(<[u8]>::to_vec),
            letter.message.payload().map(<[u8]>::to_vec),
            headers,
        ));
    }
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        producer.begin_transaction()?;
        for (from, audit, topic, partition, key, payload, headers) in &records {
            let audit_record = BaseRecord::to(&audit_topic)
                .key(from.as_str())
                .payload(audit.as_slice());
            let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic)
                .partition(*partition)
                .headers(headers.clone());
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(payload) = payload {
                record = record.payload(payload);
            }
            for sent in [
                producer.send(audit_record).map_err(|(e, _)| e),
                producer.send(record).map_err(|(e, _)| e),
            ] {
                if let Err(e) = sent {
                    let _ = producer.abort_transaction(TRANSACTION_TIMEOUT);
                    bail!("queueing a redriven record: {e}");
                }
            }
            producer.poll(Duration::ZERO);
        }
        if let Err(e) = producer.commit_transaction(TRANSACTION_TIMEOUT) {
            let _ = producer.abort_transaction(TRANSACTION_TIMEOUT);
            bail!("the redrive transaction did not commit, nothing was redriven: {e}");
        }
        Ok(())
    })
    .await?
}
