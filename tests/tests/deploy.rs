//! The production-like stack (`docker-compose.yml`, `deploy/`) checked without Docker,
//! which the development machines and CI do not have. Statically: every file parses, every
//! image is pinned or built from a Dockerfile target that builds a program of this
//! workspace, every `DHO_*` variable and flag given to a program is one it reads (from its
//! own `--help`, so a renamed variable fails here), addresses and ports agree between the
//! compose file, the services' configs, Prometheus and Grafana, start order waits on
//! healthchecks, and the topics job creates exactly `hub_topics`. Then the dashboard: every
//! metric its queries name must be exported by one of the real programs (router, gateway,
//! a care service on the SDK) after traffic that touches every panel.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dho_gateway::{Credentials, fhir_consent, hash_token};
use dho_kafka::hub_topics;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::deploy::compose::{
    Yaml, bind_mounts, build_of, compose, container_ports, env_of, host_path, scalar, strings, yaml,
};
use dho_tests::deploy::dashboard::{dashboard, dashboard_metrics, panels, promql_metrics, scrape};
use dho_tests::deploy::programs::{built, cli, free_addr, tail, workspace_programs};
use dho_tests::deploy::services::{
    config_file, gateway_config_file, kafka_of, metrics_addr, router_config,
};
use dho_tests::deploy::{DASHBOARD, PROMETHEUS, TOPICS, host_port, read, repo};
use dho_tests::ingest::{
    HOME, HOME_TOKEN, Http, PLATFORM_TOKEN, PORTAL_TOKEN, gateway_config, spawn_ingest,
};
use dho_tests::sdk::example_args;
use dho_tests::{Stack, read_topic_sizes, wait_for};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What the issue asks the dashboard to show, as the series that carry it. The dashboard
/// may query more; it may not query less.
const REQUIRED_ON_DASHBOARD: &[&str] = &[
    "dho_ingest_entries_total",                       // ingest rate by outcome
    "dho_router_deliveries_total",                    // deliveries per category
    "dho_router_withheld_total",                      // withheld by reason
    "dho_router_deadletters_total",                   // dead letters by reason
    "dho_router_alerts_raised_total",                 // alerts by zone
    "dho_router_consumer_lag_records",                // the router's lag
    "dho_consumer_lag_records",                       // subscribers' lag
    "dho_consumer_end_to_end_latency_seconds_bucket", // end-to-end p50/p99
    "dho_router_owned_partitions",                    // router instances
];

// ---------------------------------------------------------------------------------------
// Static checks

