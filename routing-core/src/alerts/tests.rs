use super::*;
use dho_schemas::{codes, fixtures};

const T0: Millis = 1_800_000_000_000;
const HOUR: Millis = 3_600_000;

fn range(low: Option<f64>, high: Option<f64>) -> ZoneRange {
    ZoneRange { low, high }
}

fn target(code: &str, unit: &str, green: ZoneRange, yellow: ZoneRange) -> PlanTarget {
    PlanTarget {
        code: code.into(),
        unit: unit.into(),
        green,
        yellow,
        expected_interval_hours: Some(24),
    }
}

fn plan_with(targets: Vec<PlanTarget>) -> CarePlan {
    CarePlan {
        targets,
        ..fixtures::care_plan(&fixtures::patient(1))
    }
}

/// A single-valued reading of `code` in `unit`.
fn reading(code: &str, value: f64, unit: &str) -> Measurement {
    Measurement {
        code: code.into(),
        value: Some(Quantity {
            value,
            unit: unit.into(),
        }),
        ..fixtures::spo2(&fixtures::patient(1), 0.0, T0)
    }
}

fn bp_targets() -> Vec<PlanTarget> {
    vec![
        target(
            codes::SYSTOLIC_BP,
            "mm[Hg]",
            range(Some(90.0), Some(140.0)),
            range(Some(80.0), Some(160.0)),
        ),
        target(
            codes::DIASTOLIC_BP,
            "mm[Hg]",
            range(Some(60.0), Some(90.0)),
            range(Some(50.0), Some(100.0)),
        ),
    ]
}

fn zone(m: &Measurement, plan: &CarePlan) -> Option<Zone> {
    classify(m, plan).map(|c| c.zone)
}

/// Table: (value, expected zone) for one single-valued code against one plan.
fn check_table(plan: &CarePlan, code: &str, unit: &str, table: &[(f64, Option<Zone>)]) {
    for &(value, expected) in table {
        assert_eq!(
            zone(&reading(code, value, unit), plan),
            expected,
            "{code} {value} {unit}"
        );
    }
}

use Zone::{Green as G, Red as R, Yellow as Y};

#[test]
fn spo2_boundaries() {
    // The fixture plan: green >= 92, yellow >= 88, no upper bound.
    let plan = fixtures::care_plan(&fixtures::patient(1));
    check_table(
        &plan,
        codes::SPO2,
        "%",
        &[
            (100.0, Some(G)),
            (92.0, Some(G)),
            (91.99, Some(Y)),
            (88.0, Some(Y)),
            (87.99, Some(R)),
            (0.0, Some(R)),
        ],
    );
    // The fixture's own builder classifies the same.
    let p = fixtures::patient(1);
    assert_eq!(zone(&fixtures::spo2(&p, 92.0, T0), &plan), Some(G));
    assert_eq!(zone(&fixtures::spo2(&p, 87.0, T0), &plan), Some(R));
    // Another unit: no conversion, no classification.
    check_table(&plan, codes::SPO2, "1", &[(0.95, None), (95.0, None)]);
}

#[test]
fn heart_rate_boundaries() {
    let plan = plan_with(vec![target(
        codes::HEART_RATE,
        "/min",
        range(Some(50.0), Some(100.0)),
        range(Some(40.0), Some(120.0)),
    )]);
    check_table(
        &plan,
        codes::HEART_RATE,
        "/min",
        &[
            (39.9, Some(R)),
            (40.0, Some(Y)),
            (49.9, Some(Y)),
            (50.0, Some(G)),
            (75.0, Some(G)),
            (100.0, Some(G)),
            (100.1, Some(Y)),
            (120.0, Some(Y)),
            (120.1, Some(R)),
        ],
    );
    check_table(&plan, codes::HEART_RATE, "Hz", &[(1.2, None)]);
}

#[test]
fn weight_boundaries_open_low_bound() {
    // Heart failure: only a gain matters; no lower bound anywhere.
    let plan = plan_with(vec![target(
        codes::BODY_WEIGHT,
        "kg",
        range(None, Some(82.0)),
        range(None, Some(84.0)),
    )]);
    check_table(
        &plan,
        codes::BODY_WEIGHT,
        "kg",
        &[
            (0.0, Some(G)),
            (-1.0, Some(G)),
            (82.0, Some(G)),
            (82.01, Some(Y)),
            (84.0, Some(Y)),
            (84.01, Some(R)),
            (500.0, Some(R)),
        ],
    );
    check_table(&plan, codes::BODY_WEIGHT, "[lb_av]", &[(180.0, None)]);
}

