//! The measurement codes the hub accepts, with their VKP SNOMED CT pair, UCUM units and
//! plausible ranges. A reading outside the range is a device or entry error, not a clinical
//! finding: it is refused, never passed on to a clinician.

/// One accepted unit and the plausible range of a value in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitRange {
    pub unit: &'static str,
    pub min: f64,
    pub max: f64,
}

/// What a code must look like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodeSpec {
    /// The code naming the kind: LOINC, or for the kinds VKP codes only in SNOMED CT (CFS,
    /// NEWS2, ACVPU) the SNOMED CT code (then equal to `snomed`). LOINC codes have a dash,
    /// SNOMED CT codes never do, so the two cannot collide.
    pub loinc: &'static str,
    pub snomed: Option<&'static str>,
    /// A short label for people (demo output, messages); not sent as a FHIR display.
    pub display: &'static str,
    /// LOINC's own name of the code (its long common name), the only display the hub
    /// writes into a LOINC coding; `None` where the hub does not know it for sure.
    pub loinc_name: Option<&'static str>,
    /// Units for the value itself; empty for panels (the components carry the values) and
    /// for coded values.
    pub units: &'static [UnitRange],
    /// Required components, for panels.
    pub components: &'static [ComponentSpec],
    /// Components that may come with the reading and are carried when they do (the mean
    /// of a blood pressure, NEWS2's sub-scores). Any other component of a FHIR reading is
    /// ignored on the way in, never refused (R4's component slicing is open).
    pub optional_components: &'static [ComponentSpec],
    /// Whether the value is a code (`Measurement.value_coding`), not a quantity (ACVPU).
    pub coded_value: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComponentSpec {
    /// LOINC, or SNOMED CT where LOINC does not code the component in VKP.
    pub loinc: &'static str,
    pub snomed: Option<&'static str>,
    pub display: &'static str,
    /// LOINC's name of the component, as for [`CodeSpec::loinc_name`].
    pub loinc_name: Option<&'static str>,
    pub units: &'static [UnitRange],
}

const fn single(
    loinc: &'static str,
    snomed: Option<&'static str>,
    display: &'static str,
    loinc_name: Option<&'static str>,
    units: &'static [UnitRange],
) -> CodeSpec {
    CodeSpec {
        loinc,
        snomed,
        display,
        loinc_name,
        units,
        components: &[],
        optional_components: &[],
        coded_value: false,
    }
}

const fn news2_part(snomed: &'static str, display: &'static str) -> ComponentSpec {
    ComponentSpec {
        loinc: snomed,
        snomed: Some(snomed),
        display,
        loinc_name: None,
        units: SUB_SCORE,
    }
}

const fn r(unit: &'static str, min: f64, max: f64) -> UnitRange {
    UnitRange { unit, min, max }
}

const PER_MIN_HEART: &[UnitRange] = &[r("/min", 20.0, 250.0)];
const PER_MIN_RESP: &[UnitRange] = &[r("/min", 3.0, 70.0)];
// A percentage: a fraction such as 0.97 falls below the range and is refused.
const PERCENT: &[UnitRange] = &[r("%", 50.0, 100.0)];
const TEMPERATURE: &[UnitRange] = &[r("Cel", 30.0, 45.0), r("[degF]", 86.0, 113.0)];
const WEIGHT: &[UnitRange] = &[
    r("kg", 1.0, 400.0),
    r("g", 1000.0, 400_000.0),
    r("[lb_av]", 2.2, 880.0),
];
const GLUCOSE: &[UnitRange] = &[r("mmol/L", 0.5, 50.0)];
const SYSTOLIC: &[UnitRange] = &[r("mm[Hg]", 40.0, 300.0)];
const DIASTOLIC: &[UnitRange] = &[r("mm[Hg]", 20.0, 200.0)];
const MEAN_PRESSURE: &[UnitRange] = &[r("mm[Hg]", 30.0, 250.0)];
// Scores are unitless: UCUM's unity `1` (a FHIR score without a unit reads as it).
const CFS: &[UnitRange] = &[r("1", 1.0, 9.0)];
const NEWS2: &[UnitRange] = &[r("1", 0.0, 20.0)];
const SUB_SCORE: &[UnitRange] = &[r("1", 0.0, 3.0)];

