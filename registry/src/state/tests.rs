use super::*;

/// A state plus the log it was built from, as the store would keep it.
#[derive(Default)]
struct Harness {
    state: RegistryState,
    log: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Harness {
    fn commit<T>(&mut self, plan: Result<Plan<T>>) -> Result<T> {
        let plan = plan?;
        for record in &plan.records {
            self.log.push(record.encode());
            self.state.apply(record);
        }
        Ok(plan.outcome)
    }

    fn register(&mut self, subject: &str, schema: &str) -> Result<Registered> {
        let plan = self
            .state
            .plan_register(subject, &SchemaRequest::avro(schema));
        self.commit(plan)
    }

    fn register_typed(&mut self, subject: &str, t: SchemaType, schema: &str) -> Result<Registered> {
        let plan = self
            .state
            .plan_register(subject, &SchemaRequest::typed(t, schema));
        self.commit(plan)
    }

    fn delete_version(&mut self, subject: &str, v: VersionSpec, permanent: bool) -> Result<u32> {
        let plan = self.state.plan_delete_version(subject, v, permanent);
        self.commit(plan)
    }

    fn delete_subject(&mut self, subject: &str, permanent: bool) -> Result<Vec<u32>> {
        let plan = self.state.plan_delete_subject(subject, permanent);
        self.commit(plan)
    }

    fn set_level(&mut self, subject: Option<&str>, level: CompatibilityLevel) {
        let plan = self.state.plan_set(subject, level);
        self.commit(Ok(plan)).unwrap();
    }

    /// A fresh state rebuilt from the log, as a restarted registry would.
    fn replayed(&self) -> RegistryState {
        let mut state = RegistryState::new();
        for (key, value) in &self.log {
            state.apply(&LogRecord::decode(key, value.as_deref()).unwrap());
        }
        state
    }
}

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Reading","namespace":"dho","fields":[{fields}]}}"#)
}

const A_INT: &str = r#"{"name":"a","type":"int"}"#;
const A_INT_DEFAULT: &str = r#"{"name":"a","type":"int","default":0}"#;
const A_STRING_DEFAULT: &str = r#"{"name":"a","type":"string","default":""}"#;
const B_STRING_DEFAULT: &str = r#"{"name":"b","type":"string","default":""}"#;
const B_STRING: &str = r#"{"name":"b","type":"string"}"#;
const C_LONG_DEFAULT: &str = r#"{"name":"c","type":"long","default":0}"#;

fn code<T: std::fmt::Debug>(result: Result<T>) -> u32 {
    result.unwrap_err().error_code()
}

#[test]
fn ids_start_at_one_and_are_shared_across_subjects() {
    let mut h = Harness::default();
    let first = h.register("a-value", &record(A_INT)).unwrap();
    assert_eq!(first, Registered { id: 1, version: 1 });
    let other = h.register("b-value", &record(A_INT)).unwrap();
    assert_eq!(other, Registered { id: 1, version: 1 });
    let second = h
        .register("b-value", &record(&format!("{A_INT},{B_STRING_DEFAULT}")))
        .unwrap();
    assert_eq!(second, Registered { id: 2, version: 2 });
    assert_eq!(h.state.max_id(), 2);
}

#[test]
fn re_registering_returns_the_existing_id_and_writes_nothing() {
    let mut h = Harness::default();
    h.register("s", &record(A_INT)).unwrap();
    let reordered = r#"{ "fields": [{"type":"int","name":"a"}], "namespace":"dho", "name":"Reading", "type":"record" }"#;
    let plan = h
        .state
        .plan_register("s", &SchemaRequest::avro(reordered))
        .unwrap();
    assert!(plan.records.is_empty());
    assert_eq!(plan.outcome, Registered { id: 1, version: 1 });
}

