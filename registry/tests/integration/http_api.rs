//! The REST API with plain HTTP requests shaped like Confluent's clients send them.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Env, avro_record};

const A_INT: &str = r#"{"name":"a","type":"int"}"#;
const B_DEFAULT: &str = r#"{"name":"b","type":"string","default":""}"#;

#[tokio::test]
async fn subjects_versions_and_ids() {
    let env = Env::start().await;
    let v1 = avro_record(A_INT);
    let v2 = avro_record(&format!("{A_INT},{B_DEFAULT}"));

    assert_eq!(env.get("/").await.ok(), &json!({}));
    assert_eq!(
        env.get("/schemas/types").await.ok(),
        &json!(["JSON", "PROTOBUF", "AVRO"])
    );
    assert_eq!(env.get("/subjects").await.ok(), &json!([]));
    assert_eq!(env.get("/contexts").await.ok(), &json!(["."]));

    // Register: 200 and {id}; ids start at 1.
    let reply = env
        .post("/subjects/readings-value/versions", json!({ "schema": v1 }))
        .await;
    assert_eq!(reply.ok(), &json!({ "id": 1, "version": 1, "schema": v1 }));
    // Re-registering (other whitespace and key order, explicit AVRO, empty references,
    // metadata and ruleSet, normalize=True) returns the same id.
    let respaced = r#"{ "namespace": "dho", "type": "record", "name": "Reading",
                        "fields": [ { "type": "int", "name": "a" } ] }"#;
    let body = json!({
        "schema": respaced, "schemaType": "AVRO", "references": [],
        "metadata": {"properties": {"owner": "dho"}}, "ruleSet": null
    });
    let reply = env
        .post("/subjects/readings-value/versions?normalize=True", body)
        .await;
    assert_eq!(reply.ok()["id"], 1);
    // The same schema under another subject reuses the id.
    assert_eq!(env.register("other-value", &v1).await, 1);
    assert_eq!(env.register("readings-value", &v2).await, 2);

    assert_eq!(
        env.get("/subjects").await.ok(),
        &json!(["other-value", "readings-value"])
    );
    assert_eq!(
        env.get("/subjects?subjectPrefix=read").await.ok(),
        &json!(["readings-value"])
    );
    assert_eq!(
        env.get("/subjects?limit=-1&offset=1").await.ok(),
        &json!(["readings-value"])
    );
    assert_eq!(
        env.get("/subjects/readings-value/versions").await.ok(),
        &json!([1, 2])
    );

    // Versions by number, `latest` and `-1`; R needs id, schema; AVRO has no schemaType.
    let expected_v1 = json!({ "subject": "readings-value", "version": 1, "id": 1, "schema": v1 });
    let expected_v2 = json!({ "subject": "readings-value", "version": 2, "id": 2, "schema": v2 });
    assert_eq!(
        env.get("/subjects/readings-value/versions/1").await.ok(),
        &expected_v1
    );
    assert_eq!(
        env.get("/subjects/readings-value/versions/latest")
            .await
            .ok(),
        &expected_v2
    );
    assert_eq!(
        env.get("/subjects/readings-value/versions/-1").await.ok(),
        &expected_v2
    );
    let raw = env.get("/subjects/readings-value/versions/1/schema").await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.text, v1);

    // Schemas by id, with the query parameters deserialisers send (and unknown ones).
    let by_id = env
        .get("/schemas/ids/1?deleted=true&subject=readings-value&whatever=1")
        .await;
    assert_eq!(by_id.ok(), &json!({ "schema": v1 }));
    assert_eq!(
        env.get("/schemas/ids/2?fetchMaxId=true").await.ok()["maxId"],
        2
    );
    assert_eq!(env.get("/schemas/ids/1/schema").await.text, v1);
    assert_eq!(
        env.get("/schemas/ids/1/versions").await.ok(),
        &json!([{"subject": "other-value", "version": 1}, {"subject": "readings-value", "version": 1}])
    );
    assert_eq!(
        env.get("/schemas/ids/1/versions?subject=other-value")
            .await
            .ok(),
        &json!([{"subject": "other-value", "version": 1}])
    );
    assert_eq!(
        env.get("/schemas/ids/1/subjects").await.ok(),
        &json!(["other-value", "readings-value"])
    );

    // All schemas, and the latest of each subject.
    assert_eq!(env.get("/schemas").await.ok().as_array().unwrap().len(), 3);
    assert_eq!(
        env.get("/schemas?latestOnly=true&subjectPrefix=readings")
            .await
            .ok(),
        &json!([expected_v2])
    );

    // Lookup returns subject, id, version and schema (R needs version).
    let found = env
        .post(
            "/subjects/readings-value?normalize=False&deleted=false",
            json!({ "schema": respaced }),
        )
        .await;
    assert_eq!(found.ok(), &expected_v1);
}

