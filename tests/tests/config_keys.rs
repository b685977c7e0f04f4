//! Every config key from every layer: the README's table ("Every key") lists exactly the
//! keys of each service's typed config (its serde fields, read through
//! `dho_kafka::layers::keys`), each with its `DHO_<KEY>` variable and `--set` flag, or as
//! file-only for the reason the code gives; every named flag and variable is one the
//! program's own `--help` lists. And `allow_synthetic_identifiers`, which issue 22 found
//! file-only, is set from the environment and from a flag for each service.

use std::collections::BTreeMap;

use dho_admin::config::AdminConfig;
use dho_gateway::GatewayConfig;
use dho_kafka::layers::{FILE_ONLY, env_name, keys, load, local_base};
use dho_router::RouterConfig;
use dho_tests::deploy::programs::cli;
use dho_tests::deploy::read;

#[derive(Debug)]
struct Row {
    program: String,
    key: String,
    env: String,
    flags: Vec<String>,
}

/// The rows of the README's "Every key" table.
fn readme_rows() -> Vec<Row> {
    let readme = read("README.md");
    let section = readme
        .split("### Every key")
        .nth(1)
        .expect("the README has an 'Every key' section");
    let section = section.split("\n#").next().unwrap();
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().replace('`', ""))
            .collect()
    };
    section
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2) // the header and its rule
        .map(|line| {
            let c = cells(line);
            assert_eq!(c.len(), 4, "a row of four cells: {line}");
            Row {
                program: c[0].clone(),
                key: c[1].clone(),
                env: c[2].clone(),
                flags: c[3].split(", ").map(str::to_string).collect(),
            }
        })
        .collect()
}

fn file_only(key: &str) -> bool {
    FILE_ONLY.iter().any(|(k, _)| *k == key)
}

#[test]
fn config_keys_the_readme_table_lists_every_key_of_every_service_with_its_layers() {
    let rows = readme_rows();
    for (program, mut code) in [
        ("dho-router", keys::<RouterConfig>()),
        ("dho-ingest", keys::<GatewayConfig>()),
        ("dho-admin", keys::<AdminConfig>()),
    ] {
        let listed: Vec<&Row> = rows.iter().filter(|r| r.program == program).collect();
        let mut readme: Vec<String> = listed.iter().map(|r| r.key.clone()).collect();
        readme.sort();
        code.sort();
        assert_eq!(
            readme, code,
            "{program}: the README's keys are not the config's"
        );
        let help = cli(program);
        assert!(help.flags.contains("--set"), "{program} has no --set");
        for row in listed {
            let key = &row.key;
            if file_only(key) {
                assert_eq!(
                    (row.env.as_str(), row.flags.as_slice()),
                    ("file only", &["file only".to_string()][..]),
                    "{program} {key}"
                );
                continue;
            }
            assert_eq!(row.env, env_name(key), "{program} {key}");
            assert!(
                row.flags.contains(&format!("--set {key}=…")),
                "{program} {key}: {:?}",
                row.flags
            );
            for flag in row.flags.iter().filter(|f| !f.starts_with("--set")) {
                assert!(help.flags.contains(flag), "{program} has no {flag}");
            }
        }
    }
    // The registry has no file: its keys are its flags and variables.
    let help = cli("dho-registry");
    let registry: Vec<&Row> = rows
        .iter()
        .filter(|r| r.program == "dho-registry")
        .collect();
    assert!(!registry.is_empty(), "the README lists no registry key");
    for row in &registry {
        assert!(
            help.env.contains(&row.env),
            "dho-registry reads no {}",
            row.env
        );
        assert!(
            help.flags.contains(&row.flags[0]),
            "dho-registry has no {:?}",
            row.flags
        );
    }
    for env in &help.env {
        assert!(
            registry.iter().any(|r| &r.env == env),
            "dho-registry reads {env}, which the README does not list"
        );
    }
    let programs: Vec<&str> = rows.iter().map(|r| r.program.as_str()).collect();
    for program in programs {
        assert!(
            ["dho-router", "dho-ingest", "dho-admin", "dho-registry"].contains(&program),
            "the README lists keys of {program}, which no check covers"
        );
    }
}

#[test]
fn config_keys_allow_synthetic_identifiers_is_set_from_the_environment_and_by_flag() {
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let refuse = env(&[("DHO_ALLOW_SYNTHETIC_IDENTIFIERS", "false")]);
    let permit = env(&[("DHO_ALLOW_SYNTHETIC_IDENTIFIERS", "true")]);
    let none = BTreeMap::new();
    let flag = ["allow_synthetic_identifiers=false".to_string()];
    let router = |env: &BTreeMap<String, String>, sets: &[String]| {
        load::<RouterConfig>(None, local_base(), env, sets).unwrap()
    };
    assert!(
        !router(&none, &[]).allow_synthetic_identifiers,
        "refused unless configured"
    );
    assert!(router(&permit, &[]).allow_synthetic_identifiers);
    assert!(!router(&refuse, &[]).allow_synthetic_identifiers);
    assert!(!router(&none, &flag).allow_synthetic_identifiers);
    let allow = ["allow_synthetic_identifiers=true".to_string()];
    assert!(
        router(&refuse, &allow).allow_synthetic_identifiers,
        "the flag wins over the environment"
    );
    let gateway = load::<GatewayConfig>(None, local_base(), &refuse, &[]).unwrap();
    assert!(!gateway.allow_synthetic_identifiers);
    let admin = load::<AdminConfig>(None, local_base(), &none, &flag).unwrap();
    assert!(!admin.allow_synthetic_identifiers);
    // A duration and a number from the environment, typed by the config.
    let tuned = router(
        &env(&[("DHO_BATCH_WAIT", "0.5"), ("DHO_MAX_BATCH", "50")]),
        &[],
    );
    assert_eq!(tuned.batch_wait.as_millis(), 500);
    assert_eq!(tuned.max_batch, 50);
    let wrong = load::<RouterConfig>(None, local_base(), &env(&[("DHO_MAX_BATCH", "lots")]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains("DHO_MAX_BATCH") && wrong.contains("max_batch"),
        "{wrong}"
    );
}
