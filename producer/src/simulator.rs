//! A fleet of synthetic patients producing realistic home readings per diagnosis: COPD
//! (SpO2, pulse, symptom score), heart failure (weight, blood pressure, pulse) and diabetes
//! (glucose), with a daily rhythm and occasional exacerbations that cross care-plan limits.

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

/// What the fleet produced next.
#[derive(Debug, Clone)]
pub enum SimEvent {
    Measurement(Measurement),
    SelfReport(SelfReport),
}

/// A deterministic fleet (same seed, same patients and readings).
#[derive(Debug)]
pub struct Fleet {
    patients: Vec<SimPatient>,
    rng: StdRng,
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
        Self { patients, rng }
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
