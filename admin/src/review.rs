//! `dho-admin changes` and `dho-admin undo`: what one gateway credential changed in
//! patients' consent lately, and putting it back (a credential found stolen, or misused).
//!
//! Both read the consent audit (`<prefix>.audit.consents`, every change with its
//! principal) and write their own audit record on `<prefix>.audit.operator`: who looked
//! at or undid which credential's changes, when, and how many. Undo writes each directive
//! back as it was before the credential's first change in the window (or deletes it if
//! the credential made it), through the publisher, so every put-back is itself a consent
//! change audited with channel `admin-undo`. A directive someone else changed after the
//! credential is left alone and listed: undoing it would undo their change too.

use std::collections::BTreeMap;

use anyhow::Context;
use dho_kafka::{AvroSerde, KafkaSettings};
use dho_publisher::state::read_to_end;
use dho_publisher::{ConsentAudit, Publisher};
use dho_schemas::Policy;
use dho_schemas::ids;
use dho_schemas::model::*;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::json;

/// Which changes: one credential's, over the last minutes.
#[derive(Debug, Clone, clap::Args)]
pub struct Window {
    /// The gateway credential's name (as in the gateway's config and the audit records'
    /// `principal`).
    #[arg(long)]
    pub credential: String,
    /// How far back, in minutes.
    #[arg(long, default_value_t = 1440)]
    pub since_minutes: u64,
}

impl Window {
    fn since(&self) -> Millis {
        now_millis() - (self.since_minutes as Millis).saturating_mul(60_000)
    }
}

/// Every consent change in the audit, oldest first.
async fn consent_changes(settings: &KafkaSettings) -> anyhow::Result<Vec<ConsentChange>> {
    let serde = AvroSerde::new(&settings.schema_registry_url);
    let mut changes = Vec::new();
    for message in read_to_end(settings, &settings.topics().consent_audit(), None).await? {
        if let Some(bytes) = message.payload() {
            changes.push(serde.decode::<ConsentChange>(bytes).await?);
        }
    }
    changes.sort_by_key(|c| c.changed_at);
    Ok(changes)
}

fn line(change: &ConsentChange) -> serde_json::Value {
    json!({
        "change_id": change.change_id,
        "consent_id": change.consent_id,
        "patient": ids::pseudonym(&change.patient.value),
        "action": change.action,
        "changed_by": change.changed_by.value,
        "channel": change.channel,
        "changed_at": change.changed_at,
    })
}

/// Lists the credential's changes in the window, one JSON line each; returns how many.
pub async fn changes(
    settings: &KafkaSettings,
    window: &Window,
    operator: &str,
) -> anyhow::Result<usize> {
    let since = window.since();
    let all = consent_changes(settings).await?;
    let mine: Vec<&ConsentChange> = all
        .iter()
        .filter(|c| c.principal == window.credential && c.changed_at >= since)
        .collect();
    for change in &mine {
        println!("{}", line(change));
    }
    audit(settings, operator, "changes", window, mine.len(), 0).await?;
    Ok(mine.len())
}

/// What undo does to one directive.
#[derive(Debug, PartialEq)]
enum PutBack<'a> {
    /// Record this earlier version again.
    Restore(&'a Consent),
    /// The credential made it: delete it.
    Delete,
    /// Someone else changed it since: leave it.
    ChangedSince(&'a ConsentChange),
}

/// Per directive the credential changed in the window (by patient and consent id), what
/// putting it back means.
fn plan<'a>(
    all: &'a [ConsentChange],
    credential: &str,
    since: Millis,
) -> BTreeMap<(String, String), (&'a ConsentChange, PutBack<'a>)> {
    let mut plans = BTreeMap::new();
    let mut history: BTreeMap<(String, String), Vec<&ConsentChange>> = BTreeMap::new();
    for c in all {
        let key = (c.patient.value.clone(), c.consent_id.clone());
        history.entry(key).or_default().push(c);
    }
    for (key, changes) in history {
        let Some(first) = changes
            .iter()
            .position(|c| c.principal == credential && c.changed_at >= since)
        else {
            continue;
        };
        let last = changes[changes.len() - 1];
        let put_back = if last.principal != credential {
            PutBack::ChangedSince(last)
        } else {
            match changes[..first].last().and_then(|c| c.consent.as_ref()) {
                Some(earlier) => PutBack::Restore(earlier),
                None => PutBack::Delete,
            }
        };
        plans.insert(key, (changes[first], put_back));
    }
    plans
}