#[tokio::test]
async fn requests_as_clients_send_them() {
    let env = Env::start().await;
    let v1 = avro_record(A_INT);

    // Python percent-encodes the whole subject; R encodes only '/'.
    let reply = env
        .post(
            "/subjects/dho%2Freadings%20value/versions",
            json!({ "schema": v1 }),
        )
        .await;
    assert_eq!(reply.ok()["id"], 1);
    assert_eq!(
        env.get("/subjects").await.ok(),
        &json!(["dho/readings value"])
    );
    let got = env
        .get("/subjects/dho%2Freadings%20value/versions/latest")
        .await;
    assert_eq!(got.ok()["subject"], "dho/readings value");

    // Trailing and doubled slashes.
    assert_eq!(
        env.get("/subjects/").await.ok(),
        &json!(["dho/readings value"])
    );
    assert_eq!(
        env.get("//subjects//dho%2Freadings%20value//versions/")
            .await
            .ok(),
        &json!([1])
    );
    let reply = env
        .post("/subjects/s2/versions/", json!({ "schema": v1 }))
        .await;
    assert_eq!(reply.ok()["id"], 1);
    let compat = env
        .post(
            "/compatibility/subjects/s2/versions/",
            json!({ "schema": v1 }),
        )
        .await;
    assert_eq!(compat.ok(), &json!({ "is_compatible": true }));

    // POST without Accept and with another Content-Type; GET with no headers at all.
    let response = env
        .http
        .post(env.url("/subjects/s3/versions"))
        .header("Content-Type", "application/octet-stream")
        .body(json!({ "schema": v1 }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let response = env
        .http
        .get(env.url("/subjects/s3/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/vnd.schemaregistry.v1+json"
    );
    // Accept as the Python client sends it on GET and DELETE.
    let response = env
        .http
        .delete(env.url("/subjects/s3/versions/1"))
        .header("Accept", "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), "1");

    // Booleans in any case.
    assert_eq!(
        env.get("/subjects?deleted=TRUE").await.ok(),
        &json!(["dho/readings value", "s2", "s3"])
    );
    assert_eq!(
        env.get("/subjects/s3/versions?deleted=True").await.ok(),
        &json!([1])
    );

    // References with extra null fields are accepted.
    let referencing = r#"{"type":"record","name":"Wrapper","namespace":"dho","fields":[{"name":"r","type":"dho.Reading"}]}"#;
    let body = json!({
        "schema": referencing,
        "references": [{"name": "dho.Reading", "subject": "s2", "version": 1, "properties": null, "tags": null}]
    });
    let reply = env.post("/subjects/wrapper-value/versions", body).await;
    assert_eq!(reply.ok()["id"], 2);
    let by_id = env.get("/schemas/ids/2").await;
    assert_eq!(
        by_id.ok()["references"],
        json!([{"name": "dho.Reading", "subject": "s2", "version": 1}])
    );
    assert_eq!(
        env.get("/subjects/s2/versions/1/referencedby").await.ok(),
        &json!([2])
    );
}

#[tokio::test]
async fn error_codes() {
    let env = Env::start().await;
    let v1 = avro_record(A_INT);
    env.register("s", &v1).await;

    env.get("/subjects/nope/versions").await.error(40401);
    env.get("/subjects/nope/versions/1").await.error(40401);
    env.get("/subjects/nope/versions/latest").await.error(40401);
    env.post("/subjects/nope", json!({ "schema": v1 }))
        .await
        .error(40401);
    env.delete("/subjects/nope").await.error(40401);
    env.get("/subjects/s/versions/9").await.error(40402);
    env.delete("/subjects/s/versions/9").await.error(40402);
    for bad in ["abc", "0", "-2", "1.5", "99999999999"] {
        env.get(&format!("/subjects/s/versions/{bad}"))
            .await
            .error(42202);
    }
    env.delete("/subjects/s/versions/abc").await.error(42202);
    env.post(
        "/compatibility/subjects/s/versions/zero",
        json!({ "schema": v1 }),
    )
    .await
    .error(42202);
    env.get("/schemas/ids/999").await.error(40403);
    env.get("/schemas/ids/abc").await.error(40403);
    env.get("/schemas/ids/999/versions").await.error(40403);
    env.post("/subjects/s", json!({ "schema": avro_record(B_DEFAULT) }))
        .await
        .error(40403);

    // Invalid schemas and types.
    env.post(
        "/subjects/s/versions",
        json!({ "schema": "{\"type\": \"record\"}" }),
    )
    .await
    .error(42201);
    env.post("/subjects/s/versions", json!({ "schema": "not json" }))
        .await
        .error(42201);
    env.post("/subjects/s/versions", json!({}))
        .await
        .error(42201);
    env.post(
        "/subjects/s/versions",
        json!({ "schema": "\"int\"", "schemaType": "XML" }),
    )
    .await
    .error(42201);
    env.post(
        "/subjects/s/versions",
        json!({ "schema": "message {", "schemaType": "PROTOBUF" }),
    )
    .await
    .error(42201);
    env.post("/subjects/s", json!({ "schema": "{" }))
        .await
        .error(42201);
    env.post(
        "/compatibility/subjects/s/versions",
        json!({ "schema": "{" }),
    )
    .await
    .error(42201);
    let reference = json!([{"name": "x.Y", "subject": "missing", "version": 1}]);
    env.post(
        "/subjects/r/versions",
        json!({ "schema": "\"x.Y\"", "references": reference }),
    )
    .await
    .error(42201);
    // A body that is not JSON at all is a client error too.
    let reply = env.call(Method::POST, "/subjects/s/versions", None).await;
    reply.error(42201);
    let response = env
        .http
        .post(env.url("/subjects/s/versions"))
        .body("{{{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);

    // Config and mode.
    env.put("/config", json!({ "compatibility": "SIDEWAYS" }))
        .await
        .error(42203);
    env.put("/config/s", json!({})).await.error(42203);
    env.put("/mode", json!({ "mode": "WRITEONLY" }))
        .await
        .error(42204);
    env.get("/config/s").await.error(40408);
    env.delete("/config/s").await.error(40408);
    env.get("/mode/s").await.error(40409);
    env.delete("/mode/s").await.error(40409);

    // Delete order.
    env.delete("/subjects/s/versions/1?permanent=true")
        .await
        .error(40407);
    env.delete("/subjects/s?permanent=true").await.error(40405);
    assert_eq!(env.delete("/subjects/s/versions/1").await.ok(), &json!(1));
    env.delete("/subjects/s/versions/1").await.error(40406);
    env.delete("/subjects/s").await.error(40404);

    // Incompatible.
    env.register("t", &v1).await;
    let message = env
        .post("/subjects/t/versions", json!({ "schema": avro_record(&format!("{A_INT},{{\"name\":\"c\",\"type\":\"int\"}}")) }))
        .await
        .error(409)
        .to_string();
    assert!(message.contains("\"t\""), "{message}");

    // Referenced schemas cannot be deleted.
    let referencing = r#"{"type":"record","name":"W","namespace":"dho","fields":[{"name":"r","type":"dho.Reading"}]}"#;
    let body = json!({ "schema": referencing, "references": [{"name": "dho.Reading", "subject": "t", "version": 1}] });
    env.post("/subjects/w/versions", body).await.ok();
    env.delete("/subjects/t/versions/1").await.error(42206);
    env.delete("/subjects/t").await.error(42206);

    // Read-only mode.
    assert_eq!(
        env.put("/mode/t", json!({ "mode": "READONLY" })).await.ok(),
        &json!({ "mode": "READONLY" })
    );
    env.post(
        "/subjects/t/versions",
        json!({ "schema": avro_record(B_DEFAULT) }),
    )
    .await
    .error(42205);

    // Unknown routes and methods: JSON 404/405, never a 5xx.
    env.get("/nothing/here").await.error(404);
    env.call(Method::PATCH, "/subjects", None).await.error(405);
}

#[tokio::test]
async fn soft_and_permanent_deletes() {
    let env = Env::start().await;
    env.put("/config/s", json!({ "compatibility": "NONE" }))
        .await
        .ok();
    let v1 = avro_record(A_INT);
    let v2 = avro_record(B_DEFAULT);
    env.register("s", &v1).await;
    env.register("s", &v2).await;

    assert_eq!(
        env.delete("/subjects/s/versions/latest").await.ok(),
        &json!(2)
    );
    assert_eq!(env.get("/subjects/s/versions").await.ok(), &json!([1]));
    assert_eq!(
        env.get("/subjects/s/versions?deleted=true").await.ok(),
        &json!([1, 2])
    );
    assert_eq!(
        env.get("/subjects/s/versions?deleted_only=true").await.ok(),
        &json!([2])
    );
    assert_eq!(
        env.get("/subjects/s/versions/latest").await.ok()["version"],
        1
    );
    assert_eq!(
        env.get("/subjects/s/versions/latest?deleted=true")
            .await
            .ok()["version"],
        2
    );
    env.get("/subjects/s/versions/2").await.error(40402);
    assert_eq!(
        env.get("/subjects/s/versions/2?deleted=true").await.ok()["id"],
        2
    );
    // Still readable by id, as deserialisers need.
    assert_eq!(env.get("/schemas/ids/2").await.ok()["schema"], json!(v2));
    env.post("/subjects/s", json!({ "schema": v2 }))
        .await
        .error(40403);
    assert_eq!(
        env.post("/subjects/s?deleted=true", json!({ "schema": v2 }))
            .await
            .ok()["version"],
        2
    );
    assert_eq!(env.get("/schemas/ids/2/versions").await.ok(), &json!([]));
    assert_eq!(
        env.get("/schemas/ids/2/versions?deleted=true").await.ok(),
        &json!([{"subject": "s", "version": 2}])
    );

    // Registering the soft-deleted schema again: new version, same id.
    let again = env
        .post("/subjects/s/versions", json!({ "schema": v2 }))
        .await;
    assert_eq!(again.ok()["id"], 2);
    assert_eq!(env.get("/subjects/s/versions").await.ok(), &json!([1, 3]));

    // Subject soft delete, then permanent.
    assert_eq!(env.delete("/subjects/s").await.ok(), &json!([1, 3]));
    env.get("/subjects/s/versions").await.error(40401);
    assert_eq!(env.get("/subjects").await.ok(), &json!([]));
    assert_eq!(env.get("/subjects?deleted=true").await.ok(), &json!(["s"]));
    assert_eq!(
        env.get("/subjects?deletedOnly=true").await.ok(),
        &json!(["s"])
    );
    assert_eq!(
        env.get("/config/s").await.ok(),
        &json!({ "compatibilityLevel": "NONE" })
    );
    assert_eq!(
        env.delete("/subjects/s?permanent=true").await.ok(),
        &json!([1, 2, 3])
    );
    env.get("/subjects/s/versions?deleted=true")
        .await
        .error(40401);
    env.get("/schemas/ids/1").await.error(40403);
    env.get("/config/s").await.error(40408);
    // Ids are not reused.
    assert_eq!(
        env.register("s", &avro_record(r#"{"name":"z","type":"long"}"#))
            .await,
        3
    );
    assert_eq!(env.get("/subjects/s/versions").await.ok(), &json!([1]));
}

#[tokio::test]
async fn config_and_mode() {
    let env = Env::start().await;
    assert_eq!(
        env.get("/config").await.ok(),
        &json!({ "compatibilityLevel": "BACKWARD" })
    );
    assert_eq!(
        env.put("/config", json!({ "compatibility": "FULL" }))
            .await
            .ok(),
        &json!({ "compatibility": "FULL" })
    );
    assert_eq!(
        env.get("/config").await.ok(),
        &json!({ "compatibilityLevel": "FULL" })
    );
    assert_eq!(
        env.put("/config/s", json!({ "compatibility": "full_transitive" }))
            .await
            .ok(),
        &json!({ "compatibility": "FULL_TRANSITIVE" })
    );
    assert_eq!(
        env.get("/config/s").await.ok(),
        &json!({ "compatibilityLevel": "FULL_TRANSITIVE" })
    );
    assert_eq!(
        env.get("/config/other?defaultToGlobal=true").await.ok(),
        &json!({ "compatibilityLevel": "FULL" })
    );
    assert_eq!(
        env.delete("/config/s").await.ok(),
        &json!({ "compatibilityLevel": "FULL_TRANSITIVE" })
    );
    assert_eq!(
        env.get("/config/s?defaultToGlobal=True").await.ok(),
        &json!({ "compatibilityLevel": "FULL" })
    );
    assert_eq!(
        env.delete("/config").await.ok(),
        &json!({ "compatibilityLevel": "FULL" })
    );
    assert_eq!(
        env.get("/config").await.ok(),
        &json!({ "compatibilityLevel": "BACKWARD" })
    );

    assert_eq!(env.get("/mode").await.ok(), &json!({ "mode": "READWRITE" }));
    assert_eq!(
        env.put("/mode", json!({ "mode": "READONLY" })).await.ok(),
        &json!({ "mode": "READONLY" })
    );
    env.post("/subjects/s/versions", json!({ "schema": "\"int\"" }))
        .await
        .error(42205);
    assert_eq!(
        env.put("/mode/s", json!({ "mode": "READWRITE" }))
            .await
            .ok(),
        &json!({ "mode": "READWRITE" })
    );
    assert_eq!(
        env.get("/mode/s").await.ok(),
        &json!({ "mode": "READWRITE" })
    );
    assert_eq!(
        env.post("/subjects/s/versions", json!({ "schema": "\"int\"" }))
            .await
            .ok()["id"],
        1
    );
    assert_eq!(
        env.get("/mode/t?defaultToGlobal=true").await.ok(),
        &json!({ "mode": "READONLY" })
    );
    assert_eq!(
        env.delete("/mode/s").await.ok(),
        &json!({ "mode": "READWRITE" })
    );
    assert_eq!(
        env.delete("/mode").await.ok(),
        &json!({ "mode": "READONLY" })
    );
    assert_eq!(env.get("/mode").await.ok(), &json!({ "mode": "READWRITE" }));

    // IMPORT mode takes ids and versions from the body.
    env.put("/mode/imported", json!({ "mode": "IMPORT" }))
        .await
        .ok();
    let body = json!({ "schema": "\"string\"", "id": 42, "version": 5 });
    assert_eq!(
        env.post("/subjects/imported/versions", body).await.ok()["id"],
        42
    );
    assert_eq!(
        env.get("/subjects/imported/versions").await.ok(),
        &json!([5])
    );
}

#[tokio::test]
async fn compatibility_endpoints() {
    let env = Env::start().await;
    let v1 = avro_record(A_INT);
    let breaking = avro_record(&format!("{A_INT},{{\"name\":\"c\",\"type\":\"int\"}}"));
    let fine = avro_record(&format!("{A_INT},{B_DEFAULT}"));

    // Missing subject: `latest` and no version are compatible, a number is 40402.
    let yes = json!({ "is_compatible": true });
    assert_eq!(
        env.post(
            "/compatibility/subjects/s/versions/latest",
            json!({ "schema": breaking })
        )
        .await
        .ok(),
        &yes
    );
    assert_eq!(
        env.post(
            "/compatibility/subjects/s/versions",
            json!({ "schema": breaking })
        )
        .await
        .ok(),
        &yes
    );
    env.post(
        "/compatibility/subjects/s/versions/1",
        json!({ "schema": breaking }),
    )
    .await
    .error(40402);

    env.register("s", &v1).await;
    let no = json!({ "is_compatible": false });
    for path in [
        "/compatibility/subjects/s/versions/latest",
        "/compatibility/subjects/s/versions/-1",
        "/compatibility/subjects/s/versions/1",
        "/compatibility/subjects/s/versions",
    ] {
        assert_eq!(
            env.post(path, json!({ "schema": breaking })).await.ok(),
            &no,
            "{path}"
        );
        assert_eq!(
            env.post(path, json!({ "schema": fine })).await.ok(),
            &yes,
            "{path}"
        );
    }
    let verbose = env
        .post(
            "/compatibility/subjects/s/versions/latest?verbose=True",
            json!({ "schema": breaking }),
        )
        .await;
    let body = verbose.ok();
    assert_eq!(body["is_compatible"], false);
    let messages = body["messages"].as_array().unwrap();
    assert!(!messages.is_empty());
    assert!(
        messages[0].as_str().unwrap().contains("'c'"),
        "{messages:?}"
    );
    let verbose_ok = env
        .post(
            "/compatibility/subjects/s/versions?verbose=true",
            json!({ "schema": fine }),
        )
        .await;
    assert_eq!(
        verbose_ok.ok(),
        &json!({ "is_compatible": true, "messages": [] })
    );
    env.post(
        "/compatibility/subjects/s/versions/7",
        json!({ "schema": fine }),
    )
    .await
    .error(40402);

    // A change of schema type is never compatible; Protobuf changes otherwise are.
    let proto = json!({ "schema": "syntax = \"proto3\"; message M { string a = 1; }", "schemaType": "PROTOBUF" });
    assert_eq!(
        env.post("/compatibility/subjects/s/versions", proto)
            .await
            .ok(),
        &no
    );
}

#[tokio::test]
async fn full_transitive_subject() {
    let env = Env::start().await;
    let subject = "dho.measurements-value";
    env.put(
        &format!("/config/{subject}"),
        json!({ "compatibility": "FULL_TRANSITIVE" }),
    )
    .await
    .ok();
    let versions = format!("/subjects/{subject}/versions");

    assert_eq!(env.register(subject, &avro_record(A_INT)).await, 1);
    // v2 adds an optional field with a default: accepted.
    let v2 = avro_record(&format!(
        r#"{A_INT},{{"name":"note","type":["null","string"],"default":null}}"#
    ));
    assert_eq!(env.register(subject, &v2).await, 2);
    // Removing a field without default: refused, naming the subject.
    let removed = avro_record(r#"{"name":"note","type":["null","string"],"default":null}"#);
    let message = env
        .post(&versions, json!({ "schema": removed }))
        .await
        .error(409)
        .to_string();
    assert!(message.contains(subject), "{message}");
    assert!(message.contains("'a'"), "{message}");
    // Changing a type: refused.
    let retyped = avro_record(
        r#"{"name":"a","type":"string"},{"name":"note","type":["null","string"],"default":null}"#,
    );
    let message = env
        .post(&versions, json!({ "schema": retyped }))
        .await
        .error(409)
        .to_string();
    assert!(message.contains(subject), "{message}");
    // A field without default: refused (new readers cannot read old data).
    let required = avro_record(&format!(r#"{A_INT},{{"name":"x","type":"long"}}"#));
    env.post(&versions, json!({ "schema": required }))
        .await
        .error(409);
    assert_eq!(env.get(&versions).await.ok(), &json!([1, 2]));
}

#[tokio::test]
async fn protobuf_and_json_schemas() {
    let env = Env::start().await;
    let proto = "syntax = \"proto3\";\npackage dho;\n\nmessage Reading {\n  string patient = 1;\n  double value = 2;\n}\n";
    let reply = env
        .post(
            "/subjects/p-value/versions",
            json!({ "schema": proto, "schemaType": "PROTOBUF" }),
        )
        .await;
    assert_eq!(reply.ok()["id"], 1);
    let by_id = env.get("/schemas/ids/1").await;
    assert_eq!(
        by_id.ok(),
        &json!({ "schema": proto, "schemaType": "PROTOBUF" })
    );
    let version = env.get("/subjects/p-value/versions/1").await;
    assert_eq!(version.ok()["schemaType"], "PROTOBUF");

    // format=serialized: a base64 FileDescriptorProto (as the Python deserialiser wants).
    let serialized = env.get("/schemas/ids/1?format=serialized").await;
    let encoded = serialized.ok()["schema"].as_str().unwrap().to_string();
    use base64::Engine as _;
    use prost::Message as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&encoded)
        .unwrap();
    let descriptor = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(descriptor.package.as_deref(), Some("dho"));
    assert_eq!(descriptor.message_type[0].name.as_deref(), Some("Reading"));
    // The Python client registers that form: same schema, same id.
    let reply = env
        .post(
            "/subjects/p2-value/versions",
            json!({ "schema": encoded, "schemaType": "PROTOBUF" }),
        )
        .await;
    assert_eq!(reply.ok()["id"], 1);
    let lookup = env
        .post(
            "/subjects/p-value",
            json!({ "schema": encoded, "schemaType": "PROTOBUF" }),
        )
        .await;
    assert_eq!(lookup.ok()["version"], 1);

    let json_schema = r#"{"type":"object","properties":{"a":{"type":"string"}}}"#;
    let reply = env
        .post(
            "/subjects/j-value/versions",
            json!({ "schema": json_schema, "schemaType": "JSON" }),
        )
        .await;
    assert_eq!(reply.ok()["id"], 2);
    assert_eq!(env.get("/schemas/ids/2").await.ok()["schemaType"], "JSON");
    // Type change under one subject: 409.
    env.post(
        "/subjects/j-value/versions",
        json!({ "schema": "\"string\"" }),
    )
    .await
    .error(409);
    let _: &Value = env.get("/subjects").await.ok();
}
