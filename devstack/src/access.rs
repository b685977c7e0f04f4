//! Broker access control on the development broker: SCRAM principals and ACLs from the
//! hub's access plan (`deploy/kafka/acls.txt`, the same file the compose stack applies),
//! made through Kafka's own Admin client (`kafka/Access.java`, run from source by the
//! JDK, so nothing beyond the broker's jars is installed).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::broker::{broker_libs, java_binary};
use crate::{Error, Result};

/// The hub's access plan, as the compose stack applies it.
pub const ACL_PLAN: &str = include_str!("../../deploy/kafka/acls.txt");

const ACCESS_TOOL: &str = include_str!("../kafka/Access.java");

/// One ACL entry: `principal` (a SCRAM user name) may do `operation` on the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub principal: String,
    /// As `kafka-acls.sh` spells it: `Read`, `Write`, `DescribeConfigs`, `All`, ...
    pub operation: String,
    /// `topic`, `group`, `transactional-id` or `cluster`.
    pub resource: String,
    /// `literal` or `prefixed`.
    pub pattern: String,
    pub name: String,
}

/// The ACLs of [`ACL_PLAN`] for one topic prefix, its direct-publishing platforms and its
/// subscriber ids: placeholders filled in, a `{platform}` or `{subscriber}` line once for
/// each.
pub fn plan_acls(prefix: &str, platforms: &[&str], subscribers: &[&str]) -> Vec<Acl> {
    let mut acls = Vec::new();
    for line in ACL_PLAN.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.replace("{prefix}", prefix);
        let instances: Vec<String> = if line.contains("{platform}") {
            platforms
                .iter()
                .map(|p| line.replace("{platform}", p))
                .collect()
        } else if line.contains("{subscriber}") {
            subscribers
                .iter()
                .map(|s| line.replace("{subscriber}", s))
                .collect()
        } else {
            vec![line]
        };
        for instance in instances {
            let words: Vec<&str> = instance.split_whitespace().collect();
            let [principal, operation, resource, pattern, name] = words[..] else {
                panic!("acls.txt: a line of five columns: {instance}");
            };
            acls.push(Acl {
                principal: principal.into(),
                operation: operation.into(),
                resource: resource.into(),
                pattern: pattern.into(),
                name: name.into(),
            });
        }
    }
    acls
}

/// Makes SCRAM-SHA-512 principals (`(name, password)`) and ACLs on the broker at
/// `bootstrap` (a listener whose principal is a super user: the development broker's
/// PLAINTEXT one), and returns once the broker enforces them. Passwords go to the tool on
/// its standard input, never on a command line or into an error.
pub fn apply(bootstrap: &str, users: &[(&str, &str)], acls: &[Acl]) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("dho-access-").tempdir()?;
    let tool = dir.path().join("Access.java");
    std::fs::write(&tool, ACCESS_TOOL)?;
    let java = java_binary().ok_or_else(|| Error::NoJava {
        java: "java (JAVA_HOME unset or without bin/java, none on PATH)".into(),
    })?;
    let mut child = Command::new(java)
        .arg("-Xmx128m")
        .arg("-cp")
        .arg(format!("{}/*", broker_libs().display()))
        // The client's own logging: errors only, to the output kept for an error message.
        .arg("-Dlog4j2.level=error")
        .arg(&tool)
        .arg(bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            what: "java (the access tool)".into(),
            source,
        })?;
    let mut plan = String::new();
    for (name, password) in users {
        plan.push_str(&format!("user {name} SCRAM-SHA-512 {password}\n"));
    }
    for a in acls {
        plan.push_str(&format!(
            "allow {} {} {} {} {}\n",
            a.principal, a.operation, a.resource, a.pattern, a.name
        ));
    }
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(plan.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        let mut text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for (_, password) in users {
            text = text.replace(password, "<password>");
        }
        return Err(Error::Access {
            status: output.status.to_string(),
            output: text,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_keeps_state_topics_from_platforms_and_subscribers() {
        let acls = plan_acls("p", &["a"], &["s"]);
        let may = |principal: &str, operation: &str, topic: &str| {
            acls.iter().any(|a| {
                a.principal == principal
                    && (a.operation == operation || a.operation == "All")
                    && a.resource == "topic"
                    && match a.pattern.as_str() {
                        "literal" => a.name == topic,
                        _ => topic.starts_with(&a.name),
                    }
            })
        };
        for state in ["p.consents", "p.subscriptions", "p.careplans"] {
            assert!(may("dho-gateway", "Write", state), "{state}");
            assert!(may("dho-admin", "Write", state), "{state}");
            assert!(!may("dho-platform-a", "Write", state), "{state}");
            assert!(!may("dho-subscriber-s", "Write", state), "{state}");
        }
        assert!(may("dho-platform-a", "Write", "p.measurements"));
        assert!(may("dho-subscriber-s", "Read", "p.deliver.s"));
        assert!(!may("dho-subscriber-s", "Read", "p.deliver.t"));
        assert!(!may("dho-subscriber-s", "Read", "p.measurements"));
    }
}
