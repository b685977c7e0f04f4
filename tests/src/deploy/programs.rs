//! The workspace's programs: which binaries and examples it has (from `cargo metadata`),
//! built for this test, and what each one's command line reads (from its own `--help`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cargo_metadata::{MetadataCommand, TargetKind};

use super::repo;

/// Every binary and example in the workspace: name -> (package, "bin" | "example").
pub fn workspace_programs() -> &'static BTreeMap<String, (String, String)> {
    static PROGRAMS: OnceLock<BTreeMap<String, (String, String)>> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        let mut command = MetadataCommand::new();
        if let Ok(cargo) = std::env::var("CARGO") {
            command.cargo_path(cargo);
        }
        let metadata = command
            .manifest_path(repo().join("Cargo.toml"))
            .no_deps()
            .exec()
            .unwrap_or_else(|e| panic!("cargo metadata failed: {e}"));
        let mut programs = BTreeMap::new();
        for package in &metadata.packages {
            for target in &package.targets {
                for kind in &target.kind {
                    let kind = match kind {
                        TargetKind::Bin => "bin",
                        TargetKind::Example => "example",
                        _ => continue,
                    };
                    programs.insert(
                        target.name.clone(),
                        (package.name.to_string(), kind.to_string()),
                    );
                }
            }
        }
        programs
    })
}

/// The path of a workspace program or example, built first (with this test's profile, into
/// this test's target directory, as the other broker tests do).
pub fn built(name: &str) -> PathBuf {
    let (package, kind) = workspace_programs()
        .get(name)
        .unwrap_or_else(|| panic!("no binary or example {name} in the workspace"));
    if kind == "example" {
        assert_eq!(package, "dho-consumer", "examples are the SDK's");
        crate::sdk::example(name)
    } else {
        crate::binary(package, name)
    }
}

/// What a program's command line reads: its flags and their `DHO_*` variables, from its
/// own `--help` (clap prints `[env: NAME=...]`).
#[derive(Debug, Default)]
pub struct Cli {
    pub flags: BTreeSet<String>,
    pub env: BTreeSet<String>,
}

pub fn cli(program: &str) -> Cli {
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

/// A loopback address no one listens on now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The last 15 lines of a program's log, for a failure message.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
