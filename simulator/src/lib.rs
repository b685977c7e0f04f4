//! A fleet of synthetic patients producing realistic home readings per diagnosis: COPD
//! (SpO2, pulse, symptom score), heart failure (weight, blood pressure, pulse) and diabetes
//! (glucose), with a daily rhythm and occasional exacerbations that cross care-plan limits.
//! Optionally some readings sync late (effective time hours back) and some submissions are
//! malformed. [`run`] offers a fixed rate for a fixed duration, through the library
//! ([`Sink::Library`]) or the gateway over HTTP ([`Sink::Gateway`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dho_publisher::Publisher;
use dho_schemas::model::*;
use dho_schemas::{codes, fixtures};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diagnosis {
    Copd,
    HeartFailure,
    Diabetes,
}

/// One simulated patient.
#[derive(Debug, Clone)]
pub struct SimPatient {
    pub id: PatientIdentifier,
    pub diagnosis: Diagnosis,
    /// 0 = stable; counts down readings while an exacerbation lasts.
    exacerbation: u32,
    baseline_weight: f64,
}

impl SimPatient {
    /// The self-management plan a clinician would agree with this patient: stable
    /// readings stay green, an exacerbation leaves the zone. One reading a day expected.
    pub fn care_plan(&self) -> CarePlan {
        let zone = |low: Option<f64>, high: Option<f64>| ZoneRange { low, high };
        let target = |code: &str, unit: &str, green: ZoneRange, yellow: ZoneRange| PlanTarget {
            code: code.into(),
            unit: unit.into(),
            green,
            yellow,
            expected_interval_hours: Some(24),
        };
        let targets = match self.diagnosis {
            Diagnosis::Copd => vec![
                target(
                    codes::SPO2,
                    "%",
                    zone(Some(92.0), None),
                    zone(Some(88.0), None),
                ),
                target(
                    codes::HEART_RATE,
                    "/min",
                    zone(Some(50.0), Some(100.0)),
                    zone(Some(40.0), Some(120.0)),
                ),
            ],
            Diagnosis::HeartFailure => {
                let w = self.baseline_weight;
                vec![
                    target(
                        codes::BODY_WEIGHT,
                        "kg",
                        zone(Some(w - 1.0), Some(w + 1.0)),
                        zone(Some(w - 2.5), Some(w + 2.5)),
                    ),
                    target(
                        codes::SYSTOLIC_BP,
                        "mm[Hg]",
                        zone(Some(90.0), Some(145.0)),
                        zone(Some(80.0), Some(165.0)),
                    ),
                    target(
                        codes::DIASTOLIC_BP,
                        "mm[Hg]",
                        zone(Some(55.0), Some(90.0)),
                        zone(Some(50.0), Some(100.0)),
                    ),
                ]
            }
            Diagnosis::Diabetes => vec![target(
                codes::BLOOD_GLUCOSE,
                "mmol/L",
                zone(Some(4.0), Some(10.0)),
                zone(Some(3.0), Some(15.0)),
            )],
        };
        CarePlan {
            plan_id: "egenbehandlingsplan".into(),
            patient: self.id.clone(),
            version: 1,
            targets,
            updated_by: match self.diagnosis {
                Diagnosis::Copd => fixtures::lung_clinic(),
                _ => fixtures::gp(),
            },
            updated_at: 1_700_000_000_000,
        }
    }
}

/// What the fleet produced next.
#[derive(Debug, Clone)]
pub enum SimEvent {
    Measurement(Measurement),
    SelfReport(SelfReport),
}

/// What makes a fleet's traffic less tidy than a lab's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimOptions {
    /// Fraction of readings synced late: their effective time lies up to
    /// `late_max_hours` back (an app that was offline).
    pub late_fraction: f64,
    /// How far back a late reading may lie, in hours.
    pub late_max_hours: u32,
    /// Fraction of submissions that are malformed (implausible value, unknown code or a
    /// patient number with a wrong check digit); the hub must refuse exactly these.
    pub malformed_fraction: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            late_fraction: 0.0,
            late_max_hours: 12,
            malformed_fraction: 0.0,
        }
    }
}

/// One submission and whether the simulator broke it on purpose.
#[derive(Debug, Clone)]
pub struct Submission {
    pub event: SimEvent,
    pub malformed: bool,
}

/// A deterministic fleet (same seed, same patients and readings).
#[derive(Debug)]
pub struct Fleet {
    patients: Vec<SimPatient>,
    rng: StdRng,
    options: SimOptions,
}

