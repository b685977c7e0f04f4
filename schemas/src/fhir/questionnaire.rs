//! QuestionnaireResponse ↔ [`SelfReport`], and a questionnaire score Observation (LOINC
//! 74465-6) → [`SelfReport`] (VKP_FHIR.md §5).
//!
//! Two choices VKP leaves open, made here: the data controller of a QuestionnaireResponse is
//! its `author` when that is an organisation (R4: who received and recorded the answers);
//! the questionnaire a score belongs to is named by the score Observation's
//! `derivedFrom[0].reference` (`Questionnaire/<id>` or a canonical, `|version` optional).

use super::types::{self, QuestionnaireAnswer, QuestionnaireItem, QuestionnaireResponse};
use super::{FhirError, IngestContext, IssueCode, VkpCode};
use crate::model::*;

/// How a questionnaire named by a bare id (not a canonical URL) is written as R4's
/// `QuestionnaireResponse.questionnaire`, which must be an absolute URI.
pub const BARE_ID_PREFIX: &str = "urn:dho:questionnaire:";

const ACCEPTED_STATUSES: &[&str] = &["completed", "amended"];
const OTHER_STATUSES: &[&str] = &["in-progress", "stopped", "entered-in-error"];

fn status(status: Option<&str>) -> Result<(), FhirError> {
    let location = "QuestionnaireResponse.status";
    match status {
        Some(s) if ACCEPTED_STATUSES.contains(&s) => Ok(()),
        Some(s) if OTHER_STATUSES.contains(&s) => Err(FhirError::format(
            location,
            IssueCode::NotSupported,
            format!("status {s}: only completed or amended responses are forwarded"),
        )),
        Some(_) => Err(FhirError::format(
            location,
            IssueCode::CodeInvalid,
            "not a QuestionnaireResponse status",
        )),
        None => Err(FhirError::format(
            location,
            IssueCode::Required,
            "status is required",
        )),
    }
}

/// `id|version` → (id, version).
fn split_canonical(text: &str) -> (String, Option<String>) {
    match text.split_once('|') {
        Some((id, version)) => (id.to_string(), Some(version.to_string())),
        None => (text.to_string(), None),
    }
}

/// Flattens items (groups and answers nest them) into answers in document order, with the
/// FHIR location of each; each answer keeps where its item sits (`nested_in`: the groups,
/// `<linkId>#<instance>`, and parent answers, `<linkId>:<answer index>`, above it), so the
/// output can nest them again.
fn flatten(
    location: &str,
    items: &[QuestionnaireItem],
    nested_in: &mut Vec<String>,
    out: &mut Vec<(Answer, String)>,
) -> Result<(), FhirError> {
    // How many groups of each linkId came before, among these siblings.
    let mut instances: Vec<(&str, usize)> = vec![];
    for (i, item) in items.iter().enumerate() {
        let at = format!("{location}.item[{i}]");
        let link_id = item
            .link_id
            .clone()
            .filter(|l| !l.trim().is_empty())
            .ok_or_else(|| {
                FhirError::format(
                    format!("{at}.linkId"),
                    IssueCode::Required,
                    "linkId is required",
                )
            })?;
        for (k, answer) in item.answer.iter().enumerate() {
            let answer_at = format!("{at}.answer[{k}]");
            let mut value = self::answer(&answer_at, link_id.clone(), answer)?;
            value.nested_in = nested_in.clone();
            out.push((value, answer_at.clone()));
            nested_in.push(format!("{link_id}:{k}"));
            flatten(&answer_at, &answer.item, nested_in, out)?;
            nested_in.pop();
        }
        if !item.item.is_empty() {
            let link = item.link_id.as_deref().unwrap_or_default();
            let instance = match instances.iter_mut().find(|(l, _)| *l == link) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    instances.push((link, 0));
                    0
                }
            };
            nested_in.push(format!("{link_id}#{instance}"));
            flatten(&at, &item.item, nested_in, out)?;
            nested_in.pop();
        }
    }
    Ok(())
}

/// A QuestionnaireResponse item being rebuilt from flat answers, with the `nested_in` step
/// that names it (empty for an item that holds answers).
struct Node {
    step: String,
    item: QuestionnaireItem,
    /// Per answer of `item`, the items nested in it.
    answer_items: Vec<Vec<Node>>,
    items: Vec<Node>,
}

impl Node {
    fn new(step: String, link_id: &str) -> Self {
        Self {
            step,
            item: QuestionnaireItem {
                link_id: Some(link_id.to_string()),
                ..Default::default()
            },
            answer_items: vec![],
            items: vec![],
        }
    }