#[test]
fn glucose_boundaries() {
    let plan = plan_with(vec![target(
        codes::BLOOD_GLUCOSE,
        "mmol/L",
        range(Some(4.0), Some(10.0)),
        range(Some(3.5), Some(14.0)),
    )]);
    check_table(
        &plan,
        codes::BLOOD_GLUCOSE,
        "mmol/L",
        &[
            (3.49, Some(R)),
            (3.5, Some(Y)),
            (3.99, Some(Y)),
            (4.0, Some(G)),
            (10.0, Some(G)),
            (10.01, Some(Y)),
            (14.0, Some(Y)),
            (14.01, Some(R)),
        ],
    );
    // mg/dL against a mmol/L plan: no conversion.
    check_table(&plan, codes::BLOOD_GLUCOSE, "mg/dL", &[(90.0, None)]);
    // Another glucose code is another target.
    check_table(&plan, codes::CAPILLARY_GLUCOSE, "mmol/L", &[(5.0, None)]);
}

#[test]
fn fully_open_ranges() {
    // Green unbounded: always green. Yellow unbounded: never red.
    let always_green = plan_with(vec![target(
        codes::HEART_RATE,
        "/min",
        range(None, None),
        range(Some(40.0), Some(120.0)),
    )]);
    check_table(
        &always_green,
        codes::HEART_RATE,
        "/min",
        &[(0.0, Some(G)), (1e9, Some(G))],
    );
    let never_red = plan_with(vec![target(
        codes::HEART_RATE,
        "/min",
        range(Some(50.0), Some(100.0)),
        range(None, None),
    )]);
    check_table(
        &never_red,
        codes::HEART_RATE,
        "/min",
        &[(0.0, Some(Y)), (50.0, Some(G)), (1e9, Some(Y))],
    );
}

#[test]
fn blood_pressure_worst_component() {
    let plan = plan_with(bp_targets());
    let p = fixtures::patient(1);
    let table: &[(f64, f64, Option<Zone>, &str)] = &[
        (120.0, 80.0, Some(G), codes::SYSTOLIC_BP),
        (90.0, 60.0, Some(G), codes::SYSTOLIC_BP),
        (140.0, 90.0, Some(G), codes::SYSTOLIC_BP),
        (140.1, 80.0, Some(Y), codes::SYSTOLIC_BP),
        (89.9, 80.0, Some(Y), codes::SYSTOLIC_BP),
        (120.0, 90.1, Some(Y), codes::DIASTOLIC_BP),
        (120.0, 59.9, Some(Y), codes::DIASTOLIC_BP),
        (160.0, 100.0, Some(Y), codes::SYSTOLIC_BP),
        (80.0, 50.0, Some(Y), codes::SYSTOLIC_BP),
        (160.1, 80.0, Some(R), codes::SYSTOLIC_BP),
        (79.9, 80.0, Some(R), codes::SYSTOLIC_BP),
        (120.0, 100.1, Some(R), codes::DIASTOLIC_BP),
        (120.0, 49.9, Some(R), codes::DIASTOLIC_BP),
        // Worst wins: yellow systolic, red diastolic.
        (150.0, 101.0, Some(R), codes::DIASTOLIC_BP),
        // Both red: the first (systolic) decides.
        (170.0, 110.0, Some(R), codes::SYSTOLIC_BP),
    ];
    for &(sys, dia, expected, decided_by) in table {
        let c = classify(&fixtures::blood_pressure(&p, sys, dia, T0), &plan);
        assert_eq!(c.as_ref().map(|c| c.zone), expected, "{sys}/{dia}");
        assert_eq!(c.unwrap().decided_by, decided_by, "{sys}/{dia}");
    }
}

