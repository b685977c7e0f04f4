//! The changes an operator makes: one definition each, read from flags (`dho-admin grant
//! ...`) and from a line of a bulk file (`{"op": "grant", ...}`) alike, applied through one
//! [`Publisher`] and audited like the gateway's changes (`channel` `admin-cli`).

use dho_publisher::{ConsentAudit, Publisher, Receipt};
use dho_schemas::Policy;
use dho_schemas::model::*;
use serde::Deserialize;

use crate::input;

/// One change of the hub's state. In a bulk file: a JSON object per line, `op` naming the
/// change and the other keys its flags' names (`recorded_by`, `categories`, ...).
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Change {
    Grant(Grant),
    Revoke(Revoke),
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    CarePlan(CarePlanChange),
    DeleteCarePlan(DeleteCarePlan),
    Enrol(Enrol),
    Unenrol(Unenrol),
}

/// Record a consent permitting a recipient organisation (replaces one with the same id).
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The patient's fødselsnummer, D-nummer or hjelpenummer.
    #[arg(long)]
    pub patient: String,
    /// The recipient organisation's number.
    #[arg(long)]
    pub recipient: String,
    /// The recipient's name, for people reading the record.
    #[arg(long)]
    #[serde(default)]
    pub recipient_name: Option<String>,
    /// Data categories (measurement, self-report, alert); all if none is given.
    #[arg(long = "category")]
    #[serde(default)]
    pub categories: Vec<String>,
    /// The directive's id (default: a new one).
    #[arg(long)]
    #[serde(default)]
    pub consent_id: Option<String>,
    /// The legal rule.
    #[arg(long, default_value = DEFAULT_LEGAL_BASIS)]
    #[serde(default = "default_legal_basis")]
    pub legal_basis: String,
    /// The care organisation recording it.
    #[arg(long)]
    pub recorded_by: String,
}

/// Delete a consent directive: from then on it permits nothing.
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    #[arg(long)]
    pub patient: String,
    #[arg(long)]
    pub consent_id: String,
    /// The care organisation on whose behalf it is revoked.
    #[arg(long)]
    pub recorded_by: String,
}

/// Subscribe a subscriber to a patient's data (replaces the subscription with the same id).
/// A subscription alone delivers nothing: the patient's consent must permit the
/// subscriber's organisation too.
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    #[arg(long)]
    pub patient: String,
    /// The subscriber id (its delivery topic's suffix).
    #[arg(long)]
    pub subscriber: String,
    /// The subscriber's organisation number (what consent provisions name).
    #[arg(long)]
    pub subscriber_org: String,
    /// The subscription's id (default `<subscriber>.admin`: one operator-made subscription
    /// per patient and subscriber, so subscribing again replaces it).
    #[arg(long)]
    #[serde(default)]
    pub subscription_id: Option<String>,
    /// Data categories (measurement, self-report, alert); all if none is given.
    #[arg(long = "category")]
    #[serde(default)]
    pub categories: Vec<String>,
    /// LOINC codes to receive; all if none is given.
    #[arg(long = "code")]
    #[serde(default)]
    pub codes: Vec<String>,
    /// `full` values or a `minimal` reference.
    #[arg(long, default_value = "full")]
    #[serde(default = "default_content_level")]
    pub content_level: String,
    /// Purpose of use (HL7 v3 PurposeOfUse), recorded in the disclosure audit.
    #[arg(long, default_value = "TREAT")]
    #[serde(default = "default_purpose")]
    pub purpose_of_use: String,
}

/// Delete a subscription: from then on it delivers nothing.
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unsubscribe {
    #[arg(long)]
    pub patient: String,
    /// The subscriber id.
    #[arg(long)]
    pub subscriber: String,
    /// The subscription's id (default `<subscriber>.admin`, what `subscribe` makes).
    #[arg(long)]
    #[serde(default)]
    pub subscription_id: Option<String>,
    /// The care organisation on whose behalf it is deleted (the subscriber's).
    #[arg(long)]
    pub recorded_by: String,
}

