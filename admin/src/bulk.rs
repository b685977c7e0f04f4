//! `dho-admin apply --file changes.jsonl`: many changes through one connection. Each line
//! is one [`Change`]; each line's outcome is reported as a JSON line on stdout, a bad line
//! is named by its number and stops nothing, and a summary line gives the counts and the
//! time taken (connecting once, then each change).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use dho_kafka::KafkaSettings;
use dho_publisher::Publisher;
use dho_schemas::Policy;
use serde_json::{Value, json};

use crate::change::Change;

/// What a bulk run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub applied: usize,
    pub failed: usize,
}

/// Applies every change in `file` (`-`: standard input) in order, printing one outcome
/// line per change and a summary line.
pub async fn apply_file(
    settings: &KafkaSettings,
    policy: Policy,
    file: &Path,
    operator: &str,
) -> anyhow::Result<Summary> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let started = Instant::now();
    let publisher = Publisher::connect(settings, policy).await?;
    let connected = started.elapsed();
    let mut summary = Summary::default();
    let changes_started = Instant::now();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let outcome = match apply_line(&publisher, policy, line, operator).await {
            Ok((done, receipt)) => {
                summary.applied += 1;
                json!({"line": number, "ok": true, "done": done,
                       "partition": receipt.partition, "offset": receipt.offset})
            }
            Err(e) => {
                summary.failed += 1;
                json!({"line": number, "ok": false, "error": format!("{e:#}")})
            }
        };
        println!("{outcome}");
    }
    let changes = changes_started.elapsed();
    let count = summary.applied + summary.failed;
    let per_change_ms = if count == 0 {
        0.0
    } else {
        changes.as_secs_f64() * 1000.0 / count as f64
    };
    println!(
        "{}",
        json!({"summary": {
            "applied": summary.applied,
            "failed": summary.failed,
            "connect_ms": connected.as_millis() as u64,
            "changes_ms": changes.as_millis() as u64,
            "per_change_ms": (per_change_ms * 10.0).round() / 10.0,
        }})
    );
    Ok(summary)
}

async fn apply_line(
    publisher: &Publisher,
    policy: Policy,
    line: &str,
    operator: &str,
) -> anyhow::Result<(String, dho_publisher::Receipt)> {
    let change = parse_line(line)?;
    let checked = change.check(policy)?;
    checked.apply(publisher, operator).await
}

/// One line of a bulk file. The error names the field and what was wrong, never a value
/// (a value in the wrong place may be a patient number).
pub fn parse_line(line: &str) -> anyhow::Result<Change> {
    let json: Value =
        serde_json::from_str(line).map_err(|e| anyhow::anyhow!("malformed JSON: {e}"))?;
    serde_path_to_error::deserialize(&json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let names_a_key = ["unknown field", "unknown variant", "missing field"]
            .iter()
            .any(|start| inner.starts_with(start));
        let what = if names_a_key {
            inner
        } else if let Some(at) = inner.find("expected") {
            inner[at..].to_string()
        } else {
            "wrong JSON type".into()
        };
        anyhow::anyhow!("not a change at '{path}': {what}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_the_change_and_wrong_lines_name_the_problem() {
        let grant = r#"{"op": "grant", "patient": "x", "recipient": "y", "recorded_by": "z"}"#;
        assert!(matches!(parse_line(grant).unwrap(), Change::Grant(_)));
        let sub =
            r#"{"op": "subscribe", "patient": "x", "subscriber": "gp", "subscriber_org": "y"}"#;
        assert!(matches!(parse_line(sub).unwrap(), Change::Subscribe(_)));
        let typo = r#"{"op": "grant", "patient": "x", "recipent": "y", "recorded_by": "z"}"#;
        let err = parse_line(typo).unwrap_err().to_string();
        assert!(err.contains("recipent"), "{err}");
        let unknown = parse_line(r#"{"op": "grnat"}"#).unwrap_err().to_string();
        assert!(unknown.contains("grnat"), "{unknown}");
        // A number where a string belongs: named by its place, not its value.
        let wrong =
            r#"{"op": "revoke", "patient": 12345678901, "consent_id": "c", "recorded_by": "z"}"#;
        let err = parse_line(wrong).unwrap_err().to_string();
        assert!(!err.contains("12345678901"), "{err}");
        assert!(parse_line("{not json").is_err());
    }
}
