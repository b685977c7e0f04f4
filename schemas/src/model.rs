//! Rust types mirroring the `.avsc` files field for field (names, order, nullability).
//! Times are milliseconds since the Unix epoch, as Avro's `timestamp-millis`.
//! Tests in `codec.rs` prove each type round-trips through its schema.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// Now, in [`Millis`].
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatientIdSystem {
    Fnr,
    Dnr,
    Fhn,
}

impl PatientIdSystem {
    /// The FHIR identifier system (OID) of this kind of number.
    pub fn oid(self) -> &'static str {
        match self {
            PatientIdSystem::Fnr => "urn:oid:2.16.578.1.12.4.1.4.1",
            PatientIdSystem::Dnr => "urn:oid:2.16.578.1.12.4.1.4.2",
            PatientIdSystem::Fhn => "urn:oid:2.16.578.1.12.4.1.4.3",
        }
    }
}

/// A patient's national identifier. Its `Debug` form is redacted so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PatientIdentifier {
    pub system: PatientIdSystem,
    pub value: String,
}

impl std::fmt::Debug for PatientIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PatientIdentifier({:?}, <redacted>)", self.system)
    }
}

impl PatientIdentifier {
    pub fn fnr(value: impl Into<String>) -> Self {
        Self {
            system: PatientIdSystem::Fnr,
            value: value.into(),
        }
    }

    /// The Kafka key of every record about this patient: the number itself.
    pub fn key(&self) -> &str {
        &self.value
    }