#[test]
fn deploy_every_service_has_a_pinned_image_or_a_dockerfile_target_building_a_workspace_program() {
    let compose = compose();
    let programs = workspace_programs();
    assert!(
        !compose.hub_services().is_empty(),
        "no service is built here"
    );
    for (name, service) in &compose.services {
        let Some(build) = build_of(service) else {
            let image = service
                .get("image")
                .map(scalar)
                .unwrap_or_else(|| panic!("{name} has neither image nor build"));
            let tag = image.rsplit('/').next().unwrap().split_once(':');
            assert!(
                tag.is_some_and(|(_, tag)| tag != "latest"),
                "{name}: image {image} is not pinned to a version"
            );
            continue;
        };
        assert!(
            build.dockerfile.is_file(),
            "{name}: {} does not exist",
            build.dockerfile.display()
        );
        let ignore = build.dockerfile.with_file_name(format!(
            "{}.dockerignore",
            build.dockerfile.file_name().unwrap().to_str().unwrap()
        ));
        assert!(
            read(&ignore).lines().any(|l| l.trim() == "target"),
            "{}: the build context must leave target/ out",
            ignore.display()
        );
        let stages = build.stages();
        let stage = build.stage(name);
        let program = build.program(name);
        assert!(
            programs.contains_key(&program),
            "{name}: target {} runs {program}, which no [[bin]], src/bin or example of the workspace builds",
            build.target
        );
        // The program is copied in from the build stage, which compiles it by name.
        let copied = stage.instruction("COPY").any(|c| {
            c.starts_with("--from=") && c.split_whitespace().any(|w| w.ends_with(&program))
        });
        assert!(
            copied,
            "{name}: stage {} does not copy {program} in",
            build.target
        );
        let compiled: BTreeSet<String> = stages
            .iter()
            .flat_map(|s| s.instruction("RUN").collect::<Vec<_>>())
            .flat_map(|run| {
                let words: Vec<String> = run.split_whitespace().map(str::to_string).collect();
                words
                    .windows(2)
                    .filter(|w| w[0] == "--bin" || w[0] == "--example")
                    .map(|w| w[1].clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            compiled.contains(&program),
            "{name}: no RUN cargo build --bin/--example {program} in {}",
            build.dockerfile.display()
        );
        for program in &compiled {
            assert!(
                programs.contains_key(program),
                "the Dockerfile builds {program}, which the workspace does not have"
            );
        }
        // A small runtime, not the Rust toolchain, and not root: follow the stage's
        // ancestry to its base image; the last USER on the way is the one that counts.
        let mut chain = vec![&stage];
        while let Some(parent) = stages
            .iter()
            .find(|s| s.name.as_deref() == Some(chain.last().unwrap().base.as_str()))
        {
            chain.push(parent);
        }
        let base = &chain.last().unwrap().base;
        assert!(
            base.contains("debian") && base.contains("slim"),
            "{name}: the image is based on {base}, not debian-slim"
        );
        let user = chain.iter().find_map(|s| s.instruction("USER").last());
        assert!(
            user.as_deref().is_some_and(|u| u != "root" && u != "0"),
            "{name}: the image runs as root ({user:?})"
        );
    }
}

#[test]
fn deploy_every_dho_variable_and_flag_given_to_a_program_is_one_it_reads() {
    let compose = compose();
    for (name, service) in &compose.services {
        let env = env_of(service);
        let Some(build) = build_of(service) else {
            let ours: Vec<_> = env.keys().filter(|k| k.starts_with("DHO_")).collect();
            assert!(
                ours.is_empty(),
                "{name} is not a hub program but is given {ours:?}"
            );
            continue;
        };
        let program = build.program(name);
        let cli = cli(&program);
        let stage_env = build
            .stage(name)
            .instruction("ENV")
            .flat_map(|e| {
                e.split_whitespace()
                    .map(|kv| kv.split('=').next().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        for var in env
            .keys()
            .chain(&stage_env)
            .filter(|k| k.starts_with("DHO_"))
        {
            assert!(
                cli.env.contains(var),
                "{name}: {var} is set, but {program} reads only {:?}",
                cli.env
            );
        }
        for word in strings(service.get("command")) {
            if let Some(flag) = word.strip_prefix("--") {
                let flag = format!("--{}", flag.split('=').next().unwrap());
                assert!(
                    cli.flags.contains(&flag),
                    "{name}: {program} has no flag {flag} ({:?})",
                    cli.flags
                );
            }
        }
        // The config file is the program's own kind, with no unknown key.
        if let Some(path) = config_file(name, service) {
            match program.as_str() {
                "dho-router" => {
                    router_config(&path);
                }
                "dho-ingest" => {
                    let config = gateway_config_file(&path);
                    Credentials::from_config(&config)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                // Only [kafka] matters to the others (kafka_of reads it).
                _ => {
                    kafka_of(name, service);
                }
            }
        }
    }
}

#[test]
fn deploy_services_reach_kafka_and_the_registry_where_compose_serves_them() {
    let compose = compose();
    let kafka_env = env_of(compose.service("kafka"));
    let advertised: BTreeSet<(String, u16)> = kafka_env["KAFKA_ADVERTISED_LISTENERS"]
        .split(',')
        .map(host_port)
        .collect();
    let registry_port =
        host_port(&env_of(compose.service("schema-registry"))["SCHEMA_REGISTRY_LISTENERS"]).1;
    let mut layouts = BTreeMap::new();
    for (name, program) in compose.hub_services() {
        let service = compose.service(&name);
        let Some(settings) = kafka_of(&name, service) else {
            continue;
        };
        for server in settings.bootstrap_servers.split(',') {
            let (host, port) = host_port(server);
            assert!(
                compose.services.contains_key(&host) && advertised.contains(&(host, port)),
                "{name}: bootstrap server {server} is not one kafka advertises to the other \
                 containers ({advertised:?})"
            );
        }
        assert_eq!(
            host_port(&settings.schema_registry_url),
            ("schema-registry".to_string(), registry_port),
            "{name}: the schema registry URL"
        );
        let waits = compose.waits_for(&name);
        for (dependency, condition) in [
            ("kafka", "service_healthy"),
            ("schema-registry", "service_healthy"),
            ("topics", "service_completed_successfully"),
        ] {
            assert_eq!(
                waits.get(dependency).map(String::as_str),
                Some(condition),
                "{name} ({program}) must start after {dependency} is {condition}"
            );
        }
        layouts.insert(name, (settings.topic_prefix, settings.partitions));
    }
    let distinct: BTreeSet<_> = layouts.values().collect();
    assert_eq!(
        distinct.len(),
        1,
        "every service must use one topic prefix and partition count (co-partitioning): {layouts:?}"
    );
}

#[test]
fn deploy_prometheus_scrapes_every_service_where_it_serves_metrics() {
    let compose = compose();
    let prometheus = yaml(PROMETHEUS);
    let mut scraped: BTreeMap<String, u16> = BTreeMap::new();
    for job in prometheus["scrape_configs"].as_sequence().unwrap() {
        let job_name = scalar(&job["job_name"]);
        if let Some(path) = job.get("metrics_path") {
            assert_eq!(scalar(path), "/metrics", "{job_name}");
        }
        for config in job
            .get("static_configs")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
        {
            for target in strings(config.get("targets")) {
                let (host, port) = host_port(&target);
                scraped.insert(host, port);
            }
        }
        for config in job
            .get("dns_sd_configs")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
        {
            let port: u16 = scalar(&config["port"]).parse().unwrap();
            for host in strings(config.get("names")) {
                scraped.insert(host, port);
            }
        }
    }
    let mut serving = BTreeMap::new();
    for (name, program) in compose.hub_services() {
        let service = compose.service(&name);
        let Some(addr) = metrics_addr(&name, service, &program) else {
            continue;
        };
        assert!(
            addr.ip().is_unspecified(),
            "{name}: metrics on {addr} cannot be reached from the prometheus container"
        );
        assert!(
            container_ports(service).contains(&addr.port()),
            "{name}: metrics port {} is neither exposed nor published",
            addr.port()
        );
        // The healthcheck probes the same port.
        let health = strings(service.get("healthcheck").and_then(|h| h.get("test"))).join(" ");
        assert!(
            health.contains(&format!("/{}", addr.port())),
            "{name}: the healthcheck does not probe port {}: {health}",
            addr.port()
        );
        serving.insert(name, addr.port());
    }
    assert!(serving.contains_key("router") && serving.contains_key("ingest"));
    for (host, port) in &scraped {
        assert!(
            compose.services.contains_key(host),
            "prometheus scrapes {host}, which is no compose service"
        );
        assert_eq!(
            serving.get(host),
            Some(port),
            "prometheus scrapes {host}:{port}, but {host} serves metrics on {:?}",
            serving.get(host)
        );
    }
    for (name, port) in &serving {
        assert_eq!(
            scraped.get(name),
            Some(port),
            "{name} serves metrics on {port} but prometheus does not scrape it"
        );
    }
    // Prometheus reads the file the repository has.
    let service = compose.service("prometheus");
    let config = strings(service.get("command"))
        .iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_string))
        .expect("prometheus is given --config.file");
    assert_eq!(host_path(service, &config), Some(repo().join(PROMETHEUS)));
}

/// The alert rules Prometheus loads: each file named in `rule_files` is mounted into its
/// container, every rule is PromQL naming only metrics the services export (telemetry's
/// names), and one alerts on the rate of dead letters.
#[test]
fn deploy_prometheus_alerts_on_the_dead_letter_rate_from_rule_files_it_loads() {
    let compose = compose();
    let service = compose.service("prometheus");
    let files = strings(yaml(PROMETHEUS).get("rule_files"));
    assert!(!files.is_empty(), "{PROMETHEUS} loads no rule file");
    let exported: BTreeSet<&str> = dho_telemetry::names::all().map(|m| m.name).collect();
    let mut dead_letter_rate = false;
    for file in files {
        let host = host_path(service, &file)
            .unwrap_or_else(|| panic!("rule file {file} is not mounted into prometheus"));
        let rules = yaml(&host);
        let groups = rules["groups"].as_sequence().expect("rule groups");
        for rule in groups
            .iter()
            .flat_map(|g| g["rules"].as_sequence().unwrap())
        {
            let name = scalar(&rule["alert"]);
            let expr = scalar(&rule["expr"]);
            for metric in promql_metrics(&expr) {
                assert!(
                    exported.contains(metric.as_str()),
                    "alert {name} queries {metric}, which no service exports"
                );
            }
            assert!(
                ["warning", "critical"].contains(&scalar(&rule["labels"]["severity"]).as_str()),
                "alert {name} has no severity"
            );
            assert!(
                !scalar(&rule["annotations"]["summary"]).is_empty(),
                "{name}"
            );
            let ast = promql_parser::parser::parse(&expr).unwrap();
            dead_letter_rate |= promql_metrics(&expr)
                .contains(dho_telemetry::names::router::DEADLETTERS)
                && format!("{ast:?}").contains("\"rate\"");
        }
    }
    assert!(
        dead_letter_rate,
        "no alert on the rate of dho_router_deadletters_total"
    );
}

#[test]
fn deploy_grafana_provisions_the_prometheus_datasource_and_the_dashboard() {
    let compose = compose();
    let grafana = compose.service("grafana");
    let provisioning = host_path(grafana, "/etc/grafana/provisioning")
        .expect("grafana's provisioning folder is mounted from the repo");
    let yamls = |folder: &str| -> Vec<Yaml> {
        let dir = provisioning.join(folder);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "nothing in {}", dir.display());
        files
            .iter()
            .map(|f| {
                serde_norway::from_str(&read(f)).unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            })
            .collect()
    };

    let datasources: Vec<Yaml> = yamls("datasources")
        .iter()
        .flat_map(|f| f["datasources"].as_sequence().unwrap().clone())
        .collect();
    let prometheus = datasources
        .iter()
        .find(|d| scalar(&d["type"]) == "prometheus")
        .expect("a prometheus datasource");
    let uid = scalar(&prometheus["uid"]);
    let (host, port) = host_port(&scalar(&prometheus["url"]));
    assert_eq!(host, "prometheus");
    assert!(container_ports(compose.service("prometheus")).contains(&port));

    let mut dashboards = BTreeSet::new();
    for file in yamls("dashboards") {
        for provider in file["providers"].as_sequence().unwrap() {
            let path = scalar(&provider["options"]["path"]);
            let dir = host_path(grafana, &path)
                .unwrap_or_else(|| panic!("the dashboard provider's {path} is not mounted"));
            for entry in std::fs::read_dir(&dir).unwrap() {
                dashboards.insert(entry.unwrap().path());
            }
        }
    }
    assert!(
        dashboards.contains(&repo().join(DASHBOARD)),
        "grafana does not load {DASHBOARD}; it loads {dashboards:?}"
    );
    let home = &env_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"];
    assert_eq!(host_path(grafana, home), Some(repo().join(DASHBOARD)));
    assert!(
        compose.waits_for("grafana").contains_key("prometheus"),
        "grafana starts after prometheus"
    );

    // Every panel queries the provisioned datasource; the panels are there.
    let dashboard = dashboard();
    let mut queried = BTreeSet::new();
    for panel in panels(&dashboard) {
        assert_eq!(
            panel["datasource"]["uid"], uid,
            "panel {} uses another datasource",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], uid, "{}", panel["title"]);
            queried.extend(promql_metrics(target["expr"].as_str().unwrap()));
        }
    }
    for required in REQUIRED_ON_DASHBOARD {
        assert!(
            queried.contains(*required),
            "the dashboard shows nothing from {required}"
        );
    }
}

#[test]
fn deploy_topics_job_creates_exactly_the_hub_topics() {
    let compose = compose();
    let job = compose.service("topics");
    let entrypoint = strings(job.get("entrypoint"));
    let script = entrypoint
        .iter()
        .find_map(|a| host_path(job, a).filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("the topics job runs no script of the repo: {entrypoint:?}"));
    let topics_file = env_of(job).get("TOPICS").cloned().unwrap_or_else(|| {
        read(&script)
            .lines()
            .find_map(|l| l.strip_prefix("TOPICS=\"${TOPICS:-"))
            .and_then(|l| l.strip_suffix("}\""))
            .expect("the script names its topics file")
            .to_string()
    });
    assert_eq!(
        host_path(job, &topics_file),
        Some(repo().join(TOPICS)),
        "the topics job reads {topics_file}"
    );
    assert_eq!(
        compose
            .depends_on("topics")
            .get("kafka")
            .map(String::as_str),
        Some("service_healthy")
    );

    // What the file creates: name -> (partitions, compacted, retention).
    let mut created = BTreeMap::new();
    for line in read(TOPICS).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.len(), 4, "{TOPICS}: {line}");
        let compact = match words[2] {
            "compact" => true,
            "delete" => false,
            other => panic!("{TOPICS}: cleanup.policy {other}"),
        };
        let retention = (words[3] != "-").then(|| words[3].parse::<i64>().unwrap());
        let previous = created.insert(
            words[0].to_string(),
            (words[1].parse::<i32>().unwrap(), compact, retention),
        );
        assert!(previous.is_none(), "{TOPICS}: {} twice", words[0]);
    }

    // What the services would create: hub_topics for the compose stack's layout.
    let settings = kafka_of("router", compose.service("router")).unwrap();
    let expected: BTreeMap<String, (i32, bool, Option<i64>)> = hub_topics(&settings)
        .into_iter()
        .map(|t| (t.name, (t.partitions, t.compact, t.retention_ms)))
        .collect();
    assert_eq!(
        created, expected,
        "{TOPICS} (left) must match hub_topics (right): name -> (partitions, compacted, retention.ms)"
    );
}