#[test]
fn invalid_schemas_and_types_are_42201() {
    let h = Harness::default();
    for bad in ["", "{", r#"{"type":"record","name":"R"}"#, "42"] {
        assert_eq!(
            code(h.state.plan_register("s", &SchemaRequest::avro(bad))),
            42201,
            "{bad}"
        );
    }
    let request = SchemaRequest {
        schema: Some("\"string\"".into()),
        schema_type: Some("XML".into()),
        ..SchemaRequest::default()
    };
    assert_eq!(code(h.state.plan_register("s", &request)), 42201);
    assert_eq!(
        code(h.state.plan_register("s", &SchemaRequest::default())),
        42201
    );
}

#[test]
fn versions_count_soft_deleted_ones_and_soft_deleted_stay_readable_by_id() {
    let mut h = Harness::default();
    h.set_level(None, CompatibilityLevel::None);
    h.register("s", &record(A_INT)).unwrap();
    let v2 = h.register("s", &record(B_STRING)).unwrap();
    assert_eq!(
        h.delete_version("s", VersionSpec::Number(2), false)
            .unwrap(),
        2
    );
    // Hidden from latest, lists and lookup...
    assert_eq!(
        h.state
            .version("s", VersionSpec::Latest, false)
            .unwrap()
            .version,
        1
    );
    assert_eq!(h.state.versions("s", Filter::Live).unwrap(), vec![1]);
    assert_eq!(h.state.versions("s", Filter::All).unwrap(), vec![1, 2]);
    assert_eq!(h.state.versions("s", Filter::DeletedOnly).unwrap(), vec![2]);
    assert_eq!(
        code(h.state.version("s", VersionSpec::Number(2), false)),
        40402
    );
    assert_eq!(
        h.state
            .version("s", VersionSpec::Number(2), true)
            .unwrap()
            .id,
        v2.id
    );
    assert_eq!(
        h.state
            .version("s", VersionSpec::Latest, true)
            .unwrap()
            .version,
        2
    );
    assert_eq!(
        code(
            h.state
                .lookup("s", &SchemaRequest::avro(record(B_STRING)), false)
        ),
        40403
    );
    assert_eq!(
        h.state
            .lookup("s", &SchemaRequest::avro(record(B_STRING)), true)
            .unwrap()
            .version,
        2
    );
    // ...but readable by id.
    assert_eq!(
        h.state.schema_by_id(v2.id).unwrap().schema,
        record(B_STRING)
    );
    // The next version is max(all) + 1; re-registering the soft-deleted schema reuses its id.
    let again = h.register("s", &record(B_STRING)).unwrap();
    assert_eq!(
        again,
        Registered {
            id: v2.id,
            version: 3
        }
    );
    let new = h.register("s", &record(C_LONG_DEFAULT)).unwrap();
    assert_eq!(new, Registered { id: 3, version: 4 });
}

#[test]
fn delete_error_codes() {
    let mut h = Harness::default();
    assert_eq!(code(h.delete_subject("nope", false)), 40401);
    assert_eq!(
        code(h.delete_version("nope", VersionSpec::Number(1), false)),
        40401
    );
    h.register("s", &record(A_INT)).unwrap();
    assert_eq!(
        code(h.delete_version("s", VersionSpec::Number(9), false)),
        40402
    );
    assert_eq!(
        code(h.delete_version("s", VersionSpec::Number(1), true)),
        40407
    );
    assert_eq!(code(h.delete_subject("s", true)), 40405);
    assert_eq!(
        h.delete_version("s", VersionSpec::Latest, false).unwrap(),
        1
    );
    assert_eq!(
        code(h.delete_version("s", VersionSpec::Number(1), false)),
        40406
    );
    assert_eq!(code(h.delete_subject("s", false)), 40404);
    // All versions soft-deleted: the subject is gone for ordinary reads.
    assert_eq!(code(h.state.versions("s", Filter::Live)), 40401);
    assert_eq!(
        code(h.state.version("s", VersionSpec::Latest, false)),
        40401
    );
    assert!(h.state.subjects(Filter::Live, "").is_empty());
    assert_eq!(h.state.subjects(Filter::All, ""), vec!["s".to_string()]);
    assert_eq!(
        h.delete_version("s", VersionSpec::Number(1), true).unwrap(),
        1
    );
    assert_eq!(
        code(h.state.version("s", VersionSpec::Number(1), true)),
        40401
    );
    // Permanently deleted: not readable by id any more, and ids are not reused.
    assert_eq!(code(h.state.schema_by_id(1)), 40403);
    assert_eq!(h.register("t", &record(B_STRING)).unwrap().id, 2);
}