    fn into_item(self) -> QuestionnaireItem {
        let mut item = self.item;
        for (answer, nested) in item.answer.iter_mut().zip(self.answer_items) {
            answer.item = nested.into_iter().map(Node::into_item).collect();
        }
        item.item = self.items.into_iter().map(Node::into_item).collect();
        item
    }
}

/// The items `nested_in` leads to, from `items`: each step is the last sibling it names
/// (answers come in document order), made if there is none yet.
fn nested<'a>(mut items: &'a mut Vec<Node>, nested_in: &[String]) -> &'a mut Vec<Node> {
    for step in nested_in {
        if let Some((link_id, index)) = step.rsplit_once(':')
            && let Ok(index) = index.parse::<usize>()
        {
            // Under an answer of the last item with that linkId.
            let at = items
                .iter()
                .rposition(|n| n.step.is_empty() && n.item.link_id.as_deref() == Some(link_id));
            let at = at.unwrap_or_else(|| {
                items.push(Node::new(String::new(), link_id));
                items.len() - 1
            });
            let node = &mut items[at];
            while node.answer_items.len() <= index {
                node.answer_items.push(vec![]);
            }
            items = &mut node.answer_items[index];
        } else {
            let link_id = step.rsplit_once('#').map_or(step.as_str(), |(l, _)| l);
            if items.last().is_none_or(|n| n.step != *step) {
                items.push(Node::new(step.clone(), link_id));
            }
            items = &mut items.last_mut().expect("just made").items;
        }
    }
    items
}

fn answer(location: &str, link_id: String, a: &QuestionnaireAnswer) -> Result<Answer, FhirError> {
    if let Some(key) = a.other.keys().find(|k| k.starts_with("value")) {
        // The key is sender text: name it only if it looks like a FHIR element name.
        let element = if key.len() <= 40 && key.chars().all(|c| c.is_ascii_alphabetic()) {
            key.as_str()
        } else {
            "value[x]"
        };
        return Err(FhirError::format(
            format!("{location}.{element}"),
            IssueCode::NotSupported,
            "answers may be boolean, integer, decimal, string or Coding",
        ));
    }
    let value_coding = a
        .value_coding
        .as_ref()
        .map(|c| match (&c.system, &c.code) {
            (Some(system), Some(code)) => Ok(Coding {
                system: system.clone(),
                code: code.clone(),
                display: c.display.clone(),
            }),
            _ => Err(FhirError::format(
                format!("{location}.valueCoding"),
                IssueCode::Value,
                "a coded answer needs a system and a code",
            )),
        })
        .transpose()?;
    let answer = Answer {
        link_id,
        value_boolean: a.value_boolean,
        value_integer: a.value_integer,
        value_decimal: a.value_decimal,
        value_string: a.value_string.clone(),
        value_coding,
        nested_in: vec![],
    };
    let set = [
        answer.value_boolean.is_some(),
        answer.value_integer.is_some(),
        answer.value_decimal.is_some(),
        answer.value_string.is_some(),
        answer.value_coding.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(FhirError::format(
            location,
            IssueCode::Value,
            "an answer has exactly one value[x]",
        ));
    }
    Ok(answer)
}

/// The data controller of a QuestionnaireResponse: its organisation `author`.
fn controller(author: Option<&types::Reference>) -> Result<OrganisationIdentifier, FhirError> {
    let location = "QuestionnaireResponse.author";
    match author {
        Some(a) if super::is_organisation(a) => super::organisation(location, a),
        _ => Err(FhirError::new(
            location,
            IssueCode::Required,
            VkpCode::SystemId,
            "the author must be the data controller organisation (organisation number or RESH)",
        )),
    }
}

fn validated(
    report: SelfReport,
    ctx: &IngestContext,
    root: &str,
    fields: Vec<(String, String)>,
) -> Result<SelfReport, FhirError> {
    report
        .validate(ctx.policy, ctx.received_time)
        .map_err(|e| super::from_validation(root, &fields, e))?;
    Ok(report)
}

