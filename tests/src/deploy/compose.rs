//! `docker-compose.yml` (parsed with `serde_norway`) as compose reads it: services, their
//! environment, mounts, ports, start order and build targets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub use serde_norway::Value as Yaml;

use super::dockerfile::{self, Stage};
use super::{COMPOSE, read, repo};

/// A YAML file of the repository.
pub fn yaml(rel: impl AsRef<std::path::Path>) -> Yaml {
    let rel = rel.as_ref();
    serde_norway::from_str(&read(rel))
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", rel.display()))
}

/// A scalar as compose reads it (numbers and booleans become their text).
pub fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A list of scalars; a plain string is split on whitespace (compose's short `command`).
pub fn strings(v: Option<&Yaml>) -> Vec<String> {
    match v {
        None | Some(Yaml::Null) => vec![],
        Some(Yaml::Sequence(items)) => items.iter().map(scalar).collect(),
        Some(Yaml::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(other) => panic!("expected a list, got {other:?}"),
    }
}

#[derive(Debug)]
pub struct Compose {
    pub root: Yaml,
    pub services: BTreeMap<String, Yaml>,
}

/// The repository's compose file.
pub fn compose() -> Compose {
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
    pub fn service(&self, name: &str) -> &Yaml {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
    }

    /// The services built from this repository, with the program each runs.
    pub fn hub_services(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .filter_map(|(name, s)| build_of(s).map(|b| (name.clone(), b.program(name))))
            .collect()
    }

    /// Services `name` depends on directly, with their condition.
    pub fn depends_on(&self, name: &str) -> BTreeMap<String, String> {
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
    pub fn waits_for(&self, name: &str) -> BTreeMap<String, String> {
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

/// A service's environment, in either of compose's two forms.
pub fn env_of(service: &Yaml) -> BTreeMap<String, String> {
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
pub fn bind_mounts(service: &Yaml) -> Vec<(String, String)> {
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
pub fn host_path(service: &Yaml, container_path: &str) -> Option<PathBuf> {
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
pub fn container_ports(service: &Yaml) -> BTreeSet<u16> {
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

/// A service's `build`: the Dockerfile and the target (stage) its image is.
#[derive(Debug)]
pub struct Build {
    pub dockerfile: PathBuf,
    pub target: String,
}

pub fn build_of(service: &Yaml) -> Option<Build> {
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
    pub fn stages(&self) -> Vec<Stage> {
        dockerfile::stages(&read(&self.dockerfile))
    }

    pub fn stage(&self, service: &str) -> Stage {
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
    pub fn program(&self, service: &str) -> String {
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