#[test]
fn soft_and_permanent_subject_delete() {
    let mut h = Harness::default();
    h.set_level(Some("s"), CompatibilityLevel::None);
    h.register("s", &record(A_INT)).unwrap();
    h.register("s", &record(B_STRING)).unwrap();
    assert_eq!(h.delete_subject("s", false).unwrap(), vec![1, 2]);
    assert_eq!(code(h.state.versions("s", Filter::Live)), 40401);
    // Soft delete keeps the subject's config.
    assert_eq!(h.state.subject_config("s"), Some(CompatibilityLevel::None));
    assert_eq!(h.state.schema_by_id(2).unwrap().id, 2);
    // Registering again continues the version sequence.
    assert_eq!(
        h.register("s", &record(A_INT)).unwrap(),
        Registered { id: 1, version: 3 }
    );
    h.delete_subject("s", false).unwrap();
    assert_eq!(h.delete_subject("s", true).unwrap(), vec![1, 2, 3]);
    assert_eq!(h.state.subject_config("s"), None);
    assert_eq!(code(h.state.versions("s", Filter::All)), 40401);
    assert_eq!(code(h.state.schema_by_id(1)), 40403);
    // Replay reaches the same place.
    let replayed = h.replayed();
    assert_eq!(code(replayed.versions("s", Filter::All)), 40401);
    assert_eq!(replayed.subject_config("s"), None);
    assert_eq!(replayed.max_id(), 2);
}

#[test]
fn replay_rebuilds_ids_versions_configs_and_deletes() {
    let mut h = Harness::default();
    h.set_level(None, CompatibilityLevel::Full);
    h.set_level(Some("b"), CompatibilityLevel::None);
    h.register("a", &record(A_INT)).unwrap();
    h.register("a", &record(&format!("{A_INT},{B_STRING_DEFAULT}")))
        .unwrap();
    h.register("b", &record(B_STRING)).unwrap();
    h.register("b", &record(A_INT)).unwrap();
    h.delete_version("a", VersionSpec::Number(1), false)
        .unwrap();
    h.delete_subject("b", false).unwrap();
    let mode = h.state.plan_set(Some("a"), Mode::Import);
    h.commit(Ok(mode)).unwrap();

    let replayed = h.replayed();
    assert_eq!(replayed.max_id(), h.state.max_id());
    assert_eq!(replayed.global_config(), CompatibilityLevel::Full);
    assert_eq!(replayed.effective_level("b"), CompatibilityLevel::None);
    assert_eq!(replayed.effective_mode("a"), Mode::Import);
    assert_eq!(replayed.versions("a", Filter::All).unwrap(), vec![1, 2]);
    assert_eq!(replayed.versions("a", Filter::Live).unwrap(), vec![2]);
    assert_eq!(code(replayed.versions("b", Filter::Live)), 40401);
    assert_eq!(
        replayed.versions("b", Filter::DeletedOnly).unwrap(),
        vec![1, 2]
    );
    for id in 1..=3 {
        assert_eq!(
            replayed.schema_by_id(id).unwrap().schema,
            h.state.schema_by_id(id).unwrap().schema
        );
    }
    // A new schema after the replay gets max + 1.
    let mut again = Harness {
        state: replayed,
        log: h.log.clone(),
    };
    assert_eq!(
        again.register("c", &record(C_LONG_DEFAULT)).unwrap(),
        Registered { id: 4, version: 1 }
    );
}