#[test]
fn deploy_start_order_waits_on_healthchecks_and_mounts_exist() {
    let compose = compose();
    let declared: BTreeSet<String> = compose
        .root
        .get("volumes")
        .and_then(Yaml::as_mapping)
        .map(|m| m.keys().map(scalar).collect())
        .unwrap_or_default();
    for (name, service) in &compose.services {
        for (dependency, condition) in compose.depends_on(name) {
            let dep = compose
                .services
                .get(&dependency)
                .unwrap_or_else(|| panic!("{name} depends on unknown {dependency}"));
            match condition.as_str() {
                "service_healthy" => assert!(
                    dep.get("healthcheck").is_some(),
                    "{name} waits for {dependency} to be healthy, which has no healthcheck"
                ),
                "service_completed_successfully" => assert_eq!(
                    dep.get("restart").map(scalar).as_deref(),
                    Some("no"),
                    "{dependency} is a one-shot job"
                ),
                "service_started" => {}
                other => panic!("{name}: condition {other}"),
            }
        }
        for (host, container) in bind_mounts(service) {
            assert!(
                repo().join(&host).exists(),
                "{name}: mounts {host} (at {container}), which does not exist"
            );
        }
        for volume in strings(service.get("volumes")) {
            let source = volume.split(':').next().unwrap();
            if !source.starts_with('.') && !source.starts_with('/') {
                assert!(
                    declared.contains(source),
                    "{name}: volume {source} is not declared"
                );
            }
        }
    }
    // The simulator publishes through the gateway as the platform whose token it holds.
    let simulator = env_of(compose.service("simulator"));
    let ingest = compose.service("ingest");
    let gateway = gateway_config_file(&config_file("ingest", ingest).unwrap());
    assert_eq!(
        host_port(&simulator["DHO_GATEWAY_URL"]),
        ("ingest".to_string(), gateway.listen.port())
    );
    let token = hash_token(&simulator["DHO_GATEWAY_TOKEN"]);
    let platform = gateway
        .platforms
        .iter()
        .find(|p| p.token_sha256 == token)
        .expect("the simulator's token is one of the gateway's platforms");
    assert_eq!(
        platform.orgnr,
        fixtures::platform().value,
        "the simulated readings name this organisation as data controller"
    );
    assert!(
        compose
            .waits_for("simulator")
            .get("ingest")
            .map(String::as_str)
            == Some("service_healthy")
    );
    // The care service in the stack is one the gateway lets manage its subscriptions.
    let subscriber = &env_of(compose.service("home-care"))["DHO_SUBSCRIBER_ID"];
    assert!(
        gateway
            .care_organisations
            .iter()
            .any(|c| c.subscriber_ids.contains(subscriber)),
        "no care organisation in the gateway owns {subscriber}"
    );
    // The simulator enrols its fleet for that care service, as the care organisation whose
    // token it holds: the gateway takes consents, subscriptions and care plans only from
    // the organisation itself, for its own subscriber ids.
    let enrol_token = hash_token(&simulator["DHO_ENROL_TOKEN"]);
    let enrolling = gateway
        .care_organisations
        .iter()
        .find(|c| c.token_sha256 == enrol_token)
        .expect("the simulator's enrol token is one of the gateway's care organisations");
    assert_eq!(
        simulator["DHO_ENROL_ORGNR"], enrolling.orgnr,
        "the enrolling organisation is the token's"
    );
    assert_eq!(&simulator["DHO_ENROL_SUBSCRIBER"], subscriber);
    // The fleet's consents are the patients' own: recorded through the patient channel,
    // since the organisation may not grant itself access.
    let consent_token = hash_token(&simulator["DHO_CONSENT_TOKEN"]);
    assert!(
        gateway
            .patient_channels
            .iter()
            .any(|c| c.token_sha256 == consent_token),
        "the simulator's consent token is none of the gateway's patient channels"
    );
    assert!(
        enrolling.subscriber_ids.contains(subscriber),
        "{} does not own {subscriber}",
        enrolling.name
    );
}