/// A care plan recorded in bulk: `{"op": "care-plan", "plan": {...}}`, the plan in the
/// native JSON form of CarePlan (`updated_at` defaults to now).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarePlanChange {
    pub plan: serde_json::Value,
}

/// Delete a patient's care plan (from then on it classifies nothing).
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteCarePlan {
    #[arg(long)]
    pub patient: String,
    #[arg(long)]
    pub plan_id: String,
    /// The care organisation on whose behalf it is deleted.
    #[arg(long)]
    pub recorded_by: String,
}

/// Record that an organisation is responsible for a patient's follow-up: from then on it may
/// widen the patient's sharing through the gateway (record permits, end denies), on the
/// patient's behalf. A subscription it made itself never makes it responsible.
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrol {
    #[arg(long)]
    pub patient: String,
    /// The responsible organisation's number.
    #[arg(long)]
    pub organisation: String,
    /// Its name, for people reading the record.
    #[arg(long)]
    #[serde(default)]
    pub organisation_name: Option<String>,
    /// Why it is responsible, in words an auditor reads (e.g. the decision on home
    /// follow-up it rests on).
    #[arg(long)]
    pub basis: String,
}

/// End an organisation's responsibility for a patient's follow-up.
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unenrol {
    #[arg(long)]
    pub patient: String,
    #[arg(long)]
    pub organisation: String,
}

const DEFAULT_LEGAL_BASIS: &str = "pbrl-5-3";

fn default_legal_basis() -> String {
    DEFAULT_LEGAL_BASIS.into()
}
fn default_content_level() -> String {
    "full".into()
}
fn default_purpose() -> String {
    "TREAT".into()
}

fn subscription_id(subscriber: &str, given: &Option<String>) -> String {
    given
        .clone()
        .unwrap_or_else(|| format!("{subscriber}.admin"))
}

/// A change checked and turned into its record, ready to publish: every rule is checked
/// before anything is sent, so a bad change sends nothing.
#[derive(Debug)]
pub enum Checked {
    Grant(Consent),
    Revoke(PatientIdentifier, String, OrganisationIdentifier),
    Subscribe(Subscription),
    Unsubscribe(PatientIdentifier, String, OrganisationIdentifier),
    CarePlan(CarePlan),
    DeleteCarePlan(PatientIdentifier, String, OrganisationIdentifier),
    /// The patient, the organisation, the basis.
    Enrol(PatientIdentifier, OrganisationIdentifier, String),
    Unenrol(PatientIdentifier, OrganisationIdentifier),
}

