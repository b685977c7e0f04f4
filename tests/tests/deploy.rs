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
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dho_gateway::{Credentials, GatewayConfig, fhir_consent, hash_token};
use dho_kafka::{KafkaSettings, hub_topics};
use dho_router::RouterConfig;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::ingest::{HOME, HOME_TOKEN, Http, PLATFORM_TOKEN, gateway_config, spawn_ingest};
use dho_tests::sdk::example_args;
use dho_tests::{Stack, read_topic_sizes, wait_for};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_norway::Value as Yaml;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const COMPOSE: &str = "docker-compose.yml";
const DASHBOARD: &str = "deploy/grafana/dashboards/dho-hub.json";
const PROMETHEUS: &str = "deploy/prometheus/prometheus.yml";
const TOPICS: &str = "deploy/kafka/topics.txt";

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
// Reading the files

fn repo() -> PathBuf {
    dho_tests::crate_dir().parent().unwrap().to_path_buf()
}

fn read(rel: impl AsRef<Path>) -> String {
    let path = repo().join(rel.as_ref());
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(rel: &str) -> Yaml {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} does not parse: {e}"))
}

/// A scalar as compose reads it (numbers and booleans become their text).
fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A list of scalars; a plain string is split on whitespace (compose's short `command`).
fn strings(v: Option<&Yaml>) -> Vec<String> {
    match v {
        None | Some(Yaml::Null) => vec![],
        Some(Yaml::Sequence(items)) => items.iter().map(scalar).collect(),
        Some(Yaml::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(other) => panic!("expected a list, got {other:?}"),
    }
}

struct Compose {
    root: Yaml,
    services: BTreeMap<String, Yaml>,
}

fn compose() -> Compose {
    let root = yaml(COMPOSE);
    let services = root
        .get("services")
        .and_then(Yaml::as_mapping)
        .expect("docker-compose.yml has services")
        .iter()
        .map(|(k, v)| (scalar(k), v.clone()))
        .collect();
    Compose { root, services }
}

impl Compose {
    fn service(&self, name: &str) -> &Yaml {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
    }

    /// The services built from this repository, with the program each runs.
    fn hub_services(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .filter_map(|(name, s)| build_of(s).map(|b| (name.clone(), b.program(name))))
            .collect()
    }

    /// Services `name` depends on directly, with their condition.
    fn depends_on(&self, name: &str) -> BTreeMap<String, String> {
        match self.service(name).get("depends_on") {
            None => BTreeMap::new(),
            Some(Yaml::Sequence(list)) => list
                .iter()
                .map(|s| (scalar(s), "service_started".to_string()))
                .collect(),
            Some(Yaml::Mapping(map)) => map
                .iter()
                .map(|(k, v)| {
                    let condition = v
                        .get("condition")
                        .map(scalar)
                        .unwrap_or_else(|| "service_started".into());
                    (scalar(k), condition)
                })
                .collect(),
            Some(other) => panic!("{name}: depends_on is {other:?}"),
        }
    }

    /// Every service `name` waits for, directly or through others.
    fn waits_for(&self, name: &str) -> BTreeMap<String, String> {
        let mut seen = BTreeMap::new();
        let mut todo = vec![name.to_string()];
        while let Some(next) = todo.pop() {
            for (dep, condition) in self.depends_on(&next) {
                if seen.insert(dep.clone(), condition).is_none() {
                    todo.push(dep);
                }
            }
        }
        seen
    }
}

fn env_of(service: &Yaml) -> BTreeMap<String, String> {
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(Yaml::Mapping(map)) => map.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Some(Yaml::Sequence(list)) => list
            .iter()
            .map(|item| {
                let item = scalar(item);
                let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Some(other) => panic!("environment is {other:?}"),
    }
}

/// Bind mounts as (host path relative to the repository, container path).
fn bind_mounts(service: &Yaml) -> Vec<(String, String)> {
    strings(service.get("volumes"))
        .into_iter()
        .filter(|v| v.starts_with("./") || v.starts_with('/'))
        .map(|v| {
            let mut parts = v.split(':');
            let host = parts.next().unwrap().trim_start_matches("./").to_string();
            let container = parts.next().expect("host:container").to_string();
            (host, container)
        })
        .collect()
}

/// The host file or folder mounted at `container_path` (or inside a mounted folder).
fn host_path(service: &Yaml, container_path: &str) -> Option<PathBuf> {
    bind_mounts(service)
        .into_iter()
        .find_map(|(host, container)| {
            let rest = container_path.strip_prefix(container.trim_end_matches('/'))?;
            let host = repo().join(host);
            match rest.strip_prefix('/') {
                _ if rest.is_empty() => Some(host),
                Some(inner) => Some(host.join(inner)),
                None => None,
            }
        })
}

/// Container ports a service publishes (`ports`) or exposes to the others (`expose`).
fn container_ports(service: &Yaml) -> BTreeSet<u16> {
    let published = strings(service.get("ports")).into_iter().map(|p| {
        p.rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches("/tcp")
            .to_string()
    });
    published
        .chain(strings(service.get("expose")))
        .map(|p| p.parse().unwrap_or_else(|_| panic!("port {p}")))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The Dockerfile

struct Build {
    dockerfile: PathBuf,
    target: String,
}

fn build_of(service: &Yaml) -> Option<Build> {
    let build = service.get("build")?;
    let context = build
        .get("context")
        .map(scalar)
        .unwrap_or_else(|| ".".into());
    let dockerfile = build
        .get("dockerfile")
        .map(scalar)
        .unwrap_or_else(|| "Dockerfile".into());
    let target = build
        .get("target")
        .map(scalar)
        .expect("a hub service names its Dockerfile target");
    Some(Build {
        dockerfile: repo().join(context).join(dockerfile),
        target,
    })
}

impl Build {
    fn stages(&self) -> Vec<Stage> {
        let text = std::fs::read_to_string(&self.dockerfile)
            .unwrap_or_else(|e| panic!("{}: {e}", self.dockerfile.display()));
        stages(&text)
    }

    fn stage(&self, service: &str) -> Stage {
        self.stages()
            .into_iter()
            .find(|s| s.name.as_deref() == Some(self.target.as_str()))
            .unwrap_or_else(|| {
                panic!(
                    "{service}: {} has no stage {}",
                    self.dockerfile.display(),
                    self.target
                )
            })
    }

    /// The program the target's image runs (its ENTRYPOINT).
    fn program(&self, service: &str) -> String {
        let stage = self.stage(service);
        let entry = stage
            .instruction("ENTRYPOINT")
            .next()
            .unwrap_or_else(|| panic!("{service}: stage {} has no ENTRYPOINT", self.target));
        let argv: Vec<String> = serde_json::from_str(&entry)
            .unwrap_or_else(|_| panic!("{service}: ENTRYPOINT is not exec form: {entry}"));
        argv[0].rsplit('/').next().unwrap().to_string()
    }
}

#[derive(Debug)]
struct Stage {
    name: Option<String>,
    base: String,
    /// Instructions with continuation lines joined, comments dropped.
    lines: Vec<String>,
}

impl Stage {
    fn instruction<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = String> + 'a {
        self.lines.iter().filter_map(move |l| {
            let (word, rest) = l.split_once(char::is_whitespace)?;
            word.eq_ignore_ascii_case(keyword)
                .then(|| rest.trim().to_string())
        })
    }
}

fn stages(text: &str) -> Vec<Stage> {
    let mut joined = vec![];
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = vec![];
    for line in joined {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[0].eq_ignore_ascii_case("FROM") {
            let name = (words.len() >= 4 && words[2].eq_ignore_ascii_case("AS"))
                .then(|| words[3].to_string());
            stages.push(Stage {
                name,
                base: words[1].to_string(),
                lines: vec![],
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.lines.push(line);
        }
    }
    stages
}

// ---------------------------------------------------------------------------------------
// The workspace's programs

fn cargo() -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    cmd.current_dir(repo());
    cmd
}

/// Every binary and example in the workspace: name -> (package, "bin" | "example").
fn workspace_programs() -> &'static BTreeMap<String, (String, String)> {
    static PROGRAMS: OnceLock<BTreeMap<String, (String, String)>> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        let output = cargo()
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .output()
            .expect("cargo metadata runs");
        assert!(output.status.success(), "cargo metadata failed");
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let mut programs = BTreeMap::new();
        for package in metadata["packages"].as_array().unwrap() {
            for target in package["targets"].as_array().unwrap() {
                for kind in target["kind"].as_array().unwrap() {
                    let kind = kind.as_str().unwrap();
                    if kind == "bin" || kind == "example" {
                        programs.insert(
                            target["name"].as_str().unwrap().to_string(),
                            (
                                package["name"].as_str().unwrap().to_string(),
                                kind.to_string(),
                            ),
                        );
                    }
                }
            }
        }
        programs
    })
}

/// The path of a workspace program or example, built first (with this test's profile, into
/// this test's target directory, as the other broker tests do).
fn built(name: &str) -> PathBuf {
    let (package, kind) = workspace_programs()
        .get(name)
        .unwrap_or_else(|| panic!("no binary or example {name} in the workspace"));
    if kind == "example" {
        assert_eq!(package, "dho-consumer", "examples are the SDK's");
        dho_tests::sdk::example(name)
    } else {
        dho_tests::binary(package, name)
    }
}

/// What a program's command line reads: its flags and their `DHO_*` variables, from its
/// own `--help` (clap prints `[env: NAME=...]`).
#[derive(Debug, Default)]
struct Cli {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

fn cli(program: &str) -> Cli {
    let output = std::process::Command::new(built(program))
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{program} --help: {e}"));
    assert!(output.status.success(), "{program} --help failed");
    let help = String::from_utf8(output.stdout).unwrap();
    let mut cli = Cli::default();
    for (i, _) in help.match_indices("[env: ") {
        let name: String = help[i + 6..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        cli.env.insert(name);
    }
    for word in help.split_whitespace() {
        if let Some(flag) = word.strip_prefix("--") {
            let flag: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            cli.flags.insert(format!("--{flag}"));
        }
    }
    assert!(!cli.flags.is_empty(), "{program} --help lists no flags");
    cli
}

// ---------------------------------------------------------------------------------------
// What a hub service is configured with

/// The config file a service's program reads (`DHO_CONFIG`), on the host.
fn config_file(name: &str, service: &Yaml) -> Option<PathBuf> {
    let path = env_of(service).get("DHO_CONFIG")?.clone();
    let host = host_path(service, &path)
        .unwrap_or_else(|| panic!("{name}: DHO_CONFIG={path} is not mounted from the repo"));
    assert!(host.is_file(), "{name}: {} does not exist", host.display());
    Some(host)
}

fn router_config(path: &Path) -> RouterConfig {
    toml::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn gateway_config_file(path: &Path) -> GatewayConfig {
    toml::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Kafka settings a service ends up with: its config file's `[kafka]`, then the
/// `DHO_*` overrides its environment sets (the order the programs apply them).
fn kafka_of(name: &str, service: &Yaml) -> Option<KafkaSettings> {
    let env = env_of(service);
    let mut settings = match config_file(name, service) {
        Some(path) => {
            let table: toml::Table = toml::from_str(&read(&path)).unwrap();
            table
                .get("kafka")
                .cloned()
                .unwrap_or_else(|| panic!("{name}: {} has no [kafka]", path.display()))
                .try_into::<KafkaSettings>()
                .unwrap_or_else(|e| panic!("{name}: [kafka] in {}: {e}", path.display()))
        }
        None => {
            let bootstrap = env.get("DHO_BOOTSTRAP_SERVERS")?;
            let registry = env.get("DHO_SCHEMA_REGISTRY_URL").unwrap_or_else(|| {
                panic!("{name}: DHO_BOOTSTRAP_SERVERS without DHO_SCHEMA_REGISTRY_URL")
            });
            KafkaSettings::new(bootstrap, registry)
        }
    };
    if let Some(v) = env.get("DHO_BOOTSTRAP_SERVERS") {
        settings.bootstrap_servers = v.clone();
    }
    if let Some(v) = env.get("DHO_SCHEMA_REGISTRY_URL") {
        settings.schema_registry_url = v.clone();
    }
    if let Some(v) = env.get("DHO_TOPIC_PREFIX") {
        settings.topic_prefix = v.clone();
    }
    if let Some(v) = env.get("DHO_PARTITIONS") {
        settings.partitions = v.parse().unwrap();
    }
    settings.validate().unwrap();
    Some(settings)
}

/// Where a service serves `/metrics`: `DHO_METRICS_LISTEN`, else the router's
/// `metrics_listen`, else the gateway's API address (it serves `/metrics` there).
fn metrics_addr(name: &str, service: &Yaml, program: &str) -> Option<SocketAddr> {
    let env = env_of(service);
    if let Some(addr) = env.get("DHO_METRICS_LISTEN") {
        return Some(addr.parse().unwrap());
    }
    match program {
        "dho-router" => router_config(&config_file(name, service)?).metrics_listen,
        "dho-ingest" => Some(match env.get("DHO_LISTEN") {
            Some(addr) => addr.parse().unwrap(),
            None => gateway_config_file(&config_file(name, service)?).listen,
        }),
        _ => None,
    }
}

fn host_port(address: &str) -> (String, u16) {
    let address = address.split("://").last().unwrap().trim_end_matches('/');
    let (host, port) = address
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{address} has no port"));
    (host.to_string(), port.parse().unwrap())
}

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
    assert!(
        enrolling.subscriber_ids.contains(subscriber),
        "{} does not own {subscriber}",
        enrolling.name
    );
}

// ---------------------------------------------------------------------------------------
// The dashboard's queries

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel with queries, rows' children included; a panel without any fails.
fn panels(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    fn walk(list: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        for panel in list.as_array().into_iter().flatten() {
            if panel["type"] == "row" {
                walk(&panel["panels"], out);
                continue;
            }
            let targets = panel["targets"].as_array();
            assert!(
                targets.is_some_and(|t| !t.is_empty()
                    && t.iter()
                        .all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty()))),
                "panel {} has a target without a PromQL expr",
                panel["title"]
            );
            out.push(panel.clone());
        }
    }
    let mut out = vec![];
    walk(&dashboard["panels"], &mut out);
    assert!(!out.is_empty(), "the dashboard has no panels");
    out
}

/// Every metric name the dashboard's queries select.
fn dashboard_metrics() -> BTreeSet<String> {
    panels(&dashboard())
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|t| promql_metrics(t["expr"].as_str().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The metric names a PromQL expression selects: identifiers that are not functions or
/// aggregations (followed by `(` or `by`/`without`), not keywords, and not inside label
/// matchers `{...}`, ranges `[...]`, label lists `by (...)`, strings or Grafana `$vars`.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["bool", "and", "or", "unless", "offset", "inf", "nan"];
    let chars: Vec<char> = expr.chars().collect();
    let skip_to = |mut i: usize, close: char| -> usize {
        while i < chars.len() && chars[i] != close {
            if chars[i] == '"' || chars[i] == '\'' {
                let quote = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    let next_word = |mut i: usize| -> (Option<char>, String) {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let word = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect();
        (chars.get(i).copied(), word)
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_to(i + 1, c);
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A Grafana variable, a number or a duration.
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let (next, following) = next_word(i);
            if LABEL_LISTS.contains(&lower.as_str()) {
                // `by (label, ...)`: skip the list.
                while i < chars.len() && chars[i] != '(' {
                    i += 1;
                }
                i = skip_to(i + 1, ')');
            } else if next == Some('(') || following == "by" || following == "without" {
                // A function or an aggregation.
            } else if !KEYWORDS.contains(&lower.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

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

/// One scrape: the series names (`_bucket`, `_sum`, `_count` as written) and each
/// family's `# TYPE`.
#[derive(Debug, Default)]
struct Exposition {
    series: BTreeSet<String>,
    types: BTreeMap<String, String>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                e.types.insert(name.into(), kind.into());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            e.series.insert(name.to_string());
        }
    }
    e
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

async fn scrape(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    response.text().await.map_err(|e| e.to_string())
}

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
            "group_id = \"deploy-router\"\nmetrics_listen = \"{router_metrics}\"\n\n[kafka]\n\
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
    let a = http.post("/fhir/Consent", Some(HOME_TOKEN), &consent).await;
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
                .map(|text| parse_exposition(&text))
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