    /// A short, stable, non-reversible tag for logs and traces (never the number itself).
    pub fn log_tag(&self) -> String {
        crate::ids::pseudonym(&self.value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrgIdSystem {
    Orgnr,
    Resh,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrganisationIdentifier {
    pub system: OrgIdSystem,
    pub value: String,
    pub name: Option<String>,
}

impl OrganisationIdentifier {
    pub fn orgnr(value: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            system: OrgIdSystem::Orgnr,
            value: value.into(),
            name: Some(name.into()),
        }
    }

    /// Same legal entity (the display name does not count).
    pub fn same_entity(&self, other: &Self) -> bool {
        self.system == other.system && self.value == other.value
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub platform: OrganisationIdentifier,
    pub device_id: Option<String>,
    pub device_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantity {
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VkpSeverity {
    NotReported,
    Normal,
    Moderate,
    Severe,
    Critical,
}

impl VkpSeverity {
    /// The numeric code VKP uses (0, 10, 20, 30, 40).
    pub fn code(self) -> u8 {
        match self {
            VkpSeverity::NotReported => 0,
            VkpSeverity::Normal => 10,
            VkpSeverity::Moderate => 20,
            VkpSeverity::Severe => 30,
            VkpSeverity::Critical => 40,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => VkpSeverity::NotReported,
            10 => VkpSeverity::Normal,
            20 => VkpSeverity::Moderate,
            30 => VkpSeverity::Severe,
            40 => VkpSeverity::Critical,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TriageColour {
    #[serde(rename = "R")]
    Red,
    #[serde(rename = "O")]
    Orange,
    #[serde(rename = "Y")]
    Yellow,
    #[serde(rename = "G")]
    Green,
    #[serde(rename = "B")]
    Blue,
    #[serde(rename = "BL")]
    Black,
    #[serde(rename = "NR")]
    NotReported,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub code: String,
    pub snomed_code: Option<String>,
    pub value: Quantity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub event_id: String,
    pub source_id: Option<String>,
    pub patient: PatientIdentifier,
    pub source: Source,
    pub data_controller: OrganisationIdentifier,
    pub code: String,
    pub snomed_code: Option<String>,
    pub value: Option<Quantity>,
    pub components: Vec<Component>,
    pub effective_time: Millis,
    pub received_time: Millis,
    pub severity: Option<VkpSeverity>,
    pub triage: Option<TriageColour>,
    /// FHIR `Observation.status` as sent; `None` is `final`.
    pub status: Option<String>,
    /// The end of a period reading (`effective_time` is its start).
    pub effective_end: Option<Millis>,
    /// [`PRECISION_DAY`] when the reading's time was a date only.
    pub effective_precision: Option<String>,
    /// A coded value (ACVPU), instead of `value`.
    pub value_coding: Option<Coding>,
}

/// `Measurement.effective_precision` of a reading dated without a time of day.
pub const PRECISION_DAY: &str = "DAY";

/// The R4 Observation statuses a platform may send for a reading (`registered` and
/// `cancelled` are not readings; `unknown` says nothing).
pub const OBSERVATION_STATUSES: &[&str] = &[
    "final",
    "preliminary",
    "amended",
    "corrected",
    "entered-in-error",
];

impl Measurement {
    /// The FHIR status: `final` unless the platform said otherwise.
    pub fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("final")
    }

    /// Whether this reading retracts (`entered-in-error`) or corrects (`amended`,
    /// `corrected`) one the platform sent before under the same identifier.
    pub fn is_change(&self) -> bool {
        let status = self.status();
        status == RETRACTED || CORRECTION_STATUSES.contains(&status)
    }

    /// Whether the time is a date only.
    pub fn date_only(&self) -> bool {
        self.effective_precision.as_deref() == Some(PRECISION_DAY)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub link_id: String,
    pub value_boolean: Option<bool>,
    pub value_integer: Option<i64>,
    pub value_decimal: Option<f64>,
    pub value_string: Option<String>,
    pub value_coding: Option<Coding>,
    /// Where the item sits (groups and parent answers, outermost first; see
    /// `SelfReport.avsc`): empty at the top level.
    pub nested_in: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfReport {
    pub event_id: String,
    pub source_id: Option<String>,
    pub patient: PatientIdentifier,
    pub source: Source,
    pub data_controller: OrganisationIdentifier,
    pub questionnaire_id: String,
    pub questionnaire_version: Option<String>,
    pub authored_time: Millis,
    pub received_time: Millis,
    pub answers: Vec<Answer>,
    pub score: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DataCategory {
    Measurement,
    SelfReport,
    Alert,
}

impl DataCategory {
    /// A bounded label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DataCategory::Measurement => "measurement",
            DataCategory::SelfReport => "self_report",
            DataCategory::Alert => "alert",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContentLevel {
    Full,
    Minimal,
}

mod access;
mod consent;
pub use access::*;
pub use consent::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionStatus {
    Active,
    Ended,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub subscription_id: String,
    pub subscriber_id: String,
    pub subscriber_org: OrganisationIdentifier,
    pub patient: PatientIdentifier,
    pub categories: Vec<DataCategory>,
    pub code_filter: Vec<String>,
    pub content_level: ContentLevel,
    pub status: SubscriptionStatus,
    pub active_from: Millis,
    pub active_until: Option<Millis>,
    pub purpose_of_use: String,
    pub updated_at: Millis,
}

impl Subscription {
    /// Active at `at`, for this category and (if filtered) this code.
    pub fn wants(&self, category: DataCategory, code: Option<&str>, at: Millis) -> bool {
        self.status == SubscriptionStatus::Active
            && self.active_from <= at
            && self.active_until.is_none_or(|until| at < until)
            && self.categories.contains(&category)
            && (self.code_filter.is_empty()
                || code.is_some_and(|c| self.code_filter.iter().any(|f| f == c)))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneRange {
    pub low: Option<f64>,
    pub high: Option<f64>,
}

impl ZoneRange {
    pub fn contains(&self, value: f64) -> bool {
        self.low.is_none_or(|low| low <= value) && self.high.is_none_or(|high| value <= high)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanTarget {
    pub code: String,
    pub unit: String,
    pub green: ZoneRange,
    pub yellow: ZoneRange,
    pub expected_interval_hours: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarePlan {
    pub plan_id: String,
    pub patient: PatientIdentifier,
    pub version: i32,
    pub targets: Vec<PlanTarget>,
    pub updated_by: OrganisationIdentifier,
    pub updated_at: Millis,
}

/// What a care-plan change did (see `CarePlanChange.avsc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CarePlanAction {
    /// The plan was recorded or replaced.
    Recorded,
    /// The plan was removed (a tombstone).
    Deleted,
}

/// The audit record of one care-plan change: who recorded or deleted which plan of which
/// patient, when, through what (`<prefix>.audit.careplans`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarePlanChange {
    pub change_id: String,
    pub plan_id: String,
    pub patient: PatientIdentifier,
    pub action: CarePlanAction,
    /// The plan as recorded; `None` when deleted.
    pub plan: Option<CarePlan>,
    /// The care organisation on whose behalf the change was made.
    pub changed_by: OrganisationIdentifier,
    /// The authenticated credential's name or the operator (never a secret).
    pub principal: String,
    /// `gateway`, `admin-cli`, ...
    pub channel: String,
    pub changed_at: Millis,
}

/// What a subscription change did (see `SubscriptionChange.avsc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionAction {
    /// The subscription was recorded or replaced.
    Recorded,
    /// The subscription was removed (a tombstone).
    Deleted,
}

/// The audit record of one subscription change: who recorded or deleted which
/// subscription of which patient, when, through what (`<prefix>.audit.subscriptions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionChange {
    pub change_id: String,
    pub subscription_id: String,
    pub patient: PatientIdentifier,
    pub action: SubscriptionAction,
    /// The subscription as recorded; `None` when deleted.
    pub subscription: Option<Subscription>,
    /// The care organisation on whose behalf the change was made.
    pub changed_by: OrganisationIdentifier,
    /// The authenticated credential's name or the operator (never a secret).
    pub principal: String,
    /// `gateway`, `admin-cli`, ...
    pub channel: String,
    pub changed_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    ZoneEntered,
    Escalated,
    Resolved,
    NoData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Zone {
    Green,
    Yellow,
    Red,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub patient: PatientIdentifier,
    pub kind: AlertKind,
    pub zone: Zone,
    pub severity: VkpSeverity,
    pub code: String,
    pub plan_id: String,
    pub plan_version: i32,
    /// The care organisation whose plan raised the alert (the plan's `updated_by`); `None`
    /// in alerts from routers before plans per organisation.
    pub plan_owner: Option<OrganisationIdentifier>,
    pub triggering_event_id: Option<String>,
    pub reading: Option<Measurement>,
    pub raised_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourcePosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventReference {
    pub event_id: String,
    pub category: DataCategory,
    pub code: Option<String>,
    pub effective_time: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub delivery_id: String,
    pub subscriber_id: String,
    pub subscription_id: String,
    pub consent_id: String,
    pub patient: PatientIdentifier,
    pub source: SourcePosition,
    pub content_level: ContentLevel,
    pub routed_at: Millis,
    pub measurement: Option<Measurement>,
    pub self_report: Option<SelfReport>,
    pub alert: Option<Alert>,
    pub reference: Option<EventReference>,
    /// Set on a retraction or correction: the earlier delivery it replaces.
    pub replaces: Option<Replaces>,
    /// HPR numbers of professionals the patient's consent keeps this from (see `Delivery.avsc`).
    pub professional_denies: Vec<String>,
    /// Set on a notice that a consent change ended this subscriber's deliveries (no
    /// clinical content; see `Delivery.avsc`).
    pub sharing_ended: Option<SharingEnded>,
}

/// A notice without clinical content: sharing of the patient's data with this subscriber
/// ended, recorded by `recorded_by` at `recorded_at`. So an ended flow is never mistaken for
/// a quiet patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharingEnded {
    /// Who recorded the consent change; `None` when the consent record was deleted.
    pub recorded_by: Option<OrganisationIdentifier>,
    pub recorded_at: Millis,
    /// The categories no longer delivered.
    pub categories: Vec<DataCategory>,
}

/// The earlier delivery a retraction or correction replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaces {
    /// The earlier delivery to the same subscriber.
    pub delivery_id: String,
    /// The event (or alert) it carried.
    pub event_id: String,
    /// `entered-in-error`, `amended` or `corrected` (FHIR `Observation.status`).
    pub status: String,
}

/// What a delivery is to its subscriber: a first disclosure, a retraction or correction
/// of an earlier one, or the notice that sharing ended (see [`Delivery::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind<'a> {
    /// Something new: a reading, a self-report, an alert.
    Disclosure,
    /// The earlier delivery was wrong (`entered-in-error`): disregard it.
    Retraction(&'a Replaces),
    /// The earlier delivery's values are superseded (`amended` or `corrected`) by this
    /// one's (or, for a MINIMAL delivery, by values to be fetched from the data controller).
    Correction(&'a Replaces),
    /// A consent change ended this subscriber's deliveries of the patient: nothing more of
    /// these categories comes until the patient shares them again.
    SharingEnded(&'a SharingEnded),
}

/// The statuses a platform retracts or corrects an earlier reading with.
pub const RETRACTED: &str = "entered-in-error";
/// See [`RETRACTED`].
pub const CORRECTION_STATUSES: [&str; 2] = ["amended", "corrected"];

/// What a delivery carries: exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Payload<'a> {
    Measurement(&'a Measurement),
    SelfReport(&'a SelfReport),
    Alert(&'a Alert),
    Reference(&'a EventReference),
    /// No clinical content: the notice that sharing ended.
    SharingEnded(&'a SharingEnded),
}

impl Delivery {
    /// A first disclosure, a retraction or a correction.
    pub fn kind(&self) -> DeliveryKind<'_> {
        if let Some(ended) = &self.sharing_ended {
            return DeliveryKind::SharingEnded(ended);
        }
        match &self.replaces {
            None => DeliveryKind::Disclosure,
            Some(r) if r.status == RETRACTED => DeliveryKind::Retraction(r),
            Some(r) => DeliveryKind::Correction(r),
        }
    }

    /// The one payload, or `None` if the envelope is malformed (none or several set).
    pub fn payload(&self) -> Option<Payload<'_>> {
        let set = [
            self.measurement.as_ref().map(Payload::Measurement),
            self.self_report.as_ref().map(Payload::SelfReport),
            self.alert.as_ref().map(Payload::Alert),
            self.reference.as_ref().map(Payload::Reference),
            self.sharing_ended.as_ref().map(Payload::SharingEnded),
        ];
        let mut present = set.into_iter().flatten();
        match (present.next(), present.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisclosureRecord {
    pub delivery_id: String,
    pub recorded_at: Millis,
    pub patient: PatientIdentifier,
    pub recipient: OrganisationIdentifier,
    pub subscriber_id: String,
    pub subscription_id: String,
    pub purpose_of_use: String,
    pub decision_reference: String,
    pub legal_basis: String,
    pub data_controller: OrganisationIdentifier,
    pub category: DataCategory,
    pub event_id: String,
    pub content_level: ContentLevel,
    pub source: SourcePosition,
    /// The delivery this one retracts or corrects.
    pub replaces: Option<String>,
}
