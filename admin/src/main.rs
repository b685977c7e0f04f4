//! `dho-admin`: the operator's command line. Grant or revoke a patient's consent (each
//! change audited on `<prefix>.audit.consents`), list a patient's current consents or a
//! subscriber's subscriptions (one JSON object per line, patients as pseudonyms), record or
//! delete a patient's care plan (self-management plan; each change audited on
//! `<prefix>.audit.careplans`) and list them, and make gateway tokens.
//!
//! Kafka settings come from `--config` (any service's TOML with a `[kafka]` table), then
//! `DHO_*` environment, then flags.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use dho_kafka::KafkaSettings;
use dho_kafka::service::KafkaArgs;
use dho_publisher::{CarePlanAudit, ConsentAudit, Publisher};
use dho_schemas::model::*;
use dho_schemas::{Policy, ids};

mod state;

#[derive(Debug, Parser)]
#[command(about = "Operate the DHO hub: consents, subscriptions, care plans, tokens")]
struct Args {
    /// A TOML file with a `[kafka]` table (the router's or the gateway's config will do).
    #[arg(long, env = "DHO_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Refuse synthetic test identities (production).
    #[arg(long, global = true)]
    refuse_synthetic: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record a consent permitting a recipient organisation (replaces one with the same id).
    Grant {
        /// The patient's fødselsnummer, D-nummer or hjelpenummer.
        #[arg(long)]
        patient: String,
        /// The recipient organisation's number.
        #[arg(long)]
        recipient: String,
        /// The recipient's name, for people reading the record.
        #[arg(long)]
        recipient_name: Option<String>,
        /// Data categories (measurement, self-report, alert); all if none is given.
        #[arg(long = "category")]
        categories: Vec<String>,
        /// The directive's id (default: a new one).
        #[arg(long)]
        consent_id: Option<String>,
        /// The legal rule.
        #[arg(long, default_value = "pbrl-5-3")]
        legal_basis: String,
        /// The care organisation recording it.
        #[arg(long)]
        recorded_by: String,
        /// Who is doing this (recorded in the audit record).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Delete a consent directive: from then on it permits nothing.
    Revoke {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        consent_id: String,
        /// The care organisation on whose behalf it is revoked.
        #[arg(long)]
        recorded_by: String,
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// The patient's current consent directives.
    Consents {
        /// The patient's number.
        patient: String,
    },
    /// The subscriber's current subscriptions.
    Subscriptions {
        /// The subscriber id (its delivery topic's suffix).
        subscriber: String,
    },
    /// Record a patient's care plan (self-management plan) from a JSON file in the native
    /// form of CarePlan; replaces the plan with the same plan_id. `updated_at` defaults to
    /// now. Checked like the gateway checks it (e.g. each yellow range holds its green one).
    CarePlan {
        /// The plan, as JSON (`-` reads standard input).
        #[arg(long)]
        file: PathBuf,
        /// Who is doing this (recorded in the audit record).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// Delete a patient's care plan (from then on it classifies nothing).
    DeleteCarePlan {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        plan_id: String,
        /// The care organisation on whose behalf it is deleted.
        #[arg(long)]
        recorded_by: String,
        /// Who is doing this (recorded in the audit record).
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
    },
    /// The patient's current care plans.
    CarePlans {
        /// The patient's number.
        patient: String,
    },
    /// Make a new gateway token and the hash that goes in the gateway's config.
    Token,
}

fn settings(args: &Args) -> anyhow::Result<KafkaSettings> {
    let mut settings = match &args.config {
        Some(path) => {
            #[derive(serde::Deserialize)]
            struct File {
                kafka: KafkaSettings,
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            // Only the [kafka] table matters here; the rest belongs to the service.
            let table: toml::Table = toml::from_str(&text)?;
            let kafka = table
                .get("kafka")
                .cloned()
                .with_context(|| format!("{} has no [kafka] table", path.display()))?;
            toml::Value::Table([("kafka".to_string(), kafka)].into_iter().collect())
                .try_into::<File>()?
                .kafka
        }
        None => KafkaSettings::new("localhost:9092", "http://localhost:8081"),
    };
    args.kafka.apply(&mut settings);
    Ok(settings)
}

/// A patient number, its kind told by the first digit (D-nummer 4-7, hjelpenummer 8-9).
fn patient(value: &str, policy: Policy) -> anyhow::Result<PatientIdentifier> {
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

fn organisation(orgnr: &str, name: Option<String>) -> anyhow::Result<OrganisationIdentifier> {
    let org = OrganisationIdentifier {
        system: OrgIdSystem::Orgnr,
        value: orgnr.trim().to_string(),
        name,
    };
    dho_schemas::validate::organisation("organisation", &org)?;
    Ok(org)
}

fn category(name: &str) -> anyhow::Result<DataCategory> {
    Ok(match name {
        "measurement" => DataCategory::Measurement,
        "self-report" | "self_report" => DataCategory::SelfReport,
        "alert" => DataCategory::Alert,
        other => bail!("unknown category '{other}' (measurement, self-report, alert)"),
    })
}

/// A care plan from a JSON file (`-`: standard input), checked before anything is sent.
/// Errors name the file's field and the rule, never the values (they may identify the
/// patient).
fn care_plan(file: &std::path::Path, policy: Policy) -> anyhow::Result<CarePlan> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let mut json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: malformed JSON: {e}", file.display()))?;
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
        anyhow::anyhow!("{}: not a care plan at '{path}': {what}", file.display())
    })?;
    plan.validate(policy)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok(plan)
}

/// A record as a JSON line, with the patient replaced by its pseudonym.
fn listing<T: serde::Serialize>(record: &T, patient: &PatientIdentifier) -> String {
    let mut json = serde_json::to_value(record).unwrap_or_default();
    json["patient"] = ids::pseudonym(&patient.value).into();
    json.to_string()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let policy = Policy {
        allow_synthetic: !args.refuse_synthetic,
    };
    match &args.command {
        Command::Token => {
            let token = dho_gateway::new_token();
            println!("token        {token}");
            println!("token_sha256 {}", dho_gateway::hash_token(&token));
        }
        Command::Grant {
            patient: number,
            recipient,
            recipient_name,
            categories,
            consent_id,
            legal_basis,
            recorded_by,
            operator,
        } => {
            let patient = patient(number, policy)?;
            let categories = if categories.is_empty() {
                vec![
                    DataCategory::Measurement,
                    DataCategory::SelfReport,
                    DataCategory::Alert,
                ]
            } else {
                categories
                    .iter()
                    .map(|c| category(c))
                    .collect::<anyhow::Result<_>>()?
            };
            let consent = Consent {
                consent_id: consent_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                patient: patient.clone(),
                status: ConsentStatus::Active,
                provisions: vec![ConsentProvision {
                    kind: ProvisionKind::Permit,
                    actor: organisation(recipient, recipient_name.clone())?,
                    categories,
                    period_start: None,
                    period_end: None,
                }],
                legal_basis: legal_basis.clone(),
                recorded_by: organisation(recorded_by, None)?,
                recorded_at: now_millis(),
            };
            let publisher = Publisher::connect(&settings(&args)?, policy).await?;
            let audit = ConsentAudit {
                principal: operator,
                channel: "admin-cli",
            };
            let receipt = publisher.record_consent(&consent, audit).await?;
            println!(
                "granted consent {} for {} (partition {}, offset {})",
                consent.consent_id,
                patient.log_tag(),
                receipt.partition,
                receipt.offset
            );
        }
        Command::Revoke {
            patient: number,
            consent_id,
            recorded_by,
            operator,
        } => {
            let patient = patient(number, policy)?;
            let publisher = Publisher::connect(&settings(&args)?, policy).await?;
            let audit = ConsentAudit {
                principal: operator,
                channel: "admin-cli",
            };
            publisher
                .revoke_consent(
                    &patient,
                    consent_id,
                    &organisation(recorded_by, None)?,
                    audit,
                )
                .await?;
            println!("revoked consent {consent_id} for {}", patient.log_tag());
        }
        Command::Consents { patient: number } => {
            let patient = patient(number, policy)?;
            let settings = settings(&args)?;
            let consents =
                state::patient_state::<Consent>(&settings, &settings.topics().consents(), &patient)
                    .await?;
            for consent in consents.values() {
                println!("{}", listing(consent, &consent.patient));
            }
        }
        Command::CarePlan { file, operator } => {
            let plan = care_plan(file, policy)?;
            let publisher = Publisher::connect(&settings(&args)?, policy).await?;
            let audit = CarePlanAudit {
                principal: operator,
                channel: "admin-cli",
            };
            let receipt = publisher.record_care_plan(&plan, audit).await?;
            println!(
                "recorded care plan {} version {} for {} (partition {}, offset {})",
                plan.plan_id,
                plan.version,
                plan.patient.log_tag(),
                receipt.partition,
                receipt.offset
            );
        }
        Command::DeleteCarePlan {
            patient: number,
            plan_id,
            recorded_by,
            operator,
        } => {
            let patient = patient(number, policy)?;
            let by = organisation(recorded_by, None)?;
            let publisher = Publisher::connect(&settings(&args)?, policy).await?;
            let audit = CarePlanAudit {
                principal: operator,
                channel: "admin-cli",
            };
            publisher
                .remove_care_plan(&patient, plan_id, &by, audit)
                .await?;
            println!("deleted care plan {plan_id} for {}", patient.log_tag());
        }
        Command::CarePlans { patient: number } => {
            let patient = patient(number, policy)?;
            let settings = settings(&args)?;
            let plans = state::patient_state::<CarePlan>(
                &settings,
                &settings.topics().careplans(),
                &patient,
            )
            .await?;
            for plan in plans.values() {
                println!("{}", listing(plan, &plan.patient));
            }
        }
        Command::Subscriptions { subscriber } => {
            let settings = settings(&args)?;
            for s in state::subscriptions_of(&settings, subscriber).await? {
                println!("{}", listing(&s, &s.patient));
            }
        }
    }
    Ok(())
}