#[test]
fn blood_pressure_partial_plan_and_units() {
    let p = fixtures::patient(1);
    // A systolic target only: the diastolic does not count.
    let systolic_only = plan_with(vec![bp_targets().remove(0)]);
    assert_eq!(
        zone(
            &fixtures::blood_pressure(&p, 120.0, 130.0, T0),
            &systolic_only
        ),
        Some(G)
    );
    // A plan in kPa does not classify readings in mm[Hg].
    let kpa = plan_with(
        bp_targets()
            .into_iter()
            .map(|t| PlanTarget {
                unit: "kPa".into(),
                ..t
            })
            .collect(),
    );
    assert_eq!(
        zone(&fixtures::blood_pressure(&p, 200.0, 130.0, T0), &kpa),
        None
    );
    // The panel code itself has no target.
    assert_eq!(
        zone(
            &fixtures::blood_pressure(&p, 120.0, 80.0, T0),
            &fixtures::care_plan(&p)
        ),
        None
    );
}

#[test]
fn no_target_and_non_finite() {
    let plan = fixtures::care_plan(&fixtures::patient(1));
    assert_eq!(zone(&reading(codes::HEART_RATE, 70.0, "/min"), &plan), None);
    assert_eq!(zone(&reading(codes::SPO2, f64::NAN, "%"), &plan), None);
    assert_eq!(zone(&reading(codes::SPO2, f64::INFINITY, "%"), &plan), None);
    let mut no_value = fixtures::spo2(&fixtures::patient(1), 95.0, T0);
    no_value.value = None;
    assert_eq!(zone(&no_value, &plan), None);
    assert_eq!(
        zone(&reading(codes::SPO2, 95.0, "%"), &plan_with(vec![])),
        None
    );
}

// ---- the state machine ----

/// One step of a scripted sequence.
#[derive(Debug, Clone)]
enum Step {
    Read(Box<Measurement>),
    Silence(Millis),
}

fn spo2_at(value: f64, hour: i64) -> Step {
    Step::Read(Box::new(fixtures::spo2(
        &fixtures::patient(1),
        value,
        T0 + hour * HOUR,
    )))
}

/// Runs `steps` on `state`; the time of a reading is its effective time, `now` one second
/// later. The silence is counted from the last reading in `steps`, or from `T0`.
fn run(state: &mut AlertState, plan: &CarePlan, steps: &[Step]) -> Vec<Alert> {
    run_from(state, plan, steps, T0)
}

/// [`run`], with the last reading before `steps` at `last` (what the caller knows besides
/// the alert state).
fn run_from(
    state: &mut AlertState,
    plan: &CarePlan,
    steps: &[Step],
    mut last: Millis,
) -> Vec<Alert> {
    let target = &plan.targets[0];
    let mut out = vec![];
    for step in steps {
        match step {
            Step::Read(m) => {
                let c = classify(m, plan).expect("classifies");
                last = m.effective_time;
                out.extend(state.observe(&c, m, plan, m.effective_time + 1_000));
            }
            Step::Silence(now) => out.extend(state.check_silence(plan, target, last, *now)),
        }
    }
    out
}

fn summary(alerts: &[Alert]) -> Vec<(AlertKind, Zone, VkpSeverity)> {
    alerts
        .iter()
        .map(|a| (a.kind, a.zone, a.severity))
        .collect()
}

fn new_state() -> AlertState {
    AlertState::new(fixtures::patient(1), codes::SPO2, fixtures::lung_clinic())
}

/// green → yellow → yellow → red → green → silence past the interval.
fn issue_sequence() -> Vec<Step> {
    let last = 4;
    vec![
        spo2_at(95.0, 0),
        spo2_at(90.0, 1),
        spo2_at(89.0, 2),
        spo2_at(85.0, 3),
        spo2_at(96.0, last),
        // Not yet: one millisecond before the interval.
        Step::Silence(T0 + (last + 24) * HOUR - 1),
        Step::Silence(T0 + (last + 24) * HOUR),
        // Once only.
        Step::Silence(T0 + (last + 48) * HOUR),
    ]
}

