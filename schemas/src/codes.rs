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
    pub loinc: &'static str,
    pub snomed: Option<&'static str>,
    pub display: &'static str,
    /// Units for the value itself; empty for panels (the components carry the values).
    pub units: &'static [UnitRange],
    /// Required components, for panels.
    pub components: &'static [ComponentSpec],
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComponentSpec {
    pub loinc: &'static str,
    pub snomed: &'static str,
    pub display: &'static str,
    pub units: &'static [UnitRange],
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
/// Questionnaire total score, as VKP sends it.
pub const QUESTIONNAIRE_SCORE: &str = "74465-6";

pub const CODES: &[CodeSpec] = &[
    CodeSpec {
        loinc: HEART_RATE,
        snomed: Some("364075005"),
        display: "Heart rate",
        units: PER_MIN_HEART,
        components: &[],
    },
    CodeSpec {
        loinc: RESPIRATORY_RATE,
        snomed: Some("86290005"),
        display: "Respiratory rate",
        units: PER_MIN_RESP,
        components: &[],
    },
    CodeSpec {
        loinc: SPO2,
        snomed: Some("431314004"),
        display: "Oxygen saturation",
        units: PERCENT,
        components: &[],
    },
    CodeSpec {
        loinc: SPO2_PULSE_OXIMETRY,
        snomed: Some("431314004"),
        display: "Oxygen saturation by pulse oximetry",
        units: PERCENT,
        components: &[],
    },
    CodeSpec {
        loinc: BODY_TEMPERATURE,
        snomed: Some("276885007"),
        display: "Body temperature",
        units: TEMPERATURE,
        components: &[],
    },
    CodeSpec {
        loinc: BODY_WEIGHT,
        snomed: Some("27113001"),
        display: "Body weight",
        units: WEIGHT,
        components: &[],
    },
    CodeSpec {
        loinc: BLOOD_GLUCOSE,
        snomed: Some("434912009"),
        display: "Glucose",
        units: GLUCOSE,
        components: &[],
    },
    CodeSpec {
        loinc: CAPILLARY_GLUCOSE,
        snomed: Some("434912009"),
        display: "Glucose in capillary blood",
        units: GLUCOSE,
        components: &[],
    },
    CodeSpec {
        loinc: CGM_GLUCOSE,
        snomed: Some("434912009"),
        display: "Glucose in interstitial fluid (CGM)",
        units: GLUCOSE,
        components: &[],
    },
    CodeSpec {
        loinc: BLOOD_PRESSURE,
        snomed: Some("75367002"),
        display: "Blood pressure panel",
        units: &[],
        components: &[
            ComponentSpec {
                loinc: SYSTOLIC_BP,
                snomed: "271649006",
                display: "Systolic blood pressure",
                units: SYSTOLIC,
            },
            ComponentSpec {
                loinc: DIASTOLIC_BP,
                snomed: "271650006",
                display: "Diastolic blood pressure",
                units: DIASTOLIC,
            },
        ],
    },
];

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
            CODES
                .iter()
                .flat_map(|spec| spec.components)
                .find(|c| c.snomed == snomed)
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
            assert!(
                spec.units.is_empty() != spec.components.is_empty(),
                "{}",
                spec.loinc
            );
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
    }
}
