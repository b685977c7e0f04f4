//! `dho-admin`: the operator's command line. Grant or revoke a patient's consent,
//! subscribe or unsubscribe a subscriber, record or delete a care plan (each change
//! audited like the gateway's, on `<prefix>.audit.consents`, `.subscriptions`,
//! `.careplans`), apply many such changes from a file through one connection, list a
//! patient's consents and care plans or a subscriber's subscriptions (one JSON object per
//! line, patients as pseudonyms), send dead letters back to their source topic (audited
//! on `<prefix>.audit.redrives`), and make gateway tokens.
//!
//! Settings come from `--config` (any service's TOML: its `[kafka]` table and
//! `allow_synthetic_identifiers`), then `DHO_<KEY>` environment, then flags.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand};
use dho_kafka::KafkaSettings;
use dho_kafka::service::KafkaArgs;
use dho_publisher::Publisher;
use dho_schemas::Policy;
use dho_schemas::model::*;

use dho_admin::change::{self, Change};
use dho_admin::{bulk, config, input, redrive, review};
use dho_publisher::state;

#[derive(Debug, Parser)]
#[command(
    about = "Operate the DHO hub: consents, subscriptions, care plans, enrolments, a credential's consent changes, dead letters, tokens"
)]
struct Args {
    /// A TOML file with a `[kafka]` table (the router's or the gateway's config will do).
    #[arg(long, env = "DHO_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Accept synthetic test identities (development, tests, the demo;
    /// `allow_synthetic_identifiers=true`). Refused otherwise.
    #[arg(long, global = true)]
    allow_synthetic: bool,
    /// Any config key, e.g. `--set kafka.partitions=12` (repeatable; over the file and the
    /// environment).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
    /// Who is doing this (the principal of every audit record).
    #[arg(long, env = "USER", default_value = "operator", global = true)]
    operator: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record a consent permitting a recipient organisation (replaces one with the same id).
    Grant(change::Grant),
    /// Delete a consent directive: from then on it permits nothing.
    Revoke(change::Revoke),
    /// Subscribe a subscriber to a patient's data (the patient's consent must permit the
    /// subscriber's organisation too).
    Subscribe(change::Subscribe),
    /// Delete a subscription: from then on it delivers nothing.
    Unsubscribe(change::Unsubscribe),
    /// Record a patient's care plan (self-management plan) from a JSON file in the native
    /// form of CarePlan; replaces the plan with the same plan_id. `updated_at` defaults to
    /// now. Checked like the gateway checks it (e.g. each yellow range holds its green one).
    CarePlan {
        /// The plan, as JSON (`-` reads standard input).
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a patient's care plan (from then on it classifies nothing).
    DeleteCarePlan(change::DeleteCarePlan),
    /// Record that an organisation is responsible for a patient's follow-up (audited): it
    /// may then widen the patient's sharing through the gateway, on the patient's behalf.
    Enrol(change::Enrol),
    /// End an organisation's responsibility for a patient's follow-up (audited).
    Unenrol(change::Unenrol),
    /// The organisations responsible for a patient's follow-up.
    Enrolments {
        /// The patient's number.
        patient: String,
    },
    /// A gateway credential's recent consent changes, one JSON line each (patients as
    /// pseudonyms). The look itself is audited on `<prefix>.audit.operator`.
    Changes(review::Window),
    /// Put back what a gateway credential's recent consent changes changed (newest first;
    /// a directive changed since by someone else is left, and said so), audited like any
    /// consent change (channel `admin-undo`) and on `<prefix>.audit.operator`.
    Undo {
        #[command(flatten)]
        window: review::Window,
        /// List what would be put back, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Apply many changes from a file through one connection: one JSON object per line,
    /// `{"op": "grant" | "revoke" | "subscribe" | "unsubscribe" | "care-plan" |
    /// "delete-care-plan" | "enrol" | "unenrol", ...}` with the commands' flags as keys (`care-plan` takes
    /// `"plan": {...}`). Each line's outcome is a JSON line; a bad line is reported with
    /// its number and the others still apply; the exit status is 1 if any line failed.
    Apply {
        /// The changes (`-` reads standard input).
        #[arg(long)]
        file: PathBuf,
    },
    /// Send chosen dead letters back to their source topic (original key, value, headers),
    /// audited; a dead letter already redriven is never sent again.
    Redrive {
        #[command(flatten)]
        selection: redrive::Selection,
        /// List what would be redriven, send nothing.
        #[arg(long)]
        dry_run: bool,
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
    /// The patient's current care plans.
    CarePlans {
        /// The patient's number.
        patient: String,
    },
    /// Make a new gateway token and the hash that goes in the gateway's config.
    Token,
}

/// The layered configuration, flags last.
fn configuration(args: &Args) -> anyhow::Result<config::AdminConfig> {
    let env = dho_kafka::layers::environment();
    let mut config = config::load(args.config.as_deref(), &env, &args.set)?;
    args.kafka.apply(&mut config.kafka);
    if args.allow_synthetic {
        config.allow_synthetic_identifiers = true;
    }
    Ok(config)
}

fn settings(args: &Args) -> anyhow::Result<KafkaSettings> {
    Ok(configuration(args)?.kafka)
}

/// One change: checked, then published through a connection of its own.
async fn apply_one(args: &Args, policy: Policy, change: Change) -> anyhow::Result<()> {
    let checked = change.check(policy)?;
    let publisher = Publisher::connect(&settings(args)?, policy).await?;
    let (done, receipt) = checked.apply(&publisher, &args.operator).await?;
    println!(
        "{done} (partition {}, offset {})",
        receipt.partition, receipt.offset
    );
    Ok(())
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
        allow_synthetic: configuration(&args)?.allow_synthetic_identifiers,
    };
    match &args.command {
        Command::Token => {
            let token = dho_gateway::new_token();
            println!("token        {token}");
            println!("token_sha256 {}", dho_gateway::hash_token(&token));
        }
        Command::Grant(c) => apply_one(&args, policy, Change::Grant(c.clone())).await?,
        Command::Revoke(c) => apply_one(&args, policy, Change::Revoke(c.clone())).await?,
        Command::Subscribe(c) => apply_one(&args, policy, Change::Subscribe(c.clone())).await?,
        Command::Unsubscribe(c) => apply_one(&args, policy, Change::Unsubscribe(c.clone())).await?,
        Command::DeleteCarePlan(c) => {
            apply_one(&args, policy, Change::DeleteCarePlan(c.clone())).await?
        }
        Command::Enrol(c) => apply_one(&args, policy, Change::Enrol(c.clone())).await?,
        Command::Unenrol(c) => apply_one(&args, policy, Change::Unenrol(c.clone())).await?,
        Command::Enrolments { patient: number } => {
            let patient = input::patient(number, policy)?;
            let settings = settings(&args)?;
            let topic = settings.topics().enrolments();
            for e in state::patient_state::<Enrolment>(&settings, &topic, &patient)
                .await?
                .values()
            {
                println!("{}", input::listing(e, &e.patient));
            }
        }
        Command::Changes(window) => {
            review::changes(&settings(&args)?, window, &args.operator).await?;
        }
        Command::Undo { window, dry_run } => {
            let settings = settings(&args)?;
            review::undo(&settings, policy, window, &args.operator, *dry_run).await?;
        }
        Command::CarePlan { file } => {
            let plan = input::care_plan_file(file, policy)?;
            let change = Change::CarePlan(change::CarePlanChange {
                plan: serde_json::to_value(&plan)?,
            });
            apply_one(&args, policy, change).await?
        }
        Command::Apply { file } => {
            let summary = bulk::apply_file(&settings(&args)?, policy, file, &args.operator).await?;
            if summary.failed > 0 {
                bail!(
                    "{} of the changes failed (see their lines above)",
                    summary.failed
                );
            }
        }
        Command::Redrive { selection, dry_run } => {
            redrive::redrive(&settings(&args)?, selection, &args.operator, *dry_run).await?;
        }
        Command::Consents { patient: number } => {
            let patient = input::patient(number, policy)?;
            let settings = settings(&args)?;
            let consents =
                state::patient_state::<Consent>(&settings, &settings.topics().consents(), &patient)
                    .await?;
            for consent in consents.values() {
                println!("{}", input::listing(consent, &consent.patient));
            }
        }
        Command::CarePlans { patient: number } => {
            let patient = input::patient(number, policy)?;
            let settings = settings(&args)?;
            let plans = state::patient_state::<CarePlan>(
                &settings,
                &settings.topics().careplans(),
                &patient,
            )
            .await?;
            for plan in plans.values() {
                println!("{}", input::listing(plan, &plan.patient));
            }
        }
        Command::Subscriptions { subscriber } => {
            let settings = settings(&args)?;
            for s in state::subscriptions_of(&settings, subscriber).await? {
                println!("{}", input::listing(&s, &s.patient));
            }
        }
    }
    Ok(())
}