#[test]
fn the_issue_sequence() {
    let plan = fixtures::care_plan(&fixtures::patient(1));
    let steps = issue_sequence();
    let alerts = run(&mut new_state(), &plan, &steps);
    assert_eq!(
        summary(&alerts),
        vec![
            (AlertKind::ZoneEntered, Zone::Yellow, VkpSeverity::Moderate),
            (AlertKind::Escalated, Zone::Red, VkpSeverity::Severe),
            (AlertKind::Resolved, Zone::Green, VkpSeverity::Normal),
            (AlertKind::NoData, Zone::Green, VkpSeverity::Normal),
        ]
    );
    let event = |i: usize| match &steps[i] {
        Step::Read(m) => m.event_id.clone(),
        Step::Silence(_) => unreachable!(),
    };
    // Each alert carries its trigger, reading and plan.
    for (alert, i) in alerts.iter().zip([1, 3, 4]) {
        assert_eq!(alert.triggering_event_id, Some(event(i)));
        assert_eq!(alert.reading.as_ref().unwrap().event_id, event(i));
        assert_eq!(alert.code, codes::SPO2);
        assert_eq!(alert.patient, fixtures::patient(1));
        assert_eq!((alert.plan_id.as_str(), alert.plan_version), ("plan-1", 1));
    }
    let no_data = &alerts[3];
    assert_eq!(no_data.triggering_event_id, None);
    assert_eq!(no_data.reading, None);
    assert_eq!(no_data.raised_at, T0 + 28 * HOUR);
    // Ids: distinct, and what `alert_id` says.
    assert_eq!(
        alerts[0].alert_id,
        alert_id(
            &fixtures::patient(1),
            codes::SPO2,
            &fixtures::lung_clinic(),
            AlertKind::ZoneEntered,
            &event(1)
        )
    );
    let mut ids: Vec<_> = alerts.iter().map(|a| a.alert_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
}

#[test]
fn restart_in_the_middle_changes_nothing() {
    let plan = fixtures::care_plan(&fixtures::patient(1));
    let steps = issue_sequence();
    let uninterrupted = run(&mut new_state(), &plan, &steps);
    for cut in 0..=steps.len() {
        let mut before = new_state();
        let mut alerts = run(&mut before, &plan, &steps[..cut]);
        let saved = serde_json::to_string(&before).unwrap();
        drop(before);
        let mut after: AlertState = serde_json::from_str(&saved).unwrap();
        // The caller rebuilds the last reading time from the readings before the cut.
        let last_read = steps[..cut]
            .iter()
            .rev()
            .find_map(|s| match s {
                Step::Read(m) => Some(m.effective_time),
                Step::Silence(_) => None,
            })
            .unwrap_or(T0);
        alerts.extend(run_from(&mut after, &plan, &steps[cut..], last_read));
        assert_eq!(alerts, uninterrupted, "cut after {cut} steps");
    }
    // The brief's case explicitly: after the third reading (yellow, yellow).
    let mut state = new_state();
    let first = run(&mut state, &plan, &steps[..3]);
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json["zone"], "YELLOW");
    let mut resumed: AlertState = serde_json::from_value(json).unwrap();
    let rest = run(&mut resumed, &plan, &steps[3..]);
    assert_eq!([first, rest].concat(), uninterrupted);
}

#[test]
fn replay_gives_the_same_ids() {
    let plan = fixtures::care_plan(&fixtures::patient(1));
    let steps = issue_sequence();
    let once = run(&mut new_state(), &plan, &steps);
    let twice = run(&mut new_state(), &plan, &steps);
    assert_eq!(once, twice);
    // A replay under a plan version changed meanwhile: the same ids, so the repeats are
    // dropped; the alerts name the version that classified them.
    let v2 = CarePlan {
        version: 2,
        ..plan.clone()
    };
    let other = run(&mut new_state(), &v2, &steps);
    assert_eq!(summary(&other), summary(&once));
    for (a, b) in other.iter().zip(&once) {
        assert_eq!(a.alert_id, b.alert_id);
        assert_eq!(a.plan_version, 2);
    }
}