/// Maps a QuestionnaireResponse (FHIR JSON) to a [`SelfReport`], validated. Nested items
/// are flattened in document order; a repeated item gives one answer per value.
pub fn self_report_from_questionnaire_response(
    json: &serde_json::Value,
    ctx: &IngestContext,
) -> Result<SelfReport, FhirError> {
    let root = "QuestionnaireResponse";
    if json.get("resourceType").and_then(|t| t.as_str()) != Some(root) {
        return Err(FhirError::format(
            "resourceType",
            IssueCode::NotSupported,
            "expected a QuestionnaireResponse",
        ));
    }
    let qr: QuestionnaireResponse = super::parse(root, json)?;
    status(qr.status.as_deref())?;
    let (questionnaire_id, questionnaire_version) = qr
        .questionnaire
        .as_deref()
        .map(|q| split_canonical(q.strip_prefix(BARE_ID_PREFIX).unwrap_or(q)))
        .ok_or_else(|| {
            FhirError::format(
                "QuestionnaireResponse.questionnaire",
                IssueCode::Required,
                "the questionnaire is required",
            )
        })?;
    let patient = super::patient(
        "QuestionnaireResponse.subject",
        qr.subject.as_ref(),
        ctx.policy,
    )?;
    let data_controller = controller(qr.author.as_ref())?;
    let authored_time = super::time("QuestionnaireResponse.authored", qr.authored.as_deref())?;
    let mut flat = vec![];
    flatten(root, &qr.item, &mut vec![], &mut flat)?;
    let mut fields = vec![
        (
            "patient".into(),
            "QuestionnaireResponse.subject.identifier".into(),
        ),
        (
            "data_controller".into(),
            "QuestionnaireResponse.author.identifier".into(),
        ),
        (
            "questionnaire_id".into(),
            "QuestionnaireResponse.questionnaire".into(),
        ),
        (
            "authored_time".into(),
            "QuestionnaireResponse.authored".into(),
        ),
    ];
    fields.extend(
        flat.iter()
            .enumerate()
            .map(|(i, (_, at))| (format!("answers[{i}]"), at.clone())),
    );
    let report = SelfReport {
        event_id: ctx.event_id.clone(),
        source_id: qr.identifier.as_ref().and_then(|i| i.value.clone()),
        patient,
        source: Source {
            platform: ctx.platform.clone(),
            device_id: None,
            device_type: None,
        },
        data_controller,
        questionnaire_id,
        questionnaire_version,
        authored_time,
        received_time: ctx.received_time,
        answers: flat.into_iter().map(|(a, _)| a).collect(),
        score: None,
    };
    validated(report, ctx, root, fields)
}

/// Maps a parsed score Observation; the caller has checked its code.
pub(super) fn score_from_observation(
    obs: &types::Observation,
    ctx: &IngestContext,
) -> Result<SelfReport, FhirError> {
    super::observation::status(obs.status.as_deref())?;
    let (questionnaire_id, questionnaire_version) = obs
        .derived_from
        .first()
        .and_then(|r| r.reference.as_deref())
        .map(|r| split_canonical(r.strip_prefix("Questionnaire/").unwrap_or(r)))
        .ok_or_else(|| {
            FhirError::format(
                "Observation.derivedFrom",
                IssueCode::Required,
                "a score names its questionnaire in derivedFrom[0].reference",
            )
        })?;
    let score = match (&obs.value_quantity, obs.value_integer) {
        (Some(q), _) => q.value.ok_or_else(|| {
            FhirError::format(
                "Observation.valueQuantity.value",
                IssueCode::Value,
                "the score has no value",
            )
        })?,
        (None, Some(i)) => i as f64,
        (None, None) => {
            return Err(FhirError::format(
                "Observation.value[x]",
                IssueCode::Value,
                "a score needs valueQuantity or valueInteger",
            ));
        }
    };
    let patient = super::patient("Observation.subject", obs.subject.as_ref(), ctx.policy)?;
    let data_controller =
        super::data_controller("Observation", &obs.performer, &ctx.platform, ctx.policy)?;
    let (authored_time, effective_location) = super::observation::effective(obs)?;
    let device = obs.device.as_ref();
    let report = SelfReport {
        event_id: ctx.event_id.clone(),
        source_id: super::source_id(&obs.identifier),
        patient,
        source: super::source(&ctx.platform, device),
        data_controller,
        questionnaire_id,
        questionnaire_version,
        authored_time,
        received_time: ctx.received_time,
        answers: vec![],
        score: Some(score),
    };
    let fields = vec![
        ("authored_time".into(), effective_location),
        ("questionnaire_id".into(), "Observation.derivedFrom".into()),
        ("score".into(), "Observation.value[x]".into()),
    ];
    validated(report, ctx, "Observation", fields)
}

/// Maps a questionnaire score Observation (LOINC 74465-6, FHIR JSON) to a [`SelfReport`]
/// with the score and no answers, validated.
pub fn self_report_from_score_observation(
    json: &serde_json::Value,
    ctx: &IngestContext,
) -> Result<SelfReport, FhirError> {
    match super::ingest_resource(json, ctx)? {
        super::Ingested::SelfReport(r) => Ok(r),
        super::Ingested::Measurement(_) => Err(FhirError::format(
            "Observation.code",
            IssueCode::CodeInvalid,
            "a questionnaire score is coded LOINC 74465-6",
        )),
    }
}