impl Fleet {
    pub fn new(seed: u64, size: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let patients = (0..size)
            .map(|i| SimPatient {
                id: fixtures::patient(seed.wrapping_mul(1_000_003).wrapping_add(i as u64)),
                diagnosis: match i % 3 {
                    0 => Diagnosis::Copd,
                    1 => Diagnosis::HeartFailure,
                    _ => Diagnosis::Diabetes,
                },
                exacerbation: 0,
                baseline_weight: rng.random_range(55.0..110.0),
            })
            .collect();
        Self {
            patients,
            rng,
            options: SimOptions::default(),
        }
    }

    pub fn with_options(seed: u64, size: usize, options: SimOptions) -> Self {
        Self {
            options,
            ..Self::new(seed, size)
        }
    }

    /// The next submission: a reading (maybe synced late), maybe malformed on purpose.
    pub fn next_submission(&mut self, now: Millis) -> Submission {
        let mut event = self.next_event(now);
        if self
            .rng
            .random_bool(self.options.late_fraction.clamp(0.0, 1.0))
        {
            let back = self.rng.random_range(
                3_600_000..=i64::from(self.options.late_max_hours.max(1)) * 3_600_000,
            );
            match &mut event {
                SimEvent::Measurement(m) => m.effective_time -= back,
                SimEvent::SelfReport(r) => r.authored_time -= back,
            }
        }
        let malformed = self
            .rng
            .random_bool(self.options.malformed_fraction.clamp(0.0, 1.0));
        if malformed {
            self.break_it(&mut event);
        }
        Submission { event, malformed }
    }

    /// Breaks one thing the hub's validation must catch.
    fn break_it(&mut self, event: &mut SimEvent) {
        let kind = self.rng.random_range(0..3);
        if kind == 0 || matches!(event, SimEvent::SelfReport(_)) {
            let patient = match event {
                SimEvent::Measurement(m) => &mut m.patient,
                SimEvent::SelfReport(r) => &mut r.patient,
            };
            // A wrong last check digit: never a valid number.
            let last = patient
                .value
                .pop()
                .and_then(|c| c.to_digit(10))
                .unwrap_or(0);
            patient
                .value
                .push(char::from(b'0' + ((last + 1) % 10) as u8));
            return;
        }
        if let SimEvent::Measurement(m) = event {
            if kind == 1 {
                m.code = "0000-0".into();
                m.snomed_code = None;
            } else {
                // A unit the code does not take.
                match (&mut m.value, m.components.first_mut()) {
                    (Some(q), _) => q.unit = "furlong".into(),
                    (None, Some(c)) => c.value.unit = "furlong".into(),
                    (None, None) => m.code = "0000-0".into(),
                }
            }
        }
    }

    pub fn patients(&self) -> &[SimPatient] {
        &self.patients
    }

    /// The next reading of a random patient, taken at `now`.
    pub fn next_event(&mut self, now: Millis) -> SimEvent {
        let i = self.rng.random_range(0..self.patients.len());
        if self.patients[i].exacerbation == 0 && self.rng.random_bool(0.02) {
            self.patients[i].exacerbation = self.rng.random_range(3..10);
        }
        let worse = self.patients[i].exacerbation > 0;
        self.patients[i].exacerbation = self.patients[i].exacerbation.saturating_sub(1);
        // Daily rhythm: readings a little lower at night (hours 0-6 UTC).
        let night = (now / 3_600_000) % 24 < 6;
        let rng = &mut self.rng;
        let p = &self.patients[i];
        let at = now - rng.random_range(0..60_000);
        match p.diagnosis {
            Diagnosis::Copd => match rng.random_range(0..3) {
                0 => {
                    let base = if worse {
                        rng.random_range(84.0..91.0)
                    } else {
                        rng.random_range(92.0..98.0)
                    };
                    SimEvent::Measurement(fixtures::spo2(
                        &p.id,
                        round1(base - if night { 1.0 } else { 0.0 }),
                        at,
                    ))
                }
                1 => SimEvent::Measurement(single(
                    &p.id,
                    codes::HEART_RATE,
                    "364075005",
                    "/min",
                    round0(if worse {
                        rng.random_range(95.0..125.0)
                    } else {
                        rng.random_range(60.0..90.0)
                    }),
                    at,
                )),
                _ => {
                    let mut r = fixtures::self_report(&p.id, at);
                    r.score = Some(round0(if worse {
                        rng.random_range(20.0..35.0)
                    } else {
                        rng.random_range(5.0..15.0)
                    }));
                    SimEvent::SelfReport(r)
                }
            },
            Diagnosis::HeartFailure => match rng.random_range(0..3) {
                0 => SimEvent::Measurement(single(
                    &p.id,
                    codes::BODY_WEIGHT,
                    "27113001",
                    "kg",
                    round1(
                        p.baseline_weight
                            + if worse {
                                rng.random_range(1.5..4.0)
                            } else {
                                rng.random_range(-0.5..0.5)
                            },
                    ),
                    at,
                )),
                1 => SimEvent::Measurement(fixtures::blood_pressure(
                    &p.id,
                    round0(if worse {
                        rng.random_range(150.0..185.0)
                    } else {
                        rng.random_range(110.0..140.0)
                    }),
                    round0(if worse {
                        rng.random_range(90.0..110.0)
                    } else {
                        rng.random_range(65.0..88.0)
                    }),
                    at,
                )),
                _ => SimEvent::Measurement(single(
                    &p.id,
                    codes::HEART_RATE,
                    "364075005",
                    "/min",
                    round0(rng.random_range(55.0..100.0)),
                    at,
                )),
            },
            Diagnosis::Diabetes => SimEvent::Measurement(single(
                &p.id,
                codes::BLOOD_GLUCOSE,
                "434912009",
                "mmol/L",
                round1(if worse {
                    rng.random_range(14.0..22.0)
                } else {
                    rng.random_range(4.5..9.0)
                }),
                at,
            )),
        }
    }
}