#[test]
fn delete_subject_record_applies_in_log_order() {
    let value = |version, id| {
        Some(SchemaValue {
            subject: "s".into(),
            version,
            id,
            schema: "\"string\"".into(),
            schema_type: SchemaType::Avro,
            references: vec![],
            deleted: false,
        })
    };
    let mut state = RegistryState::new();
    state.apply(&LogRecord::Schema {
        subject: "s".into(),
        version: 1,
        value: value(1, 5),
    });
    state.apply(&LogRecord::Schema {
        subject: "s".into(),
        version: 2,
        value: value(2, 5),
    });
    state.apply(&LogRecord::DeleteSubject {
        subject: "s".into(),
        version: Some(2),
    });
    state.apply(&LogRecord::Schema {
        subject: "s".into(),
        version: 3,
        value: value(3, 5),
    });
    assert_eq!(state.versions("s", Filter::Live).unwrap(), vec![3]);
    assert_eq!(
        state.versions("s", Filter::DeletedOnly).unwrap(),
        vec![1, 2]
    );
    assert_eq!(state.max_id(), 5);
    assert_eq!(
        state
            .plan_register("t", &SchemaRequest::avro("\"long\""))
            .unwrap()
            .outcome
            .id,
        6
    );
}

#[test]
fn lookup_finds_the_version_or_says_why_not() {
    let mut h = Harness::default();
    assert_eq!(
        code(
            h.state
                .lookup("s", &SchemaRequest::avro(record(A_INT)), false)
        ),
        40401
    );
    h.register("s", &record(A_INT)).unwrap();
    let found = h
        .state
        .lookup("s", &SchemaRequest::avro(record(A_INT)), false)
        .unwrap();
    assert_eq!(
        (found.id, found.version, found.subject.as_str()),
        (1, 1, "s")
    );
    assert_eq!(
        code(
            h.state
                .lookup("s", &SchemaRequest::avro(record(B_STRING)), false)
        ),
        40403
    );
    assert_eq!(
        code(h.state.lookup("s", &SchemaRequest::avro("{"), false)),
        42201
    );
}

fn accepts(h: &mut Harness, subject: &str, fields: &str) {
    h.register(subject, &record(fields))
        .unwrap_or_else(|e| panic!("refused {fields}: {e}"));
}

fn refuses(h: &mut Harness, subject: &str, fields: &str) -> String {
    let err = h.register(subject, &record(fields)).unwrap_err();
    assert_eq!(err.error_code(), 409, "{err}");
    assert_eq!(err.http_status(), 409);
    let message = err.to_string();
    assert!(message.contains(&format!("\"{subject}\"")), "{message}");
    message
}

#[test]
fn backward_default_level() {
    let mut h = Harness::default();
    accepts(&mut h, "s", A_INT);
    // New field without default: the new schema cannot read old data.
    refuses(&mut h, "s", &format!("{A_INT},{B_STRING}"));
    accepts(&mut h, "s", &format!("{A_INT},{B_STRING_DEFAULT}"));
    // Removing a field is fine backward.
    accepts(&mut h, "s", B_STRING_DEFAULT);
}

#[test]
fn backward_transitive_checks_every_version() {
    // v3 reads v2 (a missing, has default) but not v1 (a was an int).
    for (level, ok) in [
        (CompatibilityLevel::Backward, true),
        (CompatibilityLevel::BackwardTransitive, false),
    ] {
        let mut h = Harness::default();
        h.set_level(Some("s"), level);
        accepts(&mut h, "s", A_INT);
        accepts(&mut h, "s", B_STRING_DEFAULT);
        if ok {
            accepts(&mut h, "s", A_STRING_DEFAULT);
        } else {
            let message = refuses(&mut h, "s", A_STRING_DEFAULT);
            assert!(message.contains("version 1"), "{message}");
        }
    }
}

#[test]
fn forward_and_forward_transitive() {
    let mut h = Harness::default();
    h.set_level(Some("s"), CompatibilityLevel::Forward);
    accepts(&mut h, "s", A_INT);
    // Old readers cannot fill `a` if it disappears.
    refuses(&mut h, "s", B_STRING_DEFAULT);
    // Adding a field without default is fine forward.
    accepts(&mut h, "s", &format!("{A_INT},{B_STRING}"));

    for (level, ok) in [
        (CompatibilityLevel::Forward, true),
        (CompatibilityLevel::ForwardTransitive, false),
    ] {
        let mut h = Harness::default();
        h.set_level(Some("s"), level);
        accepts(&mut h, "s", A_INT);
        accepts(&mut h, "s", A_INT_DEFAULT);
        // v2 has a default for `a`, v1 does not.
        if ok {
            accepts(&mut h, "s", C_LONG_DEFAULT);
        } else {
            refuses(&mut h, "s", C_LONG_DEFAULT);
        }
    }
}

