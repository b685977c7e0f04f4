//! Enrolling the fleet through the gateway, as a care organisation: consent, subscription
//! and care plan per patient, so the fleet's readings are delivered and raise alerts.

use std::sync::Arc;
use std::time::Duration;

use dho_schemas::model::*;

use crate::client::GatewayClient;
use crate::fleet::{Fleet, SimPatient};

/// A care organisation that enrols the simulated fleet through the gateway before it
/// streams, so its readings are delivered (and alert) instead of being withheld.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The enrolling organisation: the one whose token the client holds. It is the consent's
    /// permitted recipient and the care plans' author.
    pub org: OrganisationIdentifier,
    /// The organisation's subscriber (delivery topic) the subscriptions are for.
    pub subscriber_id: String,
    /// The patient's own channel (a client with a patient portal's token), which records
    /// each patient's consent as the patient would through the portal. Without it the
    /// organisation records the consent itself, which the gateway allows only if an operator
    /// enrolled it as responsible for the patient (`dho-admin enrol`): a permit widens
    /// sharing.
    pub consent_by: Option<GatewayClient>,
}

/// Why enrolling a patient failed. It names the step and the gateway's answer, never the
/// patient.
#[derive(Debug, Clone, thiserror::Error)]
#[error("enrolment {step}: {detail}")]
pub struct EnrolError {
    /// `consent`, `subscription` or `care plan`.
    pub step: &'static str,
    /// The HTTP status, if the gateway answered.
    pub status: Option<u16>,
    pub detail: String,
}

/// The plan name of every simulated patient's care plan (`<orgnr>.egenbehandlingsplan`).
pub const SIM_PLAN_NAME: &str = "egenbehandlingsplan";

impl GatewayClient {
    /// Records, as the care organisation whose token this client holds, what lets
    /// `patient`'s readings reach `enrolment.subscriber_id`: a consent permitting the
    /// organisation (every category, `POST /fhir/Consent`, through `enrolment.consent_by`
    /// when given), a subscription for the
    /// subscriber (full content, every category, `PUT /subscriptions/{id}`) and the patient's
    /// care plan ([`SimPatient::care_plan`], by the organisation, `PUT /careplans/{id}`), so
    /// the router also raises alerts. `tag` names the consent and subscription (it must be
    /// stable per patient, say the fleet index; never the patient number, it goes in URLs):
    /// enrolling again replaces the same records instead of adding new ones. Transient
    /// failures (no answer, 5xx) are retried for about half a minute.
    pub async fn enrol(
        &self,
        patient: &SimPatient,
        tag: &str,
        enrolment: &Enrolment,
    ) -> Result<(), EnrolError> {
        let org = &enrolment.org;
        let consent = dho_schemas::fhir::consent::fhir_consent(
            tag,
            &patient.id,
            ProvisionKind::Permit,
            true,
            std::slice::from_ref(org),
        );
        enrolment
            .consent_by
            .as_ref()
            .unwrap_or(self)
            .send_retrying("consent", reqwest::Method::POST, "/fhir/Consent", &consent)
            .await?;
        let subscription_id = format!("{}.{tag}", enrolment.subscriber_id);
        let subscription = Subscription {
            subscription_id: subscription_id.clone(),
            subscriber_id: enrolment.subscriber_id.clone(),
            subscriber_org: org.clone(),
            patient: patient.id.clone(),
            categories: vec![
                DataCategory::Measurement,
                DataCategory::SelfReport,
                DataCategory::Alert,
            ],
            code_filter: vec![],
            content_level: ContentLevel::Full,
            status: SubscriptionStatus::Active,
            active_from: 0,
            active_until: None,
            purpose_of_use: "TREAT".into(),
            updated_at: now_millis(),
        };
        let body = serde_json::to_value(&subscription).map_err(|e| EnrolError {
            step: "subscription",
            status: None,
            detail: e.to_string(),
        })?;
        self.send_retrying(
            "subscription",
            reqwest::Method::PUT,
            &format!("/subscriptions/{subscription_id}"),
            &body,
        )
        .await?;
        let mut plan = patient.care_plan();
        plan.plan_id = format!("{}.{SIM_PLAN_NAME}", org.value);
        plan.updated_by = org.clone();
        plan.updated_at = now_millis();
        let body = serde_json::to_value(&plan).map_err(|e| EnrolError {
            step: "care plan",
            status: None,
            detail: e.to_string(),
        })?;
        self.send_retrying(
            "care plan",
            reqwest::Method::PUT,
            &format!("/careplans/{}", plan.plan_id),
            &body,
        )
        .await?;
        Ok(())
    }

    async fn send_retrying(
        &self,
        step: &'static str,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(), EnrolError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let response = self
                .http
                .request(method.clone(), format!("{}{path}", self.base_url))
                .bearer_auth(&self.token)
                .json(body)
                .send()
                .await;
            let error = match response {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status().as_u16();
                    // The gateway's error names the field and the bounded reason; its
                    // detail never holds the sender's values.
                    let answer = r.json::<serde_json::Value>().await.unwrap_or_default();
                    let reason = &answer["error"];
                    let detail = if reason.is_object() {
                        format!(
                            "{status}: {} at '{}': {}",
                            reason["reason"].as_str().unwrap_or_default(),
                            reason["field"].as_str().unwrap_or_default(),
                            reason["detail"].as_str().unwrap_or_default()
                        )
                    } else {
                        format!(
                            "{status}: {}",
                            answer["issue"][0]["diagnostics"]
                                .as_str()
                                .unwrap_or_default()
                        )
                    };
                    EnrolError {
                        step,
                        status: Some(status),
                        detail,
                    }
                }
                Err(e) => EnrolError {
                    step,
                    status: None,
                    detail: format!("no answer from the gateway: {e}"),
                },
            };
            let transient = error.status.is_none_or(|s| s >= 500);
            if !transient || attempt >= 12 {
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
        }
    }
}

/// Enrols every patient of `fleet` (made with `seed`) through `client` (holding the care
/// organisation's token): see [`GatewayClient::enrol`]. The records are named
/// `sim-<seed>-<index>`, so running the same fleet again replaces them. Returns how many
/// patients were enrolled.
pub async fn enrol_fleet(
    client: &GatewayClient,
    fleet: &Fleet,
    seed: u64,
    enrolment: &Enrolment,
) -> Result<usize, EnrolError> {
    let mut set = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(8));
    for (i, patient) in fleet.patients().iter().enumerate() {
        let (client, patient, enrolment) = (client.clone(), patient.clone(), enrolment.clone());
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        set.spawn(async move {
            let result = client
                .enrol(&patient, &format!("sim-{seed}-{i}"), &enrolment)
                .await;
            drop(permit);
            result
        });
    }
    let mut enrolled = 0;
    while let Some(result) = set.join_next().await {
        result.map_err(|e| EnrolError {
            step: "task",
            status: None,
            detail: e.to_string(),
        })??;
        enrolled += 1;
    }
    Ok(enrolled)
}