#[test]
fn transitions() {
    use AlertKind::*;
    use Zone::{Green, Red, Yellow};
    let plan = fixtures::care_plan(&fixtures::patient(1));
    type Case<'a> = (&'a [f64], &'a [(AlertKind, Zone)]);
    let cases: &[Case<'_>] = &[
        // green → green: nothing.
        (&[95.0, 96.0, 97.0], &[]),
        // Unknown → red: entered red, severe.
        (&[80.0], &[(ZoneEntered, Red)]),
        // Unknown → yellow.
        (&[90.0], &[(ZoneEntered, Yellow)]),
        // green → red directly.
        (&[95.0, 80.0, 81.0], &[(ZoneEntered, Red)]),
        // red → yellow: no alert (de-escalation); back to red: not a new escalation.
        (&[80.0, 90.0, 80.0], &[(ZoneEntered, Red)]),
        // red → yellow → green: resolved once.
        (
            &[80.0, 90.0, 95.0],
            &[(ZoneEntered, Red), (Resolved, Green)],
        ),
        // A second episode alerts again.
        (
            &[90.0, 95.0, 90.0, 80.0],
            &[
                (ZoneEntered, Yellow),
                (Resolved, Green),
                (ZoneEntered, Yellow),
                (Escalated, Red),
            ],
        ),
        // Boundaries: exactly 92 is green, exactly 88 yellow.
        (
            &[92.0, 88.0, 92.0],
            &[(ZoneEntered, Yellow), (Resolved, Green)],
        ),
    ];
    for (values, expected) in cases {
        let steps: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| spo2_at(*v, i as i64))
            .collect();
        let alerts = run(&mut new_state(), &plan, &steps);
        let got: Vec<_> = alerts.iter().map(|a| (a.kind, a.zone)).collect();
        assert_eq!(&got, expected, "{values:?}");
        for a in &alerts {
            assert_eq!(a.severity, severity_of(a.zone));
        }
    }
}

#[test]
fn no_data_is_resolved_by_the_next_reading() {
    use AlertKind::*;
    let plan = fixtures::care_plan(&fixtures::patient(1));
    let silence = |after_hour: i64| Step::Silence(T0 + (after_hour + 24) * HOUR);
    // Green, silence, green again: a RESOLVED alert (nothing else would tell).
    let alerts = run(
        &mut new_state(),
        &plan,
        &[
            spo2_at(95.0, 0),
            silence(0),
            spo2_at(95.0, 30),
            spo2_at(95.0, 31),
        ],
    );
    assert_eq!(
        summary(&alerts),
        vec![
            (NoData, Zone::Green, VkpSeverity::Normal),
            (Resolved, Zone::Green, VkpSeverity::Normal),
        ]
    );
    // Green, silence, yellow: the zone alert is the resolution, one alert.
    let alerts = run(
        &mut new_state(),
        &plan,
        &[spo2_at(95.0, 0), silence(0), spo2_at(90.0, 30)],
    );
    assert_eq!(
        summary(&alerts),
        vec![
            (NoData, Zone::Green, VkpSeverity::Normal),
            (ZoneEntered, Zone::Yellow, VkpSeverity::Moderate),
        ]
    );
    // Yellow, silence, yellow: RESOLVED (of the silence) in the yellow zone, NORMAL; the
    // yellow episode stays open, so green later resolves it and red escalates it.
    let mut state = new_state();
    let alerts = run(
        &mut state,
        &plan,
        &[spo2_at(90.0, 0), silence(0), spo2_at(90.0, 30)],
    );
    assert_eq!(
        summary(&alerts),
        vec![
            (ZoneEntered, Zone::Yellow, VkpSeverity::Moderate),
            (NoData, Zone::Yellow, VkpSeverity::Moderate),
            (Resolved, Zone::Yellow, VkpSeverity::Normal),
        ]
    );
    assert_eq!(state.zone, Some(Zone::Yellow));
    assert!(!state.no_data_open);
    let more = run(&mut state, &plan, &[spo2_at(80.0, 31), spo2_at(95.0, 32)]);
    assert_eq!(
        more.iter().map(|a| a.kind).collect::<Vec<_>>(),
        vec![Escalated, Resolved]
    );
    // A second silence after that raises a second NO_DATA with another id.
    let mut state = new_state();
    let alerts = run(
        &mut state,
        &plan,
        &[spo2_at(95.0, 0), silence(0), spo2_at(95.0, 30), silence(30)],
    );
    assert_eq!(alerts.len(), 3);
    assert_eq!((alerts[0].kind, alerts[2].kind), (NoData, NoData));
    assert_ne!(alerts[0].alert_id, alerts[2].alert_id);
}

