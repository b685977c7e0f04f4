//! Issue 20: the hub against HL7 Norway's own VKP examples (conformance/fixtures/vkp-observation,
//! committed with their provenance), and every FHIR resource the hub writes against FHIR R4
//! and the VKP profile rules it relies on.
//!
//! Each upstream Observation and Bundle example is ingested as the gateway does; those that
//! are VKP instances are accepted, map to the event model, travel as Avro in a `Delivery` and
//! come back out through the SDK's `to_fhir`. Every output is
//! - checked here against the rules of the profile it claims, read from
//!   `conformance/upstream/canonicals.json` (facts compiled from the pinned FSH): the
//!   profile exists, its fixed codes and units (own, of its VKP parent, and inherited from the
//!   R4 vital-sign parent) are present, and identifier systems bound (required) to VKP's own
//!   value sets are in them; the same checker runs over the upstream examples themselves;
//! - validated as FHIR R4 by HAPI's validator (`conformance/run --core`, Maven Central only),
//!   which fails this test if java or mvn is missing: it never skips.

use std::collections::BTreeMap;
use std::path::Path;

use dho_consumer::ToFhir;
use dho_schemas::fhir::{FhirError, IngestContext, Ingested, bundle, ingest_resource};
use dho_schemas::model::*;
use dho_schemas::{codec, fixtures};
use dho_tests::deploy::{repo, run_conformance};
use serde_json::Value;

const NOW: Millis = 1_767_225_600_000;

fn ctx() -> IngestContext {
    IngestContext {
        event_id: "0b7f3e52-55d1-4c0e-9a43-3f1d2f0c9a10".into(),
        received_time: NOW,
        platform: fixtures::platform(),
        policy: dho_schemas::Policy::SYNTHETIC_ALLOWED,
    }
}

fn load(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn vkp_fixtures() -> BTreeMap<String, Value> {
    let dir = repo().join("conformance/fixtures/vkp-observation");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(stem) = name.strip_suffix(".json")
            && !stem.ends_with(".provenance")
        {
            let provenance = dir.join(format!("{stem}.provenance.json"));
            let p = load(&provenance);
            assert_eq!(p["repository"], "HL7Norway/VkpObservation", "{stem}");
            assert!(
                p["commit"].as_str().is_some_and(|c| c.len() == 40),
                "{stem}"
            );
            assert!(p["path"].as_str().is_some(), "{stem}");
            out.insert(stem.to_string(), load(&path));
        }
    }
    out
}

/// What the hub must do with each upstream example, and why.
fn expected(name: &str) -> Result<(), &'static str> {
    match name {
        // Plain Observations in DIPS/no-domain style that claim no VKP profile: the subject
        // is a DIPS patient id, which no VKP profile (nor the hub) accepts.
        "blood-pressure-create"
        | "body-height-create"
        | "body-mass-index-create"
        | "heart-rate-create"
        | "level-of-consciousness-create"
        | "respiratory-rate-create" => Err("Observation.subject.identifier.system"),
        _ => Ok(()),
    }
}

fn delivery(ingested: &Ingested) -> Delivery {
    let mut d = fixtures::delivery_of(&fixtures::spo2(&fixtures::patient(1), 95.0, NOW));
    d.measurement = None;
    match ingested {
        Ingested::Measurement(m) => {
            d.patient = m.patient.clone();
            d.measurement = Some(m.clone());
        }
        Ingested::SelfReport(r) => {
            d.patient = r.patient.clone();
            d.self_report = Some(r.clone());
        }
    }
    // A retraction or correction goes out as the router sends it: replacing the earlier
    // delivery, so what is validated is that delivery kind's FHIR.
    if let Ingested::Measurement(m) = ingested
        && m.is_change()
    {
        d.replaces = Some(Replaces {
            delivery_id: "d-0".into(),
            event_id: m.event_id.clone(),
            status: m.status().into(),
        });
    }
    // As a subscriber gets it: Avro on the wire.
    codec::decode(&codec::encode(&d).unwrap()).unwrap()
}

fn ingest(json: &Value) -> Result<Vec<Ingested>, FhirError> {
    if json["resourceType"] == "Bundle" {
        bundle::split(json, |_| ctx())?
            .into_iter()
            .map(|o| o.result)
            .collect()
    } else {
        ingest_resource(json, &ctx()).map(|i| vec![i])
    }
}

// ---------------------------------------------------------------- profile rules

struct Canonicals(Value);

impl Canonicals {
    fn load() -> Self {
        Self(load(&repo().join("conformance/upstream/canonicals.json")))
    }

    fn profile(&self, url: &str) -> Option<&Value> {
        self.0["vkp-observation"]["profiles"]
            .as_object()?
            .values()
            .find(|p| p["url"] == url)
    }