// ---------------------------------------------------------------------------------------
// The dashboard's queries

#[test]
fn deploy_promql_names_are_found_in_every_kind_of_expression() {
    let names = |e: &str| promql_metrics(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            "sum by (outcome) (rate(dho_ingest_entries_total{outcome!=\"x{y}\"}[$__rate_interval]))"
        ),
        ["dho_ingest_entries_total"]
    );
    assert_eq!(
        names("histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket[5m])))"),
        ["a_seconds_bucket"]
    );
    assert_eq!(
        names("sum(rate(a_total[1m])) without (instance) / ignoring(reason) sum(b_total) > bool 0"),
        ["a_total", "b_total"]
    );
    assert_eq!(names("count(up_gauge) or vector(0)"), ["up_gauge"]);
    assert_eq!(names("max(x offset 5m) and on(job) y"), ["x", "y"]);
}

// ---------------------------------------------------------------------------------------
// The dashboard against the running programs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_dashboard_every_metric_it_queries_is_exported_by_a_running_service() {
    let wanted = dashboard_metrics();
    let stack = Stack::start().await;
    let settings = &stack.settings;
    let topics = settings.topics();
    let dir = tempfile::tempdir().unwrap();
    let log = |name: &str| dir.path().join(format!("{name}.log"));

    // The router, as its program, serving metrics where Prometheus would scrape it.
    let router_metrics = free_addr();
    let router_toml = dir.path().join("router.toml");
    std::fs::write(
        &router_toml,
        format!(
            "group_id = \"deploy-router\"\nmetrics_listen = \"{router_metrics}\"\n\
             allow_synthetic_identifiers = true\n\n[kafka]\n\
             bootstrap_servers = \"{}\"\nschema_registry_url = \"{}\"\ntopic_prefix = \"{}\"\npartitions = {}\n",
            settings.bootstrap_servers,
            settings.schema_registry_url,
            settings.topic_prefix,
            settings.partitions
        ),
    )
    .unwrap();
    let _router: Child = Command::new(built("dho-router"))
        .arg("--config")
        .arg(&router_toml)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(log("router")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("dho-router starts");

    // The gateway, as its program; /metrics is on its API address.
    let (_ingest, ingest_url) =
        spawn_ingest(&gateway_config(settings), dir.path(), &log("ingest")).await;

    // A care service on the SDK: the home-care journal example with its metrics exporter.
    let journal_metrics = free_addr();
    let mut journal = Command::new(built("home_care_journal"))
        .args(example_args(settings, HOME))
        .arg("--db")
        .arg(dir.path().join("journal.db"))
        .arg("--metrics-listen")
        .arg(journal_metrics.to_string())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log("home-care")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("home_care_journal starts");
    let mut lines = BufReader::new(journal.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("the journal never got ready:\n{}", tail(&log("home-care"))));
    assert_eq!(ready.unwrap().as_deref(), Some("ready"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    // Traffic that touches every panel. Home care subscribes and records consent through
    // the gateway; the patient's care plan goes straight to Kafka.
    let http = Http::new(&ingest_url);
    let patient = fixtures::patient(8101);
    let mut subscription = serde_json::to_value(fixtures::subscription(
        &patient,
        HOME,
        &fixtures::home_care(),
    ))
    .unwrap();
    subscription
        .as_object_mut()
        .unwrap()
        .remove("subscription_id");
    let a = http
        .post("/subscriptions", Some(HOME_TOKEN), &subscription)
        .await;
    assert_eq!(a.status, 201, "{}", a.json);
    let consent = fhir_consent(
        "deploy-1",
        &patient,
        ProvisionKind::Permit,
        true,
        &[fixtures::home_care()],
    );
    let a = http
        .post("/fhir/Consent", Some(PORTAL_TOKEN), &consent)
        .await;
    assert_eq!(a.status, 201, "{}", a.json);
    stack
        .publisher()
        .await
        .put_care_plan(&fixtures::care_plan(&patient))
        .await
        .unwrap();
    // Red (an alert, a patient in red), then green (resolved): two deliveries. A reading
    // for a patient nobody follows is withheld; a malformed one is refused at the gate.
    for (who, value) in [
        (&patient, 85.0),
        (&patient, 96.0),
        (&fixtures::patient(8102), 95.0),
    ] {
        let m = fixtures::spo2(who, value, now_millis() - 10_000);
        let a = http
            .post(
                "/measurements",
                Some(PLATFORM_TOKEN),
                &serde_json::to_value(&m).unwrap(),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.json);
    }
    let a = http
        .post(
            "/measurements",
            Some(PLATFORM_TOKEN),
            &serde_json::json!({"code": "x"}),
        )
        .await;
    assert!((400..500).contains(&a.status), "{} {}", a.status, a.json);
    // Bytes that are not Avro, past the gateway as a misbehaving writer would: a dead letter.
    let producer: FutureProducer = settings.client_config(&[]).unwrap().create().unwrap();
    producer
        .send(
            FutureRecord::to(&topics.measurements())
                .key("deploy-garbage")
                .payload(&b"not avro"[..]),
            Duration::from_secs(10),
        )
        .await
        .expect("the broker takes the record");
    let _: Vec<Delivery> = wait_for(settings, &topics.deliver(HOME), 2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_topic_sizes(settings, &topics.deadletter()) < 1 {
        assert!(
            Instant::now() < deadline,
            "nothing was dead-lettered:\n{}",
            tail(&log("router"))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Scrape every service until each queried metric shows up (statistics gauges come
    // every few seconds), or fail naming what is missing.
    let services = [
        (
            "dho-router",
            format!("http://{router_metrics}/metrics"),
            log("router"),
        ),
        ("dho-ingest", format!("{ingest_url}/metrics"), log("ingest")),
        (
            "home-care (SDK)",
            format!("http://{journal_metrics}/metrics"),
            log("home-care"),
        ),
    ];
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut scraped = vec![];
        for (name, url, _) in &services {
            let exposition = scrape(&client, url)
                .await
                .unwrap_or_else(|e| panic!("scraping {name} at {url}: {e}"));
            scraped.push((*name, exposition));
        }
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|m| !scraped.iter().any(|(_, e)| e.series.contains(*m)))
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let mut report = String::new();
            for m in &missing {
                // Say why, where it can be told: a summary where a histogram is queried.
                let family = m.strip_suffix("_bucket").unwrap_or(m);
                let seen: Vec<String> = scraped
                    .iter()
                    .filter_map(|(name, e)| {
                        e.types
                            .get(family)
                            .map(|t| format!("{name} has it as a {t}"))
                    })
                    .collect();
                report += &format!("\n  {m} {}", seen.join("; "));
            }
            for (name, e) in &scraped {
                report += &format!("\n{name} exports: {:?}", e.series);
            }
            for (name, _, log) in &services {
                report += &format!("\n--- {name} log (tail) ---\n{}", tail(log));
            }
            panic!("the dashboard queries metrics that no running service exports:{report}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The compose healthchecks of these services, run as written against the programs (on
    // the ports this test gave them): they pass once the programs are up and ready.
    let compose = compose();
    let ingest_port = host_port(&ingest_url).1;
    for (name, port) in [
        ("router", router_metrics.port()),
        ("ingest", ingest_port),
        ("home-care", journal_metrics.port()),
    ] {
        let service = compose.service(name);
        let argv = strings(service.get("healthcheck").and_then(|h| h.get("test")));
        assert_eq!(
            argv.first().map(String::as_str),
            Some("CMD"),
            "{name}: {argv:?}"
        );
        let compose_port = metrics_addr(name, service, &build_of(service).unwrap().program(name))
            .unwrap()
            .port();
        let probe = argv.join(" ");
        assert!(
            probe.contains(&format!("/{compose_port} ")),
            "{name}: {probe}"
        );
        let argv: Vec<String> = argv[1..]
            .iter()
            .map(|a| a.replace(&format!("/{compose_port} "), &format!("/{port} ")))
            .collect();
        let output = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .unwrap_or_else(|e| panic!("{name}: healthcheck {argv:?}: {e}"));
        assert!(
            output.status.success(),
            "{name}: the healthcheck {argv:?} fails against the running program: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn deploy_the_compose_stack_runs_the_kafka_release_the_tests_run() {
    let compose = compose();
    let images: Vec<String> = compose
        .services
        .values()
        .filter_map(|s| s.get("image").map(scalar))
        .filter(|image| image.starts_with("apache/kafka:"))
        .collect();
    assert!(!images.is_empty(), "the compose stack runs Apache Kafka");
    for image in images {
        assert_eq!(
            image,
            format!("apache/kafka:{}", dho_devstack::kafka_version()),
            "the compose stack and devstack/kafka/pom.xml pin the same Apache Kafka"
        );
    }
}

/// Every hub service on the broker's SASL listener is a principal of the access plan
/// (`deploy/kafka/acls.txt`) with its password mounted where its config reads it, and the
/// principals job makes those principals before the service starts; the SASL listener is
/// advertised and guarded by the authorizer.
#[test]
fn deploy_services_on_the_sasl_listener_are_principals_of_the_plan_with_their_secrets() {
    let compose = compose();
    let kafka = env_of(compose.service("kafka"));
    assert_eq!(
        kafka["KAFKA_AUTHORIZER_CLASS_NAME"],
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    );
    assert!(kafka["KAFKA_ADVERTISED_LISTENERS"].contains("SASL://kafka:9094"));
    let job = env_of(compose.service("principals"));
    let subscribers: Vec<&str> = job["SUBSCRIBERS"].split_whitespace().collect();
    let platforms: Vec<&str> = job["PLATFORMS"].split_whitespace().collect();
    let plan = dho_devstack::access::plan_acls(&job["PREFIX"], &platforms, &subscribers);
    let principals: BTreeSet<&str> = plan.iter().map(|a| a.principal.as_str()).collect();
    let job_secrets: BTreeSet<String> = strings(compose.service("principals").get("secrets"))
        .into_iter()
        .collect();
    for principal in &principals {
        let secret = format!("{principal}-password");
        assert!(
            job_secrets.contains(&secret),
            "the principals job has no {secret}"
        );
        assert!(
            repo().join("deploy/secrets").join(&secret).is_file(),
            "deploy/secrets/{secret} is missing"
        );
    }
    let mut on_sasl = 0;
    for (name, _) in compose.hub_services() {
        let Some(settings) = kafka_of(&name, compose.service(&name)) else {
            continue;
        };
        let Some(user) = settings.sasl_username.as_deref() else {
            continue;
        };
        on_sasl += 1;
        assert!(
            principals.contains(user),
            "{name} connects as {user}, which the plan does not know"
        );
        assert_eq!(settings.bootstrap_servers, "kafka:9094", "{name}");
        assert_eq!(settings.topic_prefix, job["PREFIX"], "{name}");
        let secret = format!("{user}-password");
        assert!(
            strings(compose.service(&name).get("secrets")).contains(&secret),
            "{name} has no secret {secret}"
        );
        assert_eq!(
            settings.sasl_password_file,
            Some(format!("/run/secrets/{secret}").into()),
            "{name} reads its password elsewhere"
        );
        assert_eq!(
            compose
                .waits_for(&name)
                .get("principals")
                .map(String::as_str),
            Some("service_completed_successfully"),
            "{name} must start after the principals job"
        );
    }
    assert!(
        on_sasl >= 3,
        "the router, the gateway and the admin are principals"
    );
}