/// The QuestionnaireResponse of a self-report, its groups and answers nested as they came
/// (`Answer.nested_in`). Consecutive answers to one linkId become one item with several
/// answers. The score is not part of a QuestionnaireResponse (VKP sends it as its own
/// Observation), so it is not written here; a self-report that is only a score goes out as
/// [`score_observation_from_self_report`].
pub fn questionnaire_response_from_self_report(r: &SelfReport) -> serde_json::Value {
    let mut root: Vec<Node> = vec![];
    for a in &r.answers {
        let answer = QuestionnaireAnswer {
            value_boolean: a.value_boolean,
            value_integer: a.value_integer,
            value_decimal: a.value_decimal,
            value_string: a.value_string.clone(),
            value_coding: a
                .value_coding
                .as_ref()
                .map(|c| super::coding(&c.system, &c.code, c.display.as_deref())),
            ..Default::default()
        };
        let items = nested(&mut root, &a.nested_in);
        match items.last_mut() {
            Some(node)
                if node.step.is_empty() && node.item.link_id.as_ref() == Some(&a.link_id) =>
            {
                node.item.answer.push(answer)
            }
            _ => {
                let mut node = Node::new(String::new(), &a.link_id);
                node.item.answer.push(answer);
                items.push(node);
            }
        }
    }
    let items: Vec<QuestionnaireItem> = root.into_iter().map(Node::into_item).collect();
    // R4's `questionnaire` is a canonical, which must be an absolute URI: a bare id (as
    // platforms send it) goes out under BARE_ID_PREFIX and comes back in without it.
    let id = if r.questionnaire_id.contains(':') {
        r.questionnaire_id.clone()
    } else {
        format!("{BARE_ID_PREFIX}{}", r.questionnaire_id)
    };
    let questionnaire = match &r.questionnaire_version {
        Some(v) => format!("{id}|{v}"),
        None => id,
    };
    super::to_json(&QuestionnaireResponse {
        resource_type: "QuestionnaireResponse".into(),
        id: Some(r.event_id.clone()),
        identifier: r.source_id.as_ref().map(|id| types::Identifier {
            system: None,
            value: Some(id.clone()),
        }),
        questionnaire: Some(questionnaire),
        status: Some("completed".into()),
        subject: Some(super::patient_reference(&r.patient)),
        authored: Some(super::time::format(r.authored_time)),
        author: Some(super::organisation_reference(&r.data_controller)),
        item: items,
    })
}

/// The score Observation (LOINC 74465-6) of a self-report that carries a score and no
/// answers, as VKP sends a score: the form it belongs to in `derivedFrom`, the data
/// controller as organisation performer. `id` is the hub's event id.
pub fn score_observation_from_self_report(r: &SelfReport) -> serde_json::Value {
    // A canonical URL stays as it is; a bare id becomes a relative reference.
    let base = if r.questionnaire_id.contains("://") {
        r.questionnaire_id.clone()
    } else {
        format!("Questionnaire/{}", r.questionnaire_id)
    };
    let questionnaire = match &r.questionnaire_version {
        Some(v) => format!("{base}|{v}"),
        None => base,
    };
    let device = super::device_reference(&r.source);
    super::to_json(&types::Observation {
        resource_type: "Observation".into(),
        id: Some(r.event_id.clone()),
        meta: Some(types::Meta {
            profile: vec![format!(
                "{}vkp-Observation",
                super::observation::VKP_PROFILE_BASE
            )],
        }),
        identifier: super::identifiers(&r.source_id),
        status: Some("final".into()),
        category: vec![types::CodeableConcept {
            coding: vec![super::coding(
                super::OBSERVATION_CATEGORY,
                "survey",
                Some("Survey"),
            )],
            text: None,
        }],
        code: Some(types::CodeableConcept {
            coding: vec![super::coding(
                super::LOINC,
                crate::codes::QUESTIONNAIRE_SCORE,
                None,
            )],
            text: None,
        }),
        subject: Some(super::patient_reference(&r.patient)),
        effective_date_time: Some(super::time::format(r.authored_time)),
        performer: vec![super::organisation_reference(&r.data_controller)],
        value_quantity: r.score.map(|value| types::Quantity {
            value: Some(value),
            ..Default::default()
        }),
        derived_from: vec![types::Reference {
            reference: Some(questionnaire),
            ..Default::default()
        }],
        device,
        ..Default::default()
    })
}
