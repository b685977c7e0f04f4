//! Event ids: derived from the sending platform, the reading's kind and the platform's own
//! id of it (`source_id`) when there is one, so a re-sent reading gets the same event id
//! (and [`crate::resent`] can recognise it); random otherwise.

use dho_schemas::fhir::Ingested;
use dho_schemas::model::*;

/// Which topic a reading goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Measurement,
    SelfReport,
}

/// Namespace of event ids derived from a sender's own record id (UUID v5): a platform that
/// re-sends a reading after a lost answer gets the same event id, so downstream can drop
/// the repeat.
const EVENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a0e_54d1_7c1b_4f0e_9b7d_2f45_d1c3_a001);

/// Event id: derived from the sender's id when there is one (a retry maps to the same
/// event), random otherwise.
fn event_id(platform: &OrganisationIdentifier, kind: Kind, source_id: Option<&str>) -> String {
    match source_id {
        Some(id) => derived_event_id(platform, kind, id),
        None => uuid::Uuid::new_v4(),
    }
    .to_string()
}

/// The event id of the reading of `kind` that `platform` calls `source_id`. A FHIR id is
/// unique per resource type, so an Observation and a QuestionnaireResponse may share one:
/// the kind is part of the name. (A measurement's name has no kind, as before self-reports
/// were told apart, so ids already given stay the same.)
pub(crate) fn derived_event_id(
    platform: &OrganisationIdentifier,
    kind: Kind,
    source_id: &str,
) -> uuid::Uuid {
    let name = match kind {
        Kind::Measurement => format!("{}|{source_id}", platform.value),
        Kind::SelfReport => format!("{}|QuestionnaireResponse|{source_id}", platform.value),
    };
    uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
}

pub(crate) fn assign_event_id(event: &mut Ingested, platform: &OrganisationIdentifier) {
    match event {
        Ingested::Measurement(m) => {
            m.event_id = event_id(platform, Kind::Measurement, m.source_id.as_deref())
        }
        Ingested::SelfReport(r) => {
            r.event_id = event_id(platform, Kind::SelfReport, r.source_id.as_deref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;

    #[test]
    fn event_ids_are_stable_per_platform_and_sender_id_and_random_otherwise() {
        let p = fixtures::platform();
        let q = fixtures::gp();
        for kind in [Kind::Measurement, Kind::SelfReport] {
            let id = |platform, source_id| event_id(platform, kind, source_id);
            assert_eq!(id(&p, Some("obs-1")), id(&p, Some("obs-1")));
            assert_ne!(id(&p, Some("obs-1")), id(&p, Some("obs-2")));
            assert_ne!(id(&p, Some("obs-1")), id(&q, Some("obs-1")));
            assert_ne!(id(&p, None), id(&p, None));
        }
    }

    #[test]
    fn an_observation_and_a_questionnaire_response_with_one_id_are_two_events() {
        let p = fixtures::platform();
        assert_ne!(
            event_id(&p, Kind::Measurement, Some("1")),
            event_id(&p, Kind::SelfReport, Some("1"))
        );
        // Measurements keep the ids they were given before the kind was part of the name.
        let before = uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, format!("{}|1", p.value).as_bytes());
        assert_eq!(
            event_id(&p, Kind::Measurement, Some("1")),
            before.to_string()
        );
    }
}
