//! Operator input turned into contract records, checked before anything is sent. Errors
//! name the field and the rule, never the value (it may identify the patient).

use std::path::Path;

use anyhow::{Context, bail};
use dho_schemas::model::*;
use dho_schemas::{Policy, ids};

/// A patient number, its kind told by the first digit (D-nummer 4-7, hjelpenummer 8-9).
pub fn patient(value: &str, policy: Policy) -> anyhow::Result<PatientIdentifier> {
    let system = match value.as_bytes().first() {
        Some(b'4'..=b'7') => PatientIdSystem::Dnr,
        Some(b'8'..=b'9') => PatientIdSystem::Fhn,
        _ => PatientIdSystem::Fnr,
    };
    let id = PatientIdentifier {
        system,
        value: value.trim().to_string(),
    };
    // The error names the rule, never the number.
    dho_schemas::validate::patient("patient", &id, policy).context("the patient number")?;
    Ok(id)
}

pub fn organisation(orgnr: &str, name: Option<String>) -> anyhow::Result<OrganisationIdentifier> {
    let org = OrganisationIdentifier {
        system: OrgIdSystem::Orgnr,
        value: orgnr.trim().to_string(),
        name,
    };
    dho_schemas::validate::organisation("organisation", &org)?;
    Ok(org)
}

/// Data categories by name; all of them if none is given.
pub fn categories(names: &[String]) -> anyhow::Result<Vec<DataCategory>> {
    if names.is_empty() {
        return Ok(vec![
            DataCategory::Measurement,
            DataCategory::SelfReport,
            DataCategory::Alert,
        ]);
    }
    names.iter().map(|name| category(name)).collect()
}

fn category(name: &str) -> anyhow::Result<DataCategory> {
    Ok(match name {
        "measurement" => DataCategory::Measurement,
        "self-report" | "self_report" => DataCategory::SelfReport,
        "alert" => DataCategory::Alert,
        other => bail!("unknown category '{other}' (measurement, self-report, alert)"),
    })
}

pub fn content_level(name: &str) -> anyhow::Result<ContentLevel> {
    Ok(match name {
        "full" => ContentLevel::Full,
        "minimal" => ContentLevel::Minimal,
        other => bail!("unknown content level '{other}' (full, minimal)"),
    })
}

/// A care plan from a JSON file (`-`: standard input).
pub fn care_plan_file(file: &Path, policy: Policy) -> anyhow::Result<CarePlan> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: malformed JSON: {e}", file.display()))?;
    care_plan(json, policy).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// A care plan in its native JSON form; `updated_at` defaults to now.
pub fn care_plan(mut json: serde_json::Value, policy: Policy) -> anyhow::Result<CarePlan> {
    if let Some(object) = json.as_object_mut() {
        object
            .entry("updated_at")
            .or_insert_with(|| now_millis().into());
    }
    let plan: CarePlan = serde_path_to_error::deserialize(&json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let what = inner
            .find("expected")
            .map(|at| inner[at..].to_string())
            .or_else(|| inner.starts_with("missing field").then(|| inner.clone()))
            .unwrap_or_else(|| "wrong JSON type".into());
        anyhow::anyhow!("not a care plan at '{path}': {what}")
    })?;
    plan.validate(policy)?;
    Ok(plan)
}

/// A record as a JSON line, with the patient replaced by its pseudonym.
pub fn listing<T: serde::Serialize>(record: &T, patient: &PatientIdentifier) -> String {
    let mut json = serde_json::to_value(record).unwrap_or_default();
    json["patient"] = ids::pseudonym(&patient.value).into();
    json.to_string()
}
