//! The hub's one unsafe module stays the only one: the workspace denies `unsafe_code`, every
//! crate takes the workspace's lints, and only the router's outbox (its batch hand-over to
//! librdkafka, see ARCHITECTURE.md) allows it. A new `allow(unsafe_code)` must be argued
//! for here, not slipped in.

use std::path::{Path, PathBuf};

/// The files allowed to opt out of the workspace's `unsafe_code = "deny"`.
const ALLOWED: &[&str] = &["router/src/outputs/outbox.rs"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn members() -> Vec<String> {
    let workspace = toml(&repo().join("Cargo.toml"));
    workspace["workspace"]["members"]
        .as_array()
        .expect("workspace members")
        .iter()
        .map(|m| m.as_str().expect("member path").to_string())
        .collect()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Whether a line of code (not a comment, not inside a string) has `unsafe_code` as a
/// token of its own.
fn names_the_lint(line: &str) -> bool {
    let line = line.trim_start();
    if line.starts_with("//") {
        return false;
    }
    // Outside string literals: every other piece between quotes.
    line.split('"').step_by(2).any(|code| {
        code.match_indices("unsafe_code").any(|(at, _)| {
            let ident = |c: char| c.is_alphanumeric() || c == '_';
            let before = code[..at].chars().next_back();
            let after = code[at + "unsafe_code".len()..].chars().next();
            !before.is_some_and(ident) && !after.is_some_and(ident)
        })
    })
}

#[test]
fn the_lint_is_found_wherever_an_attribute_names_it() {
    assert!(names_the_lint("#![allow(unsafe_code)]"));
    assert!(names_the_lint("    unsafe_code,"));
    assert!(names_the_lint("#[cfg_attr(test, expect(unsafe_code))]"));
    assert!(!names_the_lint("// allow(unsafe_code) in a comment"));
    let quote = char::from(34u8);
    assert!(!names_the_lint(&format!(
        "let key = {quote}unsafe_code{quote};"
    )));
    assert!(!names_the_lint("fn denies_unsafe_code_here() {}"));
}

#[test]
fn the_workspace_denies_unsafe_code_and_every_crate_takes_its_lints() {
    let workspace = toml(&repo().join("Cargo.toml"));
    assert_eq!(
        workspace["workspace"]["lints"]["rust"]["unsafe_code"].as_str(),
        Some("deny"),
        "the workspace must deny unsafe_code"
    );
    let members = members();
    assert!(members.len() >= 10, "members: {members:?}");
    for member in members {
        let manifest = toml(&repo().join(&member).join("Cargo.toml"));
        let inherits = manifest
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(|w| w.as_bool());
        assert_eq!(
            inherits,
            Some(true),
            "{member}/Cargo.toml needs `[lints] workspace = true`"
        );
    }
}

#[test]
fn only_the_router_outbox_allows_unsafe_code() {
    let mut files = Vec::new();
    for member in members() {
        rust_files(&repo().join(member), &mut files);
    }
    let root = repo().canonicalize().unwrap();
    let mut allowing: Vec<String> = files
        .iter()
        .filter(|path| {
            // Any attribute naming the lint (allow, expect, cfg_attr, warn; on one line or
            // spread over several) opts out of deny.
            let text = std::fs::read_to_string(path).unwrap();
            text.lines().any(names_the_lint)
        })
        .map(|path| {
            let path = path.canonicalize().unwrap();
            path.strip_prefix(&root).unwrap().display().to_string()
        })
        .collect();
    allowing.sort();
    assert_eq!(allowing, ALLOWED, "files that allow unsafe code");
}