/// Where the simulator publishes.
#[derive(Debug, Clone)]
pub enum Sink {
    /// The publishing library, straight to Kafka.
    Library(Publisher),
    /// The ingest gateway over HTTP.
    Gateway(GatewayClient),
}

/// What became of one submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged by the broker.
    Accepted,
    /// Refused as invalid (the fix is in the record).
    Rejected,
    /// Not stored for another reason (backpressure, unreachable): retryable.
    Failed,
}

impl Sink {
    pub async fn submit(&self, event: &SimEvent) -> Outcome {
        match self {
            Sink::Library(p) => {
                let result = match event {
                    SimEvent::Measurement(m) => p.publish_measurement(m).await,
                    SimEvent::SelfReport(r) => p.publish_self_report(r).await,
                };
                match result {
                    Ok(_) => Outcome::Accepted,
                    Err(dho_publisher::Error::Invalid(_)) => Outcome::Rejected,
                    Err(_) => Outcome::Failed,
                }
            }
            Sink::Gateway(client) => client.submit(event).await,
        }
    }
}

/// A device platform's HTTP client for the gateway: the native JSON endpoints, or (after
/// [`GatewayClient::fhir`]) one-entry FHIR batch Bundles as a VKP client sends them.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base_url: String,
    token: String,
    fhir: bool,
}