#[test]
fn silence_without_interval_or_reading() {
    let plan = fixtures::care_plan(&fixtures::patient(1));
    let mut target = plan.targets[0].clone();
    let mut state = new_state();
    for hours in [None, Some(0), Some(-1)] {
        target.expected_interval_hours = hours;
        assert_eq!(
            state.check_silence(&plan, &target, T0, T0 + 1_000 * HOUR),
            None
        );
    }
    // Never a reading: the silence is counted from the time given, zone green.
    target.expected_interval_hours = Some(24);
    assert_eq!(
        state.check_silence(&plan, &target, T0, T0 + 24 * HOUR - 1),
        None
    );
    let alert = state
        .check_silence(&plan, &target, T0, T0 + 24 * HOUR)
        .unwrap();
    assert_eq!(
        (alert.kind, alert.zone, alert.severity),
        (AlertKind::NoData, Zone::Green, VkpSeverity::Normal)
    );
    assert_eq!(
        state.check_silence(&plan, &target, T0, T0 + 99 * HOUR),
        None
    );
    // The id is a function of the silence: a rebuilt state gives the same one.
    let again = new_state()
        .check_silence(&plan, &target, T0, T0 + 30 * HOUR)
        .unwrap();
    assert_eq!(again.alert_id, alert.alert_id);
}

#[test]
fn blood_pressure_state_is_per_panel_code() {
    use AlertKind::*;
    let p = fixtures::patient(1);
    let plan = plan_with(bp_targets());
    let mut state = AlertState::new(p.clone(), codes::BLOOD_PRESSURE, fixtures::lung_clinic());
    let mut alerts = vec![];
    for (i, (sys, dia)) in [
        (120.0, 80.0),
        (150.0, 80.0),
        (120.0, 95.0),
        (120.0, 105.0),
        (120.0, 80.0),
    ]
    .into_iter()
    .enumerate()
    {
        let m = fixtures::blood_pressure(&p, sys, dia, T0 + i as i64 * HOUR);
        let c = classify(&m, &plan).unwrap();
        alerts.extend(state.observe(&c, &m, &plan, m.received_time));
    }
    // Systolic yellow then diastolic yellow: the same episode; diastolic red escalates.
    assert_eq!(
        summary(&alerts),
        vec![
            (ZoneEntered, Zone::Yellow, VkpSeverity::Moderate),
            (Escalated, Zone::Red, VkpSeverity::Severe),
            (Resolved, Zone::Green, VkpSeverity::Normal),
        ]
    );
    assert!(alerts.iter().all(|a| a.code == codes::BLOOD_PRESSURE));
}

// ---- Track: what the router persists per (patient, code) ----

fn received_at(value: f64, hour: i64) -> Measurement {
    let mut m = fixtures::spo2(&fixtures::patient(1), value, T0 + hour * HOUR);
    m.received_time = T0 + hour * HOUR;
    m
}

#[test]
fn track_replay_at_or_below_the_applied_offset_changes_nothing() {
    let plan = fixtures::care_plan(&fixtures::patient(1));
    let mut track = Track::new(fixtures::patient(1), codes::SPO2, fixtures::lung_clinic());
    let now = T0 + HOUR;
    let Observed::Applied(Some(alert)) = track.observe(&received_at(90.0, 0), 7, &plan, now) else {
        panic!("a yellow reading raises an alert");
    };
    assert_eq!(alert.kind, AlertKind::ZoneEntered);
    assert_eq!((track.applied_through, track.last_reading_at), (7, T0));
    let before = track.clone();
    // The same reading replayed after a crash, and an older one: nothing again.
    assert_eq!(
        track.observe(&received_at(90.0, 0), 7, &plan, now),
        Observed::Replayed
    );
    assert_eq!(
        track.observe(&received_at(80.0, 0), 3, &plan, now),
        Observed::Replayed
    );
    assert_eq!(track, before);
    // The next offset is applied: red escalates.
    let Observed::Applied(Some(alert)) = track.observe(&received_at(80.0, 1), 8, &plan, now) else {
        panic!("red after yellow escalates");
    };
    assert_eq!(alert.kind, AlertKind::Escalated);
    assert!(track.in_red());
}

#[test]
fn track_ignores_unclassified_readings_and_survives_serde() {
    let plan = fixtures::care_plan(&fixtures::patient(1));
    let mut track = Track::new(fixtures::patient(1), codes::SPO2, fixtures::lung_clinic());
    let mut other_unit = received_at(50.0, 0);
    other_unit.value.as_mut().unwrap().unit = "1".into();
    assert_eq!(
        track.observe(&other_unit, 1, &plan, T0),
        Observed::Unclassified
    );
    assert_eq!(track.applied_through, -1, "untouched");
    track.observe(&received_at(85.0, 0), 2, &plan, T0);
    let json = serde_json::to_vec(&track).unwrap();
    let back: Track = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, track);
}