impl Change {
    pub fn check(&self, policy: Policy) -> anyhow::Result<Checked> {
        let patient = |number: &str| input::patient(number, policy);
        let org = |orgnr: &str| input::organisation(orgnr, None);
        Ok(match self {
            Change::Grant(g) => {
                let consent = Consent {
                    consent_id: g
                        .consent_id
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    patient: patient(&g.patient)?,
                    status: ConsentStatus::Active,
                    provisions: vec![ConsentProvision::organisation(
                        ProvisionKind::Permit,
                        input::organisation(&g.recipient, g.recipient_name.clone())?,
                        input::categories(&g.categories)?,
                    )],
                    legal_basis: g.legal_basis.clone(),
                    recorded_by: org(&g.recorded_by)?,
                    recorded_at: now_millis(),
                };
                consent.validate(policy)?;
                Checked::Grant(consent)
            }
            Change::Revoke(r) => Checked::Revoke(
                patient(&r.patient)?,
                r.consent_id.clone(),
                org(&r.recorded_by)?,
            ),
            Change::Subscribe(s) => {
                let subscription = Subscription {
                    subscription_id: subscription_id(&s.subscriber, &s.subscription_id),
                    subscriber_id: s.subscriber.clone(),
                    subscriber_org: org(&s.subscriber_org)?,
                    patient: patient(&s.patient)?,
                    categories: input::categories(&s.categories)?,
                    code_filter: s.codes.clone(),
                    content_level: input::content_level(&s.content_level)?,
                    status: SubscriptionStatus::Active,
                    active_from: now_millis(),
                    active_until: None,
                    purpose_of_use: s.purpose_of_use.clone(),
                    updated_at: now_millis(),
                };
                subscription.validate(policy)?;
                Checked::Subscribe(subscription)
            }
            Change::Unsubscribe(u) => Checked::Unsubscribe(
                patient(&u.patient)?,
                subscription_id(&u.subscriber, &u.subscription_id),
                org(&u.recorded_by)?,
            ),
            Change::CarePlan(c) => Checked::CarePlan(input::care_plan(c.plan.clone(), policy)?),
            Change::DeleteCarePlan(d) => Checked::DeleteCarePlan(
                patient(&d.patient)?,
                d.plan_id.clone(),
                org(&d.recorded_by)?,
            ),
            Change::Enrol(e) => {
                if e.basis.trim().is_empty() {
                    anyhow::bail!("--basis must say why the organisation is responsible");
                }
                Checked::Enrol(
                    patient(&e.patient)?,
                    input::organisation(&e.organisation, e.organisation_name.clone())?,
                    e.basis.clone(),
                )
            }
            Change::Unenrol(u) => Checked::Unenrol(patient(&u.patient)?, org(&u.organisation)?),
        })
    }
}

impl Checked {
    /// Publishes the change, its audit record first; returns what was done (patients as
    /// pseudonyms) and where the change landed.
    pub async fn apply(
        &self,
        publisher: &Publisher,
        operator: &str,
    ) -> anyhow::Result<(String, Receipt)> {
        let audit = ConsentAudit {
            principal: operator,
            channel: "admin-cli",
        };
        Ok(match self {
            Checked::Grant(c) => (
                format!(
                    "granted consent {} for {}",
                    c.consent_id,
                    c.patient.log_tag()
                ),
                publisher.record_consent(c, audit).await?,
            ),
            Checked::Revoke(patient, id, by) => (
                format!("revoked consent {id} for {}", patient.log_tag()),
                publisher.revoke_consent(patient, id, by, audit).await?,
            ),
            Checked::Subscribe(s) => (
                format!(
                    "subscribed {} to {} (subscription {})",
                    s.subscriber_id,
                    s.patient.log_tag(),
                    s.subscription_id
                ),
                publisher.record_subscription(s, audit).await?,
            ),
            Checked::Unsubscribe(patient, id, by) => (
                format!("deleted subscription {id} of {}", patient.log_tag()),
                publisher
                    .remove_subscription(patient, id, by, audit)
                    .await?,
            ),
            Checked::CarePlan(p) => (
                format!(
                    "recorded care plan {} version {} for {}",
                    p.plan_id,
                    p.version,
                    p.patient.log_tag()
                ),
                publisher.record_care_plan(p, audit).await?,
            ),
            Checked::DeleteCarePlan(patient, id, by) => (
                format!("deleted care plan {id} for {}", patient.log_tag()),
                publisher.remove_care_plan(patient, id, by, audit).await?,
            ),
            Checked::Enrol(patient, organisation, basis) => {
                let enrolment = Enrolment {
                    patient: patient.clone(),
                    organisation: organisation.clone(),
                    basis: basis.clone(),
                    enrolled_by: operator.to_string(),
                    enrolled_at: now_millis(),
                };
                (
                    format!(
                        "enrolled {} as responsible for {}",
                        organisation.value,
                        patient.log_tag()
                    ),
                    publisher.record_enrolment(&enrolment, audit).await?,
                )
            }
            Checked::Unenrol(patient, organisation) => (
                format!(
                    "ended {}'s responsibility for {}",
                    organisation.value,
                    patient.log_tag()
                ),
                publisher
                    .end_enrolment(patient, organisation, audit)
                    .await?,
            ),
        })
    }
}