pub const HEART_RATE: &str = "8867-4";
pub const RESPIRATORY_RATE: &str = "9279-1";
pub const SPO2: &str = "2708-6";
pub const SPO2_PULSE_OXIMETRY: &str = "59408-5";
pub const BODY_TEMPERATURE: &str = "8310-5";
pub const BODY_WEIGHT: &str = "29463-7";
pub const BLOOD_PRESSURE: &str = "85354-9";
pub const SYSTOLIC_BP: &str = "8480-6";
pub const DIASTOLIC_BP: &str = "8462-4";
pub const BLOOD_GLUCOSE: &str = "15074-8";
pub const CAPILLARY_GLUCOSE: &str = "14743-9";
pub const CGM_GLUCOSE: &str = "105272-9";
pub const MEAN_BP: &str = "8478-0";
/// Clinical Frailty Scale score (SNOMED CT; VKP's CFSscore profile).
pub const CFS_SCORE: &str = "763264000";
/// NEWS2 total score (SNOMED CT; VKP's NEWS2score profile).
pub const NEWS2_SCORE: &str = "1104051000000101";
/// ACVPU level of consciousness (SNOMED CT; VKP's Consciousness profile), a coded value.
pub const ACVPU: &str = "1104441000000107";
/// Questionnaire total score, as VKP sends it.
pub const QUESTIONNAIRE_SCORE: &str = "74465-6";

pub const CODES: &[CodeSpec] = &[
    single(
        HEART_RATE,
        Some("364075005"),
        "Heart rate",
        Some("Heart rate"),
        PER_MIN_HEART,
    ),
    single(
        RESPIRATORY_RATE,
        Some("86290005"),
        "Respiratory rate",
        Some("Respiratory rate"),
        PER_MIN_RESP,
    ),
    single(
        SPO2,
        Some("431314004"),
        "Oxygen saturation",
        Some("Oxygen saturation in Arterial blood"),
        PERCENT,
    ),
    single(
        SPO2_PULSE_OXIMETRY,
        Some("431314004"),
        "Oxygen saturation by pulse oximetry",
        Some("Oxygen saturation in Arterial blood by Pulse oximetry"),
        PERCENT,
    ),
    single(
        BODY_TEMPERATURE,
        Some("276885007"),
        "Body temperature",
        Some("Body temperature"),
        TEMPERATURE,
    ),
    single(
        BODY_WEIGHT,
        Some("27113001"),
        "Body weight",
        Some("Body weight"),
        WEIGHT,
    ),
    single(
        BLOOD_GLUCOSE,
        Some("434912009"),
        "Glucose",
        Some("Glucose [Moles/volume] in Blood"),
        GLUCOSE,
    ),
    single(
        CAPILLARY_GLUCOSE,
        Some("434912009"),
        "Glucose in capillary blood",
        Some("Glucose [Moles/volume] in Capillary blood by Glucometer"),
        GLUCOSE,
    ),
    // CGM measures interstitial fluid, not blood: a kind of its own, not paired with the
    // blood glucose SNOMED CT code, so it never merges with a blood glucose reading.
    single(
        CGM_GLUCOSE,
        None,
        "Glucose in interstitial fluid (CGM)",
        None,
        GLUCOSE,
    ),
    CodeSpec {
        loinc: BLOOD_PRESSURE,
        snomed: Some("75367002"),
        display: "Blood pressure panel",
        loinc_name: Some("Blood pressure panel with all children optional"),
        units: &[],
        components: &[
            ComponentSpec {
                loinc: SYSTOLIC_BP,
                snomed: Some("271649006"),
                display: "Systolic blood pressure",
                loinc_name: Some("Systolic blood pressure"),
                units: SYSTOLIC,
            },
            ComponentSpec {
                loinc: DIASTOLIC_BP,
                snomed: Some("271650006"),
                display: "Diastolic blood pressure",
                loinc_name: Some("Diastolic blood pressure"),
                units: DIASTOLIC,
            },
        ],
        optional_components: &[ComponentSpec {
            loinc: MEAN_BP,
            snomed: None,
            display: "Mean blood pressure",
            loinc_name: Some("Mean blood pressure"),
            units: MEAN_PRESSURE,
        }],
        coded_value: false,
    },
    single(
        CFS_SCORE,
        Some(CFS_SCORE),
        "Clinical Frailty Scale score",
        None,
        CFS,
    ),
    CodeSpec {
        // The sub-scores of VKP's own NEWS2 example (vkp-news2-create).
        optional_components: &[
            news2_part("1104301000000104", "NEWS2 respiration rate score"),
            news2_part("1104321000000108", "NEWS2 oxygen saturation scale 2 score"),
            news2_part("1104331000000105", "NEWS2 air or oxygen score"),
            news2_part("1104341000000101", "NEWS2 systolic blood pressure score"),
            news2_part("1104351000000103", "NEWS2 pulse score"),
            news2_part("1104361000000100", "NEWS2 consciousness score"),
            news2_part("1104371000000107", "NEWS2 temperature score"),
        ],
        ..single(
            NEWS2_SCORE,
            Some(NEWS2_SCORE),
            "NEWS2 total score",
            None,
            NEWS2,
        )
    },
    CodeSpec {
        coded_value: true,
        ..single(
            ACVPU,
            Some(ACVPU),
            "Level of consciousness (ACVPU)",
            None,
            &[],
        )
    },
];