#[test]
fn full_and_full_transitive() {
    let mut h = Harness::default();
    h.set_level(None, CompatibilityLevel::Full);
    accepts(&mut h, "s", A_INT);
    refuses(&mut h, "s", &format!("{A_INT},{B_STRING}")); // backward fails
    refuses(&mut h, "s", B_STRING_DEFAULT); // forward fails
    accepts(&mut h, "s", &format!("{A_INT},{B_STRING_DEFAULT}"));

    for (level, ok) in [
        (CompatibilityLevel::Full, true),
        (CompatibilityLevel::FullTransitive, false),
    ] {
        let mut h = Harness::default();
        h.set_level(Some("s"), level);
        accepts(&mut h, "s", A_INT);
        accepts(&mut h, "s", A_INT_DEFAULT);
        if ok {
            accepts(&mut h, "s", C_LONG_DEFAULT);
        } else {
            refuses(&mut h, "s", C_LONG_DEFAULT);
        }
    }

    // FULL_TRANSITIVE, the project's level: optional additions pass, removals and type changes do not.
    let mut h = Harness::default();
    h.set_level(Some("m"), CompatibilityLevel::FullTransitive);
    accepts(&mut h, "m", A_INT);
    accepts(&mut h, "m", &format!("{A_INT},{B_STRING_DEFAULT}"));
    accepts(
        &mut h,
        "m",
        &format!("{A_INT},{B_STRING_DEFAULT},{C_LONG_DEFAULT}"),
    );
    refuses(&mut h, "m", &format!("{B_STRING_DEFAULT},{C_LONG_DEFAULT}"));
    refuses(
        &mut h,
        "m",
        &format!(r#"{{"name":"a","type":"string"}},{B_STRING_DEFAULT},{C_LONG_DEFAULT}"#),
    );
}

#[test]
fn none_accepts_anything_of_any_type() {
    let mut h = Harness::default();
    h.set_level(Some("s"), CompatibilityLevel::None);
    accepts(&mut h, "s", A_INT);
    accepts(&mut h, "s", B_STRING);
    h.register_typed("s", SchemaType::Json, r#"{"type":"object"}"#)
        .unwrap();
}

#[test]
fn enum_symbol_removal_is_incompatible_not_partial() {
    let mut h = Harness::default();
    let e = |symbols: &str| format!(r#"{{"type":"enum","name":"E","symbols":[{symbols}]}}"#);
    h.register("s", &e(r#""A","B""#)).unwrap();
    let err = h.register("s", &e(r#""A""#)).unwrap_err();
    assert_eq!(err.error_code(), 409, "{err}");
}

#[test]
fn type_change_is_incompatible_other_types_otherwise_compatible() {
    let mut h = Harness::default();
    h.register_typed(
        "p",
        SchemaType::Protobuf,
        "syntax = \"proto3\"; message M { string a = 1; }",
    )
    .unwrap();
    let changed = h.register_typed(
        "p",
        SchemaType::Protobuf,
        "syntax = \"proto3\"; message M { int64 a = 1; }",
    );
    assert_eq!(changed.unwrap().version, 2);
    let err = h
        .register_typed("p", SchemaType::Avro, "\"string\"")
        .unwrap_err();
    assert_eq!(err.error_code(), 409);
    assert!(err.to_string().contains("PROTOBUF"), "{err}");
    h.register_typed("j", SchemaType::Json, r#"{"type":"object"}"#)
        .unwrap();
    h.register_typed("j", SchemaType::Json, r#"{"type":"string"}"#)
        .unwrap();
    // The same text under another type is another schema.
    let a = h
        .register_typed("x", SchemaType::Json, r#"{"type":"string"}"#)
        .unwrap();
    let b = h
        .register_typed("y", SchemaType::Avro, r#"{"type":"string"}"#)
        .unwrap();
    assert_ne!(a.id, b.id);
}

#[test]
fn compatibility_endpoint_semantics() {
    let mut h = Harness::default();
    let new = SchemaRequest::avro(record(&format!("{A_INT},{B_STRING}")));
    // Missing subject: `latest` and no version are compatible, a number is 40402.
    assert!(
        h.state
            .check_compatibility("s", Some(VersionSpec::Latest), &new)
            .unwrap()
            .is_empty()
    );
    assert!(
        h.state
            .check_compatibility("s", None, &new)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        code(
            h.state
                .check_compatibility("s", Some(VersionSpec::Number(1)), &new)
        ),
        40402
    );
    h.register("s", &record(A_INT)).unwrap();
    assert!(
        !h.state
            .check_compatibility("s", Some(VersionSpec::Latest), &new)
            .unwrap()
            .is_empty()
    );
    assert!(
        !h.state
            .check_compatibility("s", None, &new)
            .unwrap()
            .is_empty()
    );
    assert!(
        !h.state
            .check_compatibility("s", Some(VersionSpec::Number(1)), &new)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        code(
            h.state
                .check_compatibility("s", Some(VersionSpec::Number(2)), &new)
        ),
        40402
    );
    assert_eq!(
        code(
            h.state
                .check_compatibility("s", None, &SchemaRequest::avro("{"))
        ),
        42201
    );
    let ok = SchemaRequest::avro(record(&format!("{A_INT},{B_STRING_DEFAULT}")));
    assert!(
        h.state
            .check_compatibility("s", None, &ok)
            .unwrap()
            .is_empty()
    );
    // Only live versions count.
    h.delete_version("s", VersionSpec::Number(1), false)
        .unwrap();
    assert!(
        h.state
            .check_compatibility("s", None, &new)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        code(
            h.state
                .check_compatibility("s", Some(VersionSpec::Number(1)), &new)
        ),
        40402
    );
}

#[test]
fn config_precedence_and_deletes() {
    let mut h = Harness::default();
    assert_eq!(h.state.effective_level("s"), CompatibilityLevel::Backward);
    assert_eq!(
        code(h.state.plan_delete::<CompatibilityLevel>(Some("s"))),
        40408
    );
    h.set_level(None, CompatibilityLevel::Forward);
    assert_eq!(h.state.effective_level("s"), CompatibilityLevel::Forward);
    h.set_level(Some("s"), CompatibilityLevel::FullTransitive);
    assert_eq!(
        h.state.effective_level("s"),
        CompatibilityLevel::FullTransitive
    );
    let previous = h.state.plan_delete::<CompatibilityLevel>(Some("s"));
    assert_eq!(
        h.commit(previous).unwrap(),
        CompatibilityLevel::FullTransitive
    );
    assert_eq!(h.state.effective_level("s"), CompatibilityLevel::Forward);
    let previous = h.state.plan_delete::<CompatibilityLevel>(None);
    assert_eq!(h.commit(previous).unwrap(), CompatibilityLevel::Forward);
    assert_eq!(h.state.global_config(), CompatibilityLevel::Backward);
    // A config alone does not make a subject exist.
    h.set_level(Some("only-config"), CompatibilityLevel::None);
    assert!(h.state.subjects(Filter::All, "").is_empty());
}

#[test]
fn read_only_mode_blocks_writes_and_import_takes_ids() {
    let mut h = Harness::default();
    h.register("s", &record(A_INT)).unwrap();
    let plan = h.state.plan_set(None, Mode::ReadOnly);
    h.commit(Ok(plan)).unwrap();
    assert_eq!(code(h.register("s", &record(B_STRING_DEFAULT))), 42205);
    assert_eq!(code(h.delete_subject("s", false)), 42205);
    assert_eq!(code(h.state.plan_delete::<Mode>(Some("s"))), 40409);
    let plan = h.state.plan_set(Some("s"), Mode::Import);
    h.commit(Ok(plan)).unwrap();
    let request = SchemaRequest {
        id: Some(100),
        version: Some(7),
        ..SchemaRequest::avro(record(B_STRING))
    };
    let plan = h.state.plan_register("s", &request);
    assert_eq!(
        h.commit(plan).unwrap(),
        Registered {
            id: 100,
            version: 7
        }
    );
    // Another schema cannot take an id that is in use.
    let request = SchemaRequest {
        id: Some(100),
        ..SchemaRequest::avro(record(C_LONG_DEFAULT))
    };
    assert_eq!(code(h.state.plan_register("s", &request)), 42205);
    assert_eq!(h.state.max_id(), 100);
}

#[test]
fn avro_references_resolve_and_protect_the_referenced_version() {
    let mut h = Harness::default();
    let unit = r#"{"type":"enum","name":"Unit","namespace":"dho","symbols":["MMHG","BPM"]}"#;
    h.register("dho.Unit", unit).unwrap();
    let with_ref = r#"{"type":"record","name":"M","namespace":"dho","fields":[{"name":"u","type":"dho.Unit"}]}"#;
    let reference = Reference {
        name: "dho.Unit".into(),
        subject: "dho.Unit".into(),
        version: 1,
    };
    let request = SchemaRequest {
        references: Some(vec![reference.clone()]),
        ..SchemaRequest::avro(with_ref)
    };
    let plan = h.state.plan_register("m-value", &request);
    let registered = h.commit(plan).unwrap();
    assert_eq!(registered, Registered { id: 2, version: 1 });
    assert_eq!(h.state.schema_by_id(2).unwrap().references, vec![reference]);
    assert_eq!(h.state.referenced_by("dho.Unit", 1), vec![2]);
    assert_eq!(
        code(h.delete_version("dho.Unit", VersionSpec::Number(1), false)),
        42206
    );
    assert_eq!(code(h.delete_subject("dho.Unit", false)), 42206);
    // Without the reference it does not parse; a dangling reference is 42201.
    assert_eq!(
        code(h.state.plan_register("x", &SchemaRequest::avro(with_ref))),
        42201
    );
    let dangling = SchemaRequest {
        references: Some(vec![Reference {
            name: "dho.Unit".into(),
            subject: "nope".into(),
            version: 1,
        }]),
        ..SchemaRequest::avro(with_ref)
    };
    assert_eq!(code(h.state.plan_register("x", &dangling)), 42201);
    // Replay parses referencing schemas after the referenced ones.
    let replayed = h.replayed();
    let found = replayed.lookup("m-value", &request, false).unwrap();
    assert_eq!(found.id, 2);
}

#[test]
fn id_versions_lists_every_use() {
    let mut h = Harness::default();
    h.register("a", &record(A_INT)).unwrap();
    h.register("b", &record(A_INT)).unwrap();
    h.delete_version("b", VersionSpec::Number(1), false)
        .unwrap();
    assert_eq!(
        h.state.id_versions(1, Filter::Live).unwrap(),
        vec![("a".to_string(), 1)]
    );
    assert_eq!(h.state.id_versions(1, Filter::All).unwrap().len(), 2);
    assert_eq!(code(h.state.id_versions(9, Filter::All)), 40403);
}

#[test]
fn all_versions_filters_and_picks_the_latest() {
    let mut h = Harness::default();
    h.set_level(None, CompatibilityLevel::None);
    h.register("a", &record(A_INT)).unwrap();
    h.register("a", &record(B_STRING)).unwrap();
    h.register("b", &record(A_INT)).unwrap();
    h.delete_version("a", VersionSpec::Number(2), false)
        .unwrap();
    let pairs = |infos: Vec<VersionInfo>| -> Vec<(String, u32)> {
        infos.into_iter().map(|i| (i.subject, i.version)).collect()
    };
    assert_eq!(
        pairs(h.state.all_versions(Filter::Live, "", false)),
        vec![("a".into(), 1), ("b".into(), 1)]
    );
    assert_eq!(
        pairs(h.state.all_versions(Filter::All, "a", true)),
        vec![("a".into(), 2)]
    );
    assert!(h.state.all_versions(Filter::Live, "c", false).is_empty());
}
