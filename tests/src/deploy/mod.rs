//! What `tests/deploy.rs` reads to check the production-like stack without Docker: the
//! compose file ([`compose`]), the Dockerfile ([`dockerfile`]), the workspace's programs and
//! their command lines ([`programs`]), the services' configs ([`services`]) and the Grafana
//! dashboard's PromQL against a Prometheus scrape ([`dashboard`]). Every reader panics with
//! the file and the reason when a file does not say what the stack needs, so a test reads as
//! its checks.

pub mod compose;
pub mod dashboard;
pub mod dockerfile;
pub mod programs;
pub mod services;

use std::path::{Path, PathBuf};

pub const COMPOSE: &str = "docker-compose.yml";
pub const DASHBOARD: &str = "deploy/grafana/dashboards/dho-hub.json";
pub const PROMETHEUS: &str = "deploy/prometheus/prometheus.yml";
pub const TOPICS: &str = "deploy/kafka/topics.txt";

/// The repository's root.
pub fn repo() -> PathBuf {
    crate::crate_dir().parent().unwrap().to_path_buf()
}

/// `conformance/run` (the HAPI validator) over `args`; its stdout. A validator that fails
/// or cannot run fails the test (java 17+ and mvn are required, never skipped).
pub fn run_conformance(args: &[PathBuf]) -> String {
    let run = std::process::Command::new(repo().join("conformance/run"))
        .args(args)
        .output()
        .expect("conformance/run could not start (needs bash)");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the FHIR validator failed (java 17+ and mvn are required, never skipped):\n{stdout}\n{stderr}"
    );
    stdout
}

/// A file of the repository (or any path, if absolute) as text.
pub fn read(rel: impl AsRef<Path>) -> String {
    let path = repo().join(rel.as_ref());
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The host and port of an address as compose, Kafka's listeners, Prometheus and URLs write
/// it: `host:port`, `scheme://host:port` or `LISTENER://host:port/`. (A URL parser refuses
/// the scheme-less forms, and `host:port` parses as a scheme; all that is needed here is the
/// two parts.)
pub fn host_port(address: &str) -> (String, u16) {
    let address = address.split("://").last().unwrap().trim_end_matches('/');
    let (host, port) = address
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{address} has no port"));
    (host.to_string(), port.parse().unwrap())
}