/// Puts back the credential's changes in the window (or lists them, `dry_run`); returns
/// how many directives were put back.
pub async fn undo(
    settings: &KafkaSettings,
    policy: Policy,
    window: &Window,
    operator: &str,
    dry_run: bool,
) -> anyhow::Result<usize> {
    let all = consent_changes(settings).await?;
    let plans = plan(&all, &window.credential, window.since());
    let publisher = if dry_run {
        None
    } else {
        Some(Publisher::connect(settings, policy).await?)
    };
    let audit_as = ConsentAudit {
        principal: operator,
        channel: "admin-undo",
    };
    let (mut undone, mut left) = (0, 0);
    for (first, put_back) in plans.values() {
        let mut out = line(first);
        match put_back {
            PutBack::ChangedSince(later) => {
                left += 1;
                out["left"] = format!(
                    "changed since by '{}' ({}); undo by hand if needed",
                    later.principal, later.changed_by.value
                )
                .into();
            }
            PutBack::Restore(earlier) => {
                out["put_back"] = "the earlier version".into();
                if let Some(p) = &publisher {
                    p.record_consent(earlier, audit_as).await?;
                    undone += 1;
                }
            }
            PutBack::Delete => {
                out["put_back"] = "deleted (the credential made it)".into();
                if let Some(p) = &publisher {
                    p.revoke_consent(
                        &first.patient,
                        &first.consent_id,
                        &first.changed_by,
                        audit_as,
                    )
                    .await?;
                    undone += 1;
                }
            }
        }
        println!("{out}");
    }
    let command = if dry_run { "undo-dry-run" } else { "undo" };
    audit(settings, operator, command, window, undone, left).await?;
    println!(
        "{}",
        json!({"summary": {"undone": undone, "left": left, "dry_run": dry_run}})
    );
    Ok(undone)
}

/// The operator's own audit record of a look or an undo.
async fn audit(
    settings: &KafkaSettings,
    operator: &str,
    command: &str,
    window: &Window,
    count: usize,
    left: usize,
) -> anyhow::Result<()> {
    let producer: FutureProducer = settings
        .client_config(&[("enable.idempotence", "true"), ("acks", "all")])?
        .create()
        .context("creating the operator-audit producer")?;
    let record = json!({
        "operator": operator,
        "command": command,
        "credential": window.credential,
        "since_minutes": window.since_minutes,
        "count": count,
        "left": left,
        "at": now_millis(),
    })
    .to_string();
    let topic = settings.topics().operator_audit();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(window.credential.as_str())
                .payload(&record),
            Timeout::After(std::time::Duration::from_secs(30)),
        )
        .await
        .map_err(|(e, _)| e)
        .context("writing the operator audit record")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;

    fn change(id: &str, principal: &str, at: Millis, consent: Option<Consent>) -> ConsentChange {
        let patient = fixtures::patient(1);
        ConsentChange {
            change_id: format!("{principal}-{at}"),
            consent_id: id.into(),
            patient,
            action: if consent.is_some() {
                ConsentAction::Recorded
            } else {
                ConsentAction::Deleted
            },
            consent,
            changed_by: fixtures::gp(),
            principal: principal.into(),
            channel: "gateway".into(),
            changed_at: at,
        }
    }

    #[test]
    fn undo_puts_back_the_version_before_the_first_change_and_leaves_later_ones() {
        let p = fixtures::patient(1);
        let v1 = fixtures::consent(&p, "a", &[fixtures::gp()]);
        let mut v2 = v1.clone();
        v2.status = ConsentStatus::Inactive;
        let all = vec![
            change("a", "portal", 10, Some(v1.clone())),
            change("a", "thief", 20, Some(v2.clone())),
            change("a", "thief", 30, None),
            change("b", "thief", 25, Some(v2.clone())),
            change("c", "thief", 26, Some(v2.clone())),
            change("c", "home-care", 27, Some(v1.clone())),
            change("d", "thief", 5, Some(v2.clone())),
        ];
        let plans = plan(&all, "thief", 15);
        let get = |id: &str| &plans[&(p.value.clone(), id.to_string())].1;
        assert_eq!(get("a"), &PutBack::Restore(&v1));
        assert_eq!(get("b"), &PutBack::Delete);
        assert!(matches!(get("c"), PutBack::ChangedSince(c) if c.principal == "home-care"));
        // Before the window: not the credential's recent change.
        assert!(!plans.contains_key(&(p.value.clone(), "d".to_string())));
    }
}
