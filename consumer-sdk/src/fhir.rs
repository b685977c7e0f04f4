//! Conversion of a delivery to FHIR R4, for care systems that store FHIR.
//!
//! A measurement becomes the VKP-shaped `Observation` and a self-report the
//! `QuestionnaireResponse` the gateway accepts (the same mapping, in
//! `dho_schemas::fhir`), so mapping a converted resource back gives the original values.
//! A `QuestionnaireResponse` has no device and no score (VKP sends the score as its own
//! Observation), so those two parts of a self-report are not in it; a self-report with a
//! score and no answers comes out as that score Observation (LOINC 74465-6).
//! A MINIMAL delivery carries only a reference without values, an alert has no FHIR
//! mapping yet, and a "sharing ended" notice carries no clinical content: each is a typed
//! [`NotConvertible`] answer, never a made-up resource.

use dho_schemas::fhir::{
    observation_from_measurement, questionnaire_response_from_self_report,
    score_observation_from_self_report,
};
use dho_schemas::model::{DataCategory, Delivery, Payload};

use crate::Received;

/// Why a delivery has no FHIR resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotConvertible {
    /// A MINIMAL delivery: a reference to the event (category, code, time) without its
    /// values. Fetch the values from the data controller if the subscription allows it.
    #[error("a minimal delivery carries a reference to event {event_id} and no values to convert")]
    NoValues {
        event_id: String,
        category: DataCategory,
        code: Option<String>,
    },
    /// An alert: there is no FHIR mapping for alerts yet.
    #[error("alert {alert_id} has no FHIR mapping yet")]
    AlertNotYetConvertible { alert_id: String },
    /// The notice that a consent change ended this subscriber's deliveries of the patient
    /// ([`DeliveryKind::SharingEnded`](dho_schemas::model::DeliveryKind::SharingEnded)): no
    /// clinical content, so no FHIR resource. Stop expecting this patient's data of those
    /// categories; it is not a quiet patient.
    #[error("delivery {delivery_id} is a sharing-ended notice, without clinical content")]
    SharingEnded { delivery_id: String },
    /// The envelope carries no payload or several (a broken producer).
    #[error("delivery {delivery_id} carries no single payload")]
    NoPayload { delivery_id: String },
}

/// Converts a delivery to a FHIR R4 resource (JSON).
pub trait ToFhir {
    /// The `Observation` of a measurement or the `QuestionnaireResponse` of a self-report;
    /// its `id` is the hub's event id.
    fn to_fhir(&self) -> Result<serde_json::Value, NotConvertible>;
}

impl ToFhir for Delivery {
    fn to_fhir(&self) -> Result<serde_json::Value, NotConvertible> {
        match self.payload() {
            Some(Payload::Measurement(m)) => Ok(observation_from_measurement(m)),
            // A score without answers is what VKP sends as a score Observation: it goes
            // back out as one, not as an empty QuestionnaireResponse.
            Some(Payload::SelfReport(r)) if r.answers.is_empty() && r.score.is_some() => {
                Ok(score_observation_from_self_report(r))
            }
            Some(Payload::SelfReport(r)) => Ok(questionnaire_response_from_self_report(r)),
            Some(Payload::Reference(r)) => Err(NotConvertible::NoValues {
                event_id: r.event_id.clone(),
                category: r.category,
                code: r.code.clone(),
            }),
            Some(Payload::Alert(a)) => Err(NotConvertible::AlertNotYetConvertible {
                alert_id: a.alert_id.clone(),
            }),
            Some(Payload::SharingEnded(_)) => Err(NotConvertible::SharingEnded {
                delivery_id: self.delivery_id.clone(),
            }),
            None => Err(NotConvertible::NoPayload {
                delivery_id: self.delivery_id.clone(),
            }),
        }
    }
}