#[test]
fn track_silence_uses_the_shortest_interval_and_the_received_time() {
    let mut plan = plan_with(bp_targets());
    plan.targets[0].expected_interval_hours = Some(48);
    plan.targets[1].expected_interval_hours = Some(12);
    let mut bp = fixtures::blood_pressure(&fixtures::patient(1), 120.0, 80.0, T0);
    bp.received_time = T0 + HOUR;
    let mut track = Track::new(
        fixtures::patient(1),
        codes::BLOOD_PRESSURE,
        fixtures::lung_clinic(),
    );
    assert!(matches!(
        track.observe(&bp, 1, &plan, T0 + 2 * HOUR),
        Observed::Applied(None)
    ));
    assert_eq!(track.last_reading_at, T0 + HOUR);
    assert_eq!(
        track.target_codes,
        [codes::SYSTOLIC_BP, codes::DIASTOLIC_BP]
    );
    assert_eq!(track.silence_deadline(&plan), Some(T0 + 13 * HOUR));
    assert!(track.check_silence(&plan, T0 + 13 * HOUR - 1).is_none());
    let alert = track
        .check_silence(&plan, T0 + 13 * HOUR)
        .expect("12 h passed");
    assert_eq!(alert.kind, AlertKind::NoData);
    assert_eq!(track.silence_deadline(&plan), None, "open already");
    assert!(track.check_silence(&plan, T0 + 40 * HOUR).is_none(), "once");
}

#[test]
fn track_received_time_in_the_future_counts_from_now() {
    let plan = fixtures::care_plan(&fixtures::patient(1));
    let mut track = Track::new(fixtures::patient(1), codes::SPO2, fixtures::lung_clinic());
    track.observe(&received_at(95.0, 10), 1, &plan, T0);
    assert_eq!(track.last_reading_at, T0);
}

#[test]
fn plan_for_picks_the_latest_plan_that_speaks_about_the_code() {
    let p = fixtures::patient(1);
    let spo2_old = fixtures::care_plan(&p);
    let spo2_new = CarePlan {
        plan_id: "plan-2".into(),
        version: 3,
        updated_at: spo2_old.updated_at + 1,
        ..spo2_old.clone()
    };
    let bp = CarePlan {
        plan_id: "plan-bp".into(),
        targets: bp_targets(),
        updated_at: spo2_old.updated_at + 2,
        ..spo2_old.clone()
    };
    let plans = [spo2_old.clone(), spo2_new.clone(), bp.clone()];
    assert_eq!(plan_for(&plans, codes::SPO2, &[]), Some(&spo2_new));
    assert_eq!(
        plan_for(
            &plans,
            codes::BLOOD_PRESSURE,
            &[codes::SYSTOLIC_BP, codes::DIASTOLIC_BP]
        ),
        Some(&bp)
    );
    assert_eq!(plan_for(&plans, codes::BODY_WEIGHT, &[]), None);
}

#[test]
fn a_corrected_reading_raises_an_alert_with_an_id_of_its_own() {
    let patient = fixtures::patient(1);
    let plan = fixtures::care_plan(&patient);
    let wrong = fixtures::spo2(&patient, 84.0, T0);
    let mut corrected = fixtures::spo2(&patient, 90.0, T0);
    corrected.event_id = wrong.event_id.clone();
    corrected.status = Some("corrected".into());
    let mut first = Track::new(patient.clone(), codes::SPO2, fixtures::lung_clinic());
    let Observed::Applied(Some(raised)) = first.observe(&wrong, 1, &plan, T0) else {
        panic!("the wrong reading raises an alert");
    };
    // The correction is classified from where the track stood before the wrong reading.
    let mut again = Track::new(patient.clone(), codes::SPO2, fixtures::lung_clinic());
    let Observed::Applied(Some(of_correction)) = again.observe(&corrected, 2, &plan, T0) else {
        panic!("the corrected reading raises its own alert");
    };
    assert_eq!(raised.kind, of_correction.kind);
    assert_ne!(
        raised.alert_id, of_correction.alert_id,
        "one id would make the SDK drop the correction's alert as a repeat"
    );
    assert_eq!(of_correction.triggering_event_id, Some(wrong.event_id));
}