    /// The fixed values and bindings of a profile, its VKP parents' and the R4 parent's,
    /// each with `required`: whether the slice it fixes must be present. The R4 vital-sign
    /// parents' slices are 1..1; VKP's own SNOMED CT code slices are `0..* MS`, except
    /// `code.coding[SCT] 1..*` in the CFS and NEWS2 profiles (their FSH; canonicals.json
    /// keeps the fixed values, not the cardinalities).
    fn rules(&self, url: &str) -> Vec<Value> {
        let mut out = vec![];
        let mut at = self.profile(url);
        while let Some(p) = at {
            for key in ["fixed", "inherited_fixed"] {
                for rule in p[key].as_array().into_iter().flatten() {
                    let mut rule = rule.clone();
                    let element = rule["element"].as_str().unwrap_or_default();
                    let required = key == "inherited_fixed"
                        || !element.contains(':')
                        || element == "Observation.code.coding:SCT.code";
                    rule["required"] = required.into();
                    out.push(rule);
                }
            }
            at = p["baseDefinition"].as_str().and_then(|b| self.profile(b));
        }
        out
    }

    /// The codes of the VKP CodeSystem behind a value set, if VKP defines one.
    fn codes_of(&self, value_set: &str) -> Option<Vec<String>> {
        let name = value_set.rsplit('/').next()?.strip_suffix(".valueset")?;
        let cs = &self.0["vkp-observation"]["codeSystems"][format!("{name}.codesystem")];
        Some(cs["codes"].as_object()?.keys().cloned().collect())
    }
}

