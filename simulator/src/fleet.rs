//! The fleet: synthetic patients per diagnosis, each with the care plan a clinician would
//! agree with them, and their readings with a daily rhythm, exacerbations, late syncs and
//! (on purpose) malformed submissions.

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
                SimEvent::Measurement(m) => m.validate(Policy::SYNTHETIC_ALLOWED, now).unwrap(),
                SimEvent::SelfReport(r) => r.validate(Policy::SYNTHETIC_ALLOWED, now).unwrap(),
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
                SimEvent::Measurement(m) => (
                    m.validate(Policy::SYNTHETIC_ALLOWED, now).is_ok(),
                    m.effective_time,
                ),
                SimEvent::SelfReport(r) => (
                    r.validate(Policy::SYNTHETIC_ALLOWED, now).is_ok(),
                    r.authored_time,
                ),
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
