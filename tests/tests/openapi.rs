//! The gateway's OpenAPI 3.1 document (`gateway/openapi.json`, served at `/openapi.json`)
//! is the gateway's API, neither more nor less: every route of the router's table
//! (`gateway/src/routes.rs`) is in it with its methods and back, and on a live gateway each
//! documented operation is routed while each undocumented method on a documented path is
//! 405. Then schemathesis (PyPI; `./dev test` installs it) fuzzes a live gateway against
//! the document with the invariants: no 500 ever, a 503 only with `Retry-After` (declared
//! required on every 503), every response as the document says (status, media type,
//! headers, body schema).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use dho_gateway::openapi::OPENAPI_JSON;
use dho_tests::Stack;
use dho_tests::ingest::{HOME_TOKEN, PLATFORM_TOKEN, gateway_config, start_gateway};
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// (path, method) of every operation in the document.
fn documented() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                operations.insert((path.clone(), method.to_string()));
            }
        }
    }
    operations
}

/// (path, method) of every `.route(path, method(..).method(..))` in the router's table.
fn routed() -> BTreeSet<(String, String)> {
    let source =
        std::fs::read_to_string(dho_tests::crate_dir().join("../gateway/src/routes.rs")).unwrap();
    let mut operations = BTreeSet::new();
    for route in source.split(".route(").skip(1) {
        let path = route
            .trim_start()
            .strip_prefix('"')
            .and_then(|rest| rest.split('"').next())
            .expect("a route's path is a string literal");
        // The route's handlers: up to the next builder call at the start of a line.
        let handlers = route
            .split("\n        .")
            .next()
            .expect("the route's own text");
        for method in METHODS {
            let called = handlers
                .match_indices(&format!("{method}("))
                .any(|(at, _)| {
                    at == 0
                        || !handlers.as_bytes()[at - 1].is_ascii_alphanumeric()
                            && handlers.as_bytes()[at - 1] != b'_'
                });
            if called {
                operations.insert((path.to_string(), method.to_string()));
            }
        }
    }
    assert!(
        operations.len() > 10,
        "the route table was not read: {operations:?}"
    );
    operations
}

#[test]
fn openapi_every_route_is_documented_with_its_methods_and_back() {
    let (documented, routed) = (documented(), routed());
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routed but not in gateway/openapi.json: {undocumented:?}; documented but not \
         routed: {unrouted:?}"
    );
}

/// The live gateway agrees: it serves the document, answers each documented operation (no
/// 404 or 405, even without a token) and refuses each other method of a documented path
/// with 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_the_live_gateway_serves_the_document_and_routes_exactly_its_operations() {
    let stack = Stack::start().await;
    let gw = start_gateway(gateway_config(&stack.settings)).await;
    let client = reqwest::Client::new();
    let served = client
        .get(format!("{}/openapi.json", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(served.text().await.unwrap(), OPENAPI_JSON);

    let documented = documented();
    let paths: BTreeSet<&String> = documented.iter().map(|(p, _)| p).collect();
    for path in paths {
        let url = format!("{}{}", gw.url(), path.replace("{id}", "x.y"));
        for method in METHODS {
            let answer = client
                .request(method.to_uppercase().parse().unwrap(), &url)
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if documented.contains(&(path.clone(), method.to_string())) {
                assert!(
                    ![404, 405].contains(&answer),
                    "{method} {path} is documented, but the gateway answers {answer}"
                );
            } else {
                assert_eq!(answer, 405, "{method} {path} is not documented");
            }
        }
    }
}

/// schemathesis against a live gateway, one run per caller role (a device platform's token
/// for the readings, a care organisation's for the state changes, none for operations),
/// each bounded in examples and time. Its output goes to a log file, removed on success
/// and shown (its tail) on failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_schemathesis_finds_no_500_no_bare_503_and_no_answer_off_the_document() {
    let schemathesis = std::env::var_os("DHO_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("DHO_SCHEMATHESIS is not set: `./dev test` installs schemathesis; run the tests through it")
        });
    assert!(
        schemathesis.exists(),
        "schemathesis is missing at {} (DHO_SCHEMATHESIS): `./dev test` installs it",
        schemathesis.display()
    );
    let stack = Stack::start().await;
    let gw = start_gateway(gateway_config(&stack.settings)).await;
    let logs = tempfile::Builder::new()
        .prefix("dho-schemathesis-")
        .tempdir()
        .unwrap();
    for (tag, token) in [
        ("readings", Some(PLATFORM_TOKEN)),
        ("state", Some(HOME_TOKEN)),
        ("operations", None),
    ] {
        let log = logs.path().join(format!("{tag}.log"));
        let mut command = tokio::process::Command::new(&schemathesis);
        command
            .arg("run")
            .arg(format!("{}/openapi.json", gw.url()))
            .args(["--include-tag", tag])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_headers_conformance,response_schema_conformance",
            ])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", "25", "--max-time", "60", "--seed", "19"])
            .args(["--workers", "1", "--request-timeout", "30"])
            .arg("--no-color")
            .args(["--generation-database", "none"])
            .current_dir(logs.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(logs.path().join(format!("{tag}.err"))).unwrap())
            .kill_on_drop(true);
        if let Some(token) = token {
            command.args(["--header", &format!("Authorization: Bearer {token}")]);
        }
        let status = tokio::time::timeout(Duration::from_secs(300), command.status())
            .await
            .unwrap_or_else(|_| panic!("schemathesis ({tag}) ran over 300 s"))
            .unwrap();
        if !status.success() {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            let errors =
                std::fs::read_to_string(logs.path().join(format!("{tag}.err"))).unwrap_or_default();
            let tail: Vec<&str> = output.lines().rev().take(120).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "schemathesis ({tag}) found the gateway off its document ({status}):\n{}\n{errors}",
                tail.join("\n")
            );
        }
    }
}