fn codings(concept: &Value) -> Vec<(&str, &str)> {
    concept["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["system"].as_str().unwrap_or_default(),
                c["code"].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

/// The profile rules a resource breaks (empty: none), for the profile it claims.
fn broken_rules(canon: &Canonicals, resource: &Value) -> Vec<String> {
    let Some(url) = resource["meta"]["profile"][0].as_str() else {
        return vec![];
    };
    if canon.profile(url).is_none() {
        return vec![format!("claims {url}, which VKP does not define")];
    }
    let rules = canon.rules(url);
    let fixed = |element: &str| {
        rules
            .iter()
            .find(|r| r["element"] == element && r.get("value").is_some())
            .and_then(|r| r["value"].as_str())
    };
    let mut broken = vec![];
    for rule in rules.iter().filter(|r| r["required"] == true) {
        let element = rule["element"].as_str().unwrap_or_default();
        if let Some(value) = rule["value"].as_str() {
            // Code slices: a coding with the fixed code (and its slice's fixed system).
            if let Some(slice) = element
                .strip_prefix("Observation.code.coding:")
                .and_then(|s| s.strip_suffix(".code"))
            {
                let system = fixed(&format!("Observation.code.coding:{slice}.system"));
                let found = codings(&resource["code"])
                    .iter()
                    .any(|(s, c)| *c == value && system.is_none_or(|sys| sys == *s));
                if !found {
                    broken.push(format!("{element} = {value} missing"));
                }
            } else if let Some(rest) = element.strip_prefix("Observation.component:")
                && let Some((slice, tail)) = rest.split_once('.')
                && let Some(coding_slice) = tail
                    .strip_prefix("code.coding:")
                    .and_then(|s| s.strip_suffix(".code"))
            {
                let _ = (slice, coding_slice);
                let found = resource["component"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| codings(&c["code"]).iter().any(|(_, code)| *code == value));
                if !found {
                    broken.push(format!("{element} = {value}: no such component"));
                }
            } else if let Some(field) = element.strip_prefix("Observation.valueQuantity.") {
                if resource["valueQuantity"][field] != value {
                    broken.push(format!("{element} must be {value}"));
                }
            } else if element == "Bundle.type" && resource["type"] != value {
                broken.push(format!("Bundle.type must be {value}"));
            }
        } else if rule["strength"] == "required"
            && let Some(allowed) = rule["binding"].as_str().and_then(|b| canon.codes_of(b))
        {
            let systems: Vec<&str> = match element {
                "Observation.subject.identifier.system" => {
                    vec![
                        resource["subject"]["identifier"]["system"]
                            .as_str()
                            .unwrap_or(""),
                    ]
                }
                "Observation.performer.identifier.system" => resource["performer"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["identifier"]["system"].as_str().unwrap_or(""))
                    .collect(),
                _ => continue, // sliced performers: checked below as a union
            };
            for system in systems {
                if !allowed.iter().any(|a| a == system) {
                    broken.push(format!("{element}: {system} not in {allowed:?}"));
                }
            }
        }
    }
    // The general profile's performer slices (author: FNR; organization: orgnr/RESH).
    let sliced: Vec<String> = rules
        .iter()
        .filter(|r| {
            r["element"]
                .as_str()
                .is_some_and(|e| e.starts_with("Observation.performer:"))
                && r["element"]
                    .as_str()
                    .unwrap()
                    .ends_with(".identifier.system")
        })
        .filter_map(|r| canon.codes_of(r["binding"].as_str()?))
        .flatten()
        .collect();
    if !sliced.is_empty() {
        for p in resource["performer"].as_array().into_iter().flatten() {
            let system = p["identifier"]["system"].as_str().unwrap_or("");
            if !sliced.iter().any(|s| s == system) {
                broken.push(format!("performer system {system} in neither slice"));
            }
        }
    }
    broken
}

// ---------------------------------------------------------------- the tests

/// Every upstream example: accepted or refused as expected; every accepted one maps to the
/// model, comes back out as FHIR satisfying the profile it claims, and maps back to the same
/// event. Returns the outputs, by name.
fn outputs_of_upstream_examples() -> BTreeMap<String, Value> {
    let canon = Canonicals::load();
    let mut outputs = BTreeMap::new();
    let examples = vkp_fixtures();
    assert_eq!(
        examples.len(),
        16,
        "the 16 example instances of VkpObservation"
    );
    for (name, json) in &examples {
        // The checker agrees with upstream: its own examples keep their profiles' rules.
        assert_eq!(broken_rules(&canon, json), Vec::<String>::new(), "{name}");
        if json["type"] == "batch-response" {
            continue; // a response, not something a platform sends
        }
        match (ingest(json), expected(name)) {
            (Ok(ingested), Ok(())) => {
                for (i, item) in ingested.iter().enumerate() {
                    let out = delivery(item).to_fhir().unwrap();
                    let broken = broken_rules(&canon, &out);
                    assert_eq!(broken, Vec::<String>::new(), "{name}: output {out:#}");
                    // The output maps back to the same event.
                    let back = ingest_resource(&out, &ctx()).unwrap();
                    assert_eq!(&back, item, "{name}: output does not map back");
                    outputs.insert(format!("{name}.{i}"), out);
                }
            }
            (Err(e), Err(location)) => assert_eq!(e.location, location, "{name}: {e}"),
            (Ok(_), Err(_)) => panic!("{name}: accepted, but the example is not a VKP instance"),
            (Err(e), Ok(())) => panic!("{name}: refused: {e}"),
        }
    }
    outputs
}

#[test]
fn every_upstream_example_is_accepted_and_comes_back_out_conformant() {
    let outputs = outputs_of_upstream_examples();
    let out = |name: &str| &outputs[&format!("{name}.0")];
    // Status, date precision (no false midnight UTC) and units as VKP sent them.
    let glucose = out("vkp-glucose-create");
    assert_eq!(glucose["status"], "final");
    assert_eq!(glucose["effectiveDateTime"], "2022-03-17");
    assert_eq!(glucose["valueQuantity"]["code"], "mmol/L");
    assert_eq!(
        glucose["code"]["coding"][0]["display"],
        "Glucose [Moles/volume] in Blood"
    );
    // The mean blood pressure is carried; the pulse pressure (SNOMED only) is ignored.
    let bp = out("vkp-blood-pressure-profile-create");
    let components: Vec<&str> = bp["component"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"]["coding"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(components, ["8480-6", "8462-4", "8478-0"]);
    // CFS and NEWS2 are kinds of their own, claimed as their own profiles, scores unitless.
    let cfs = out("vkp-cfs-create");
    assert!(
        cfs["meta"]["profile"][0]
            .as_str()
            .unwrap()
            .ends_with("vkp-Observation-CFSscore")
    );
    assert_eq!(cfs["valueQuantity"], serde_json::json!({"value": 2.0}));
    let news2 = out("vkp-news2-create");
    assert!(
        news2["meta"]["profile"][0]
            .as_str()
            .unwrap()
            .ends_with("-NEWS2score")
    );
    assert_eq!(news2["component"].as_array().unwrap().len(), 7);
    // The Practitioner-only performer of a vital sign leaves the platform as data controller.
    let heart = out("vkp-heartrate-create");
    assert_eq!(
        heart["performer"][0]["identifier"]["value"],
        fixtures::platform().value
    );
    // The batch's entry.
    assert_eq!(
        out("pmd-Bundle-Request-example")["valueQuantity"]["code"],
        "Cel"
    );
}

/// The hub's own behaviours the upstream examples do not show, through the same checks.
fn outputs_of_edge_cases() -> BTreeMap<String, Value> {
    let canon = Canonicals::load();
    let base = &vkp_fixtures()["vkp-heartrate-create"];
    let mut cases: Vec<(&str, Value)> = vec![];
    let mut retracted = base.clone();
    retracted["status"] = "entered-in-error".into();
    cases.push(("status-entered-in-error", retracted));
    for status in ["amended", "corrected", "preliminary"] {
        let mut v = base.clone();
        v["status"] = status.into();
        cases.push((status, v));
    }
    let mut period = base.clone();
    period.as_object_mut().unwrap().remove("effectiveDateTime");
    period["effectivePeriod"] = serde_json::json!({"start": "2022-03-16T08:00:00+01:00", "end": "2022-03-16T08:05:00+01:00"});
    cases.push(("period", period));
    let mut acvpu = vkp_fixtures()["vkp-cfs-create"].clone();
    acvpu["meta"]["profile"][0] =
        "http://hl7.no/fhir/vkpobservation/StructureDefinition/vkp-Observation-Consciousness"
            .into();
    acvpu["code"] = serde_json::json!({"coding": [{"system": "http://snomed.info/sct", "code": "1104441000000107"}]});
    acvpu.as_object_mut().unwrap().remove("valueQuantity");
    acvpu["valueCodeableConcept"] = serde_json::json!({"coding": [{"system": "http://snomed.info/sct", "code": "248234008", "display": "Mentally alert"}]});
    cases.push(("acvpu", acvpu));
    let mut cgm = vkp_fixtures()["vkp-glucose-create"].clone();
    cgm["code"] =
        serde_json::json!({"coding": [{"system": "http://loinc.org", "code": "105272-9"}]});
    cases.push(("cgm", cgm));
    let mut outputs = BTreeMap::new();
    for (name, json) in cases {
        let ingested = ingest(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = delivery(&ingested[0]).to_fhir().unwrap();
        assert_eq!(
            broken_rules(&canon, &out),
            Vec::<String>::new(),
            "{name}: {out:#}"
        );
        assert_eq!(
            ingest_resource(&out, &ctx()).unwrap(),
            ingested[0],
            "{name}"
        );
        outputs.insert(name.to_string(), out);
    }
    outputs
}

#[test]
fn status_periods_coded_values_and_cgm_survive_the_trip() {
    let out = outputs_of_edge_cases();
    assert_eq!(out["status-entered-in-error"]["status"], "entered-in-error");
    assert_eq!(out["amended"]["status"], "amended");
    assert_eq!(out["corrected"]["status"], "corrected");
    assert_eq!(
        out["period"]["effectivePeriod"]["end"],
        "2022-03-16T07:05:00.000Z"
    );
    assert_eq!(
        out["acvpu"]["valueCodeableConcept"]["coding"][0]["code"],
        "248234008"
    );
    assert_eq!(out["cgm"]["code"]["coding"][0]["code"], "105272-9");
    assert!(out["cgm"]["code"]["coding"].as_array().unwrap().len() == 1);
}

/// The hub's own FHIR fixtures (schemas/fixtures/fhir/valid), as outputs.
fn outputs_of_hub_fixtures() -> BTreeMap<String, Value> {
    let canon = Canonicals::load();
    let dir = repo().join("schemas/fixtures/fhir/valid");
    let mut outputs = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let json = load(&path);
        let results: Vec<Result<Ingested, FhirError>> = if json["resourceType"] == "Bundle" {
            let mut ctx_now = ctx();
            ctx_now.received_time = dho_schemas::model::now_millis();
            bundle::split(&json, |_| ctx_now.clone())
                .unwrap()
                .into_iter()
                .map(|o| o.result)
                .collect()
        } else {
            let mut c = ctx();
            c.received_time = dho_schemas::model::now_millis();
            vec![ingest_resource(&json, &c)]
        };
        for (i, r) in results.into_iter().enumerate() {
            let Ok(item) = r else { continue }; // refused entries of a mixed batch
            let out = delivery(&item).to_fhir().unwrap();
            assert_eq!(
                broken_rules(&canon, &out),
                Vec::<String>::new(),
                "{name}.{i}: {out:#}"
            );
            outputs.insert(format!("{name}.{i}"), out);
        }
    }
    outputs
}

/// HAPI's FHIR R4 validator over every upstream example and every output above.
#[test]
fn every_fixture_and_every_output_passes_the_fhir_validator() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for (prefix, outputs) in [
        ("upstream", outputs_of_upstream_examples()),
        ("edge", outputs_of_edge_cases()),
        ("hub", outputs_of_hub_fixtures()),
    ] {
        for (name, json) in outputs {
            let path = dir.path().join(format!("{prefix}-{name}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
            n += 1;
        }
    }
    assert!(n >= 30, "only {n} outputs");
    let stdout = run_conformance(&[
        "--core".into(),
        repo().join("conformance/fixtures/vkp-observation"),
        dir.path().into(),
    ]);
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with(&format!("validated {} file(s)", n + 16)),
        "{summary}"
    );
}