impl GatewayClient {
    /// `base_url` like `http://127.0.0.1:8090`; `token` the platform's bearer token.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.into().trim_end_matches('/').to_string(),
            token: token.into(),
            fhir: false,
        }
    }

    /// Sends FHIR Bundles (`POST /fhir/Bundle`) instead of the native JSON form.
    pub fn fhir(mut self) -> Self {
        self.fhir = true;
        self
    }

    pub async fn submit(&self, event: &SimEvent) -> Outcome {
        if self.fhir {
            return self.submit_fhir(event).await;
        }
        let (path, body) = match event {
            SimEvent::Measurement(m) => ("measurements", serde_json::to_value(m)),
            SimEvent::SelfReport(r) => ("selfreports", serde_json::to_value(r)),
        };
        let Ok(body) = body else {
            return Outcome::Rejected;
        };
        let response = self
            .http
            .post(format!("{}/{path}", self.base_url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await;
        match response.map(|r| r.status()) {
            Ok(s) if s.is_success() => Outcome::Accepted,
            Ok(s) if s.is_client_error() => Outcome::Rejected,
            _ => Outcome::Failed,
        }
    }
}

impl GatewayClient {
    async fn submit_fhir(&self, event: &SimEvent) -> Outcome {
        use dho_schemas::fhir;
        let resource = match event {
            SimEvent::Measurement(m) => fhir::observation_from_measurement(m),
            SimEvent::SelfReport(r) => fhir::questionnaire_response_from_self_report(r),
        };
        let bundle = serde_json::json!({
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{
                "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }],
        });
        let response = self
            .http
            .post(format!("{}/fhir/Bundle", self.base_url))
            .bearer_auth(&self.token)
            .header("content-type", "application/fhir+json")
            .json(&bundle)
            .send()
            .await;
        let Ok(response) = response else {
            return Outcome::Failed;
        };
        if !response.status().is_success() {
            return Outcome::Failed;
        }
        let Ok(answer) = response.json::<serde_json::Value>().await else {
            return Outcome::Failed;
        };
        let status = answer["entry"][0]["response"]["status"]
            .as_str()
            .unwrap_or_default();
        match status.as_bytes().first() {
            Some(b'2') => Outcome::Accepted,
            Some(b'4') => Outcome::Rejected,
            _ => Outcome::Failed,
        }
    }
}

/// A care organisation that enrols the simulated fleet through the gateway before it
/// streams, so its readings are delivered (and alert) instead of being withheld.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The enrolling organisation: the one whose token the client holds. It is the consent's
    /// permitted recipient and the care plans' author.
    pub org: OrganisationIdentifier,
    /// The organisation's subscriber (delivery topic) the subscriptions are for.
    pub subscriber_id: String,
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
    /// organisation (every category, `POST /fhir/Consent`), a subscription for the
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
        self.send_retrying("consent", reqwest::Method::POST, "/fhir/Consent", &consent)
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

/// Totals of a [`run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Submissions made.
    pub offered: u64,
    /// Of them, broken on purpose.
    pub malformed: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Malformed submissions that were accepted (must stay 0).
    pub malformed_accepted: u64,
    /// Ticks that found every worker busy (the offered rate was not met).
    pub late_ticks: u64,
}

/// Offers `rate` submissions per second for `duration`, at most `concurrency` at once.
pub async fn run(
    mut fleet: Fleet,
    sink: Sink,
    rate: f64,
    duration: Duration,
    concurrency: usize,
) -> RunStats {
    let counters: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut offered, mut malformed, mut late_ticks) = (0, 0, 0);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    while started.elapsed() < duration {
        ticker.tick().await;
        let submission = fleet.next_submission(now_millis());
        offered += 1;
        malformed += u64::from(submission.malformed);
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                late_ticks += 1;
                permits.clone().acquire_owned().await.expect("never closed")
            }
        };
        let (sink, counters) = (sink.clone(), counters.clone());
        tasks.spawn(async move {
            let outcome = sink.submit(&submission.event).await;
            let slot = match outcome {
                Outcome::Accepted if submission.malformed => 3,
                Outcome::Accepted => 0,
                Outcome::Rejected => 1,
                Outcome::Failed => 2,
            };
            counters[slot].fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let get = |i: usize| counters[i].load(Ordering::Relaxed);
    RunStats {
        offered,
        malformed,
        accepted: get(0) + get(3),
        rejected: get(1),
        failed: get(2),
        malformed_accepted: get(3),
        late_ticks,
    }
}

fn single(
    patient: &PatientIdentifier,
    code: &str,
    snomed: &str,
    unit: &str,
    value: f64,
    at: Millis,
) -> Measurement {
    let mut m = fixtures::spo2(patient, value, at);
    m.code = code.into();
    m.snomed_code = Some(snomed.into());
    m.value = Some(Quantity {
        value,
        unit: unit.into(),
    });
    m.source.device_type = Some(
        match code {
            codes::HEART_RATE => "pulse oximeter",
            codes::BODY_WEIGHT => "scale",
            _ => "glucose meter",
        }
        .into(),
    );
    m
}

fn round0(v: f64) -> f64 {
    v.round()
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::Policy;

    #[test]
    fn every_simulated_event_is_valid() {
        let mut fleet = Fleet::new(1, 50);
        let now = now_millis();
        for _ in 0..5000 {
            match fleet.next_event(now) {
                SimEvent::Measurement(m) => m.validate(Policy::default(), now).unwrap(),
                SimEvent::SelfReport(r) => r.validate(Policy::default(), now).unwrap(),
            }
        }
    }

    #[test]
    fn malformed_submissions_fail_validation_and_late_ones_lie_back() {
        let options = SimOptions {
            late_fraction: 0.3,
            late_max_hours: 6,
            malformed_fraction: 0.2,
        };
        let mut fleet = Fleet::with_options(3, 30, options);
        let now = now_millis();
        let (mut bad, mut late) = (0, 0);
        for _ in 0..3000 {
            let s = fleet.next_submission(now);
            let (valid, at) = match &s.event {
                SimEvent::Measurement(m) => {
                    (m.validate(Policy::default(), now).is_ok(), m.effective_time)
                }
                SimEvent::SelfReport(r) => {
                    (r.validate(Policy::default(), now).is_ok(), r.authored_time)
                }
            };
            assert_eq!(valid, !s.malformed);
            bad += u64::from(s.malformed);
            if now - at > 3_600_000 - 60_000 {
                late += 1;
                assert!(now - at <= 6 * 3_600_000 + 60_000);
            }
        }
        assert!((400..800).contains(&bad), "{bad} malformed");
        assert!((700..1100).contains(&late), "{late} late");
    }

    #[test]
    fn the_fleet_is_deterministic_and_its_patients_distinct() {
        let a = Fleet::new(9, 50);
        let b = Fleet::new(9, 50);
        let ids: std::collections::BTreeSet<_> =
            a.patients().iter().map(|p| p.id.value.clone()).collect();
        assert_eq!(ids.len(), 50);
        assert!(
            a.patients()
                .iter()
                .zip(b.patients())
                .all(|(x, y)| x.id == y.id)
        );
    }
}