impl Received {
    /// The delivery as a FHIR R4 resource; see [`ToFhir`].
    pub fn to_fhir(&self) -> Result<serde_json::Value, NotConvertible> {
        self.delivery.to_fhir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fhir::{
        IngestContext, measurement_from_observation, self_report_from_questionnaire_response,
    };
    use dho_schemas::fixtures;
    use dho_schemas::model::*;

    const AT: Millis = 1_767_225_600_000;

    fn ctx(
        event_id: &str,
        received_time: Millis,
        platform: &OrganisationIdentifier,
    ) -> IngestContext {
        IngestContext {
            event_id: event_id.into(),
            received_time,
            platform: platform.clone(),
            policy: dho_schemas::Policy::SYNTHETIC_ALLOWED,
        }
    }

    /// Delivery → JSON text (as a FHIR server would store it) → the gateway's mapping.
    fn stored(delivery: &Delivery) -> serde_json::Value {
        let text = delivery.to_fhir().unwrap().to_string();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn measurements_round_trip_through_observation() {
        let patient = fixtures::patient(3);
        for m in [
            fixtures::spo2(&patient, 93.0, AT),
            fixtures::blood_pressure(&patient, 150.0, 95.0, AT),
        ] {
            let delivery = fixtures::delivery_of(&m);
            let json = stored(&delivery);
            assert_eq!(json["resourceType"], "Observation");
            assert_eq!(json["id"], m.event_id.as_str());
            let back = measurement_from_observation(
                &json,
                &ctx(&m.event_id, m.received_time, &m.source.platform),
            )
            .unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn a_received_delivery_converts_like_its_delivery() {
        let m = fixtures::spo2(&fixtures::patient(4), 88.0, AT);
        let delivery = fixtures::delivery_of(&m);
        let received = Received::for_test(delivery.clone());
        assert_eq!(received.to_fhir(), delivery.to_fhir());
    }

    #[test]
    fn self_reports_round_trip_through_questionnaire_response() {
        let mut r = fixtures::self_report(&fixtures::patient(5), AT);
        // A QuestionnaireResponse has no device, and VKP sends the score as its own
        // Observation: neither is part of the resource.
        r.source.device_id = None;
        r.source.device_type = None;
        r.score = None;
        let mut delivery = fixtures::delivery_of(&fixtures::spo2(&r.patient, 95.0, AT));
        delivery.measurement = None;
        delivery.self_report = Some(r.clone());
        let json = stored(&delivery);
        assert_eq!(json["resourceType"], "QuestionnaireResponse");
        let back = self_report_from_questionnaire_response(
            &json,
            &ctx(&r.event_id, r.received_time, &r.source.platform),
        )
        .unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_retraction_and_a_correction_are_kinds_of_their_own_with_their_fhir_status() {
        let original = fixtures::spo2(&fixtures::patient(8), 84.0, AT);
        assert_eq!(
            Received::for_test(fixtures::delivery_of(&original)).kind(),
            DeliveryKind::Disclosure
        );
        for status in ["entered-in-error", "amended", "corrected"] {
            let mut changed = original.clone();
            changed.status = Some(status.into());
            let mut delivery = fixtures::delivery_of(&changed);
            delivery.replaces = Some(Replaces {
                delivery_id: "d-0".into(),
                event_id: original.event_id.clone(),
                status: status.into(),
            });
            let received = Received::for_test(delivery.clone());
            match (status, received.kind()) {
                ("entered-in-error", DeliveryKind::Retraction(r))
                | ("amended" | "corrected", DeliveryKind::Correction(r)) => {
                    assert_eq!(r.delivery_id, "d-0")
                }
                (_, other) => panic!("{status}: {other:?}"),
            }
            let json = stored(&delivery);
            assert_eq!(json["status"], status);
            assert_eq!(json["id"], original.event_id.as_str());
            let back = measurement_from_observation(
                &json,
                &ctx(
                    &changed.event_id,
                    changed.received_time,
                    &changed.source.platform,
                ),
            )
            .unwrap();
            assert_eq!(back, changed);
        }
    }

    #[test]
    fn a_sharing_ended_notice_is_a_kind_of_its_own_without_fhir() {
        let m = fixtures::spo2(&fixtures::patient(9), 95.0, AT);
        let mut delivery = fixtures::delivery_of(&m);
        delivery.measurement = None;
        let ended = SharingEnded {
            recorded_by: Some(fixtures::home_care()),
            recorded_at: AT,
            categories: vec![DataCategory::Measurement, DataCategory::Alert],
        };
        delivery.sharing_ended = Some(ended.clone());
        let received = Received::for_test(delivery.clone());
        assert_eq!(received.kind(), DeliveryKind::SharingEnded(&ended));
        assert_eq!(
            received.delivery.payload(),
            Some(Payload::SharingEnded(&ended))
        );
        assert_eq!(
            received.to_fhir(),
            Err(NotConvertible::SharingEnded {
                delivery_id: delivery.delivery_id.clone()
            })
        );
    }

    #[test]
    fn a_minimal_delivery_has_no_values_to_convert() {
        let m = fixtures::spo2(&fixtures::patient(6), 95.0, AT);
        let mut delivery = fixtures::delivery_of(&m);
        delivery.content_level = ContentLevel::Minimal;
        delivery.measurement = None;
        delivery.reference = Some(EventReference {
            event_id: m.event_id.clone(),
            category: DataCategory::Measurement,
            code: Some(m.code.clone()),
            effective_time: m.effective_time,
        });
        assert_eq!(
            delivery.to_fhir(),
            Err(NotConvertible::NoValues {
                event_id: m.event_id,
                category: DataCategory::Measurement,
                code: Some(m.code),
            })
        );
    }

    #[test]
    fn alerts_are_not_convertible_yet_and_broken_envelopes_are_named() {
        let m = fixtures::spo2(&fixtures::patient(7), 86.0, AT);
        let mut delivery = fixtures::delivery_of(&m);
        delivery.measurement = None;
        delivery.alert = Some(Alert {
            alert_id: "alert-1".into(),
            patient: m.patient.clone(),
            kind: AlertKind::ZoneEntered,
            zone: Zone::Red,
            severity: VkpSeverity::Severe,
            code: m.code.clone(),
            plan_id: "plan-1".into(),
            plan_version: 1,
            plan_owner: None,
            triggering_event_id: Some(m.event_id.clone()),
            reading: Some(m.clone()),
            raised_at: AT,
        });
        assert_eq!(
            delivery.to_fhir(),
            Err(NotConvertible::AlertNotYetConvertible {
                alert_id: "alert-1".into()
            })
        );
        delivery.alert = None;
        let e = delivery.to_fhir().unwrap_err();
        assert_eq!(
            e,
            NotConvertible::NoPayload {
                delivery_id: "d-1".into()
            }
        );
        // No patient number in any message.
        assert!(!e.to_string().contains(&m.patient.value));
    }
}