/// Whether a code is scored without a unit (its one unit is UCUM's unity `1`).
pub fn is_unitless(code: &str) -> bool {
    lookup(code).is_some_and(|s| s.units.iter().all(|u| u.unit == "1") && !s.units.is_empty())
        || all_components().any(|c| c.loinc == code && c.units.iter().all(|u| u.unit == "1"))
}

/// Every component spec, required and optional, of every code.
pub fn all_components() -> impl Iterator<Item = &'static ComponentSpec> {
    CODES
        .iter()
        .flat_map(|s| s.components.iter().chain(s.optional_components))
}

/// A UCUM unit code in the spelling the hub stores. UCUM is case-sensitive, but the litre
/// is both `l` and `L` (`mmol/l` is `mmol/L`); `1/min` and annotated per-minute units
/// (`{beats}/min`) are `/min`, and an annotation alone (`{score}`) is unity `1`.
pub fn ucum_canonical(unit: &str) -> String {
    if unit.starts_with('{') && unit.ends_with('}') && !unit[1..].contains('{') {
        return "1".to_string();
    }
    if unit == "1/min" || (unit.starts_with('{') && unit.ends_with("}/min")) {
        return "/min".to_string();
    }
    unit.split('/')
        .map(|term| match term {
            "l" => "L".to_string(),
            t if t.len() == 2 && t.ends_with('l') && "mudcnpf".contains(&t[..1]) => {
                format!("{}L", &t[..1])
            }
            t => t.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The spec of a LOINC code, if the hub accepts it.
pub fn lookup(loinc: &str) -> Option<&'static CodeSpec> {
    CODES.iter().find(|spec| spec.loinc == loinc)
}

/// The LOINC code VKP pairs with a SNOMED CT code (first match), for senders that code only SNOMED.
pub fn loinc_for_snomed(snomed: &str) -> Option<&'static str> {
    // The Norwegian SNOMED extension codes no-domain uses for blood pressure components.
    match snomed {
        "4471000202106" => return Some(SYSTOLIC_BP),
        "4481000202108" => return Some(DIASTOLIC_BP),
        _ => {}
    }
    CODES
        .iter()
        .find(|spec| spec.snomed == Some(snomed))
        .map(|spec| spec.loinc)
        .or_else(|| {
            all_components()
                .find(|c| c.snomed == Some(snomed))
                .map(|c| c.loinc)
        })
}

/// The LOINC code for an NPU/NLK code (`urn:oid:2.16.578.1.12.4.1.1.7280`), for senders
/// that code laboratory values only in the Norwegian laboratory code list.
pub fn loinc_for_npu(npu: &str) -> Option<&'static str> {
    match npu {
        // VKP's glucose example: NPU02187 Glucose in blood.
        "NPU02187" => Some(BLOOD_GLUCOSE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_is_sane_and_codes_are_unique() {
        for (i, spec) in CODES.iter().enumerate() {
            assert!(CODES[i + 1..].iter().all(|o| o.loinc != spec.loinc));
            // Exactly one of: a quantity, components, a code.
            let kinds = [
                !spec.units.is_empty(),
                !spec.components.is_empty(),
                spec.coded_value,
            ];
            assert_eq!(kinds.iter().filter(|k| **k).count(), 1, "{}", spec.loinc);
            for u in spec
                .units
                .iter()
                .chain(spec.components.iter().flat_map(|c| c.units))
            {
                assert!(u.min < u.max);
            }
        }
    }

    #[test]
    fn snomed_maps_back_to_loinc() {
        assert_eq!(loinc_for_snomed("364075005"), Some(HEART_RATE));
        assert_eq!(loinc_for_snomed("271649006"), Some(SYSTOLIC_BP));
        assert_eq!(loinc_for_snomed("4481000202108"), Some(DIASTOLIC_BP));
        assert_eq!(loinc_for_snomed("1"), None);
        assert_eq!(loinc_for_snomed("434912009"), Some(BLOOD_GLUCOSE));
        assert_eq!(loinc_for_snomed(NEWS2_SCORE), Some(NEWS2_SCORE));
    }

    #[test]
    fn ucum_spellings_of_one_unit_are_one_unit() {
        for (sent, stored) in [
            ("mmol/l", "mmol/L"),
            ("mmol/L", "mmol/L"),
            ("l", "L"),
            ("ml", "mL"),
            ("1/min", "/min"),
            ("{beats}/min", "/min"),
            ("/min", "/min"),
            ("{score}", "1"),
            ("mm[Hg]", "mm[Hg]"),
            ("Cel", "Cel"),
            ("kg", "kg"),
            ("%", "%"),
            ("[lb_av]", "[lb_av]"),
        ] {
            assert_eq!(ucum_canonical(sent), stored, "{sent}");
        }
        // Case matters elsewhere in UCUM: mol is not Mol, and m (metre) is not M.
        assert_eq!(ucum_canonical("mmol/dl"), "mmol/dL");
        assert_eq!(ucum_canonical("Mmol/L"), "Mmol/L");
    }
}
