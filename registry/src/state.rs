//! The registry as a pure state machine: no I/O.
//!
//! Reads answer from memory. Writes are two steps: a `plan_*` method validates the request
//! against the current state and returns the log records to write plus the answer; the
//! caller appends the records to the topic and, once the broker acknowledged each one,
//! feeds it to [`RegistryState::apply`]. Replaying the topic at start-up uses the same
//! `apply`, so the state after a restart is the state before it by construction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use apache_avro::Schema as AvroSchema;

use crate::canonical::{self, Analysed};
use crate::compat::{self, Checked};
use crate::log::{LogRecord, SchemaValue};
use crate::types::{CompatibilityLevel, Mode, Reference, SchemaRequest, SchemaType, VersionSpec};
use crate::{Error, Result};

/// The largest id or version a Java client can hold (they are `int`s there).
const MAX_ID: u32 = i32::MAX as u32;

/// A schema stored under an id.
#[derive(Debug, Clone)]
pub struct StoredSchema {
    pub id: u32,
    pub schema_type: SchemaType,
    /// The text as first registered.
    pub schema: String,
    pub references: Vec<Reference>,
    identity: String,
    avro: Option<Arc<AvroSchema>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VersionEntry {
    id: u32,
    deleted: bool,
}

#[derive(Debug, Clone, Default)]
struct Subject {
    versions: BTreeMap<u32, VersionEntry>,
    config: Option<CompatibilityLevel>,
    mode: Option<Mode>,
}

impl Subject {
    fn is_empty(&self) -> bool {
        self.versions.is_empty() && self.config.is_none() && self.mode.is_none()
    }

    fn live(&self) -> impl DoubleEndedIterator<Item = (u32, VersionEntry)> + '_ {
        self.versions
            .iter()
            .filter(|(_, e)| !e.deleted)
            .map(|(v, e)| (*v, *e))
    }

    fn latest(&self, include_deleted: bool) -> Option<(u32, VersionEntry)> {
        if include_deleted {
            self.versions.iter().next_back().map(|(v, e)| (*v, *e))
        } else {
            self.live().next_back()
        }
    }
}

/// A write to perform: the records to append (in order) and the answer once they are applied.
#[derive(Debug, Clone)]
pub struct Plan<T> {
    pub records: Vec<LogRecord>,
    pub outcome: T,
}

impl<T> Plan<T> {
    fn nothing(outcome: T) -> Self {
        Plan {
            records: Vec::new(),
            outcome,
        }
    }
}

/// The answer to a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub id: u32,
    pub version: u32,
}

/// One (subject, version) with its schema, as GET and lookup return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema_type: SchemaType,
    pub schema: String,
    pub references: Vec<Reference>,
}

/// Which versions or subjects a listing includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// Live ones only.
    #[default]
    Live,
    /// Live and soft-deleted.
    All,
    /// Soft-deleted only.
    DeletedOnly,
}

impl Filter {
    fn admits(self, deleted: bool) -> bool {
        match self {
            Filter::Live => !deleted,
            Filter::All => true,
            Filter::DeletedOnly => deleted,
        }
    }
}

/// The registry's whole state. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct RegistryState {
    schemas: BTreeMap<u32, StoredSchema>,
    by_identity: HashMap<String, u32>,
    subjects: BTreeMap<String, Subject>,
    global_config: Option<CompatibilityLevel>,
    global_mode: Option<Mode>,
    /// The largest id ever seen, so ids are not reused after a permanent delete.
    max_id: u32,
}

impl RegistryState {
    pub fn new() -> Self {
        Self::default()
    }

    // ---------------------------------------------------------------- applying the log

    /// Applies one acknowledged (or replayed) record. Never fails: a record that cannot be
    /// understood is applied as far as possible and logged.
    pub fn apply(&mut self, record: &LogRecord) {
        match record {
            LogRecord::Schema {
                subject,
                version,
                value: Some(value),
            } => self.apply_schema(subject, *version, value),
            LogRecord::Schema {
                subject,
                version,
                value: None,
            } => {
                let removed = self
                    .subjects
                    .get_mut(subject)
                    .and_then(|s| s.versions.remove(version));
                self.prune_subject(subject);
                if let Some(entry) = removed {
                    self.collect_unreferenced(entry.id);
                }
            }
            LogRecord::Config {
                subject: None,
                level,
            } => self.global_config = *level,
            LogRecord::Config {
                subject: Some(subject),
                level,
            } => {
                self.subjects.entry(subject.clone()).or_default().config = *level;
                self.prune_subject(subject);
            }
            LogRecord::Mode {
                subject: None,
                mode,
            } => self.global_mode = *mode,
            LogRecord::Mode {
                subject: Some(subject),
                mode,
            } => {
                self.subjects.entry(subject.clone()).or_default().mode = *mode;
                self.prune_subject(subject);
            }
            LogRecord::DeleteSubject {
                subject,
                version: Some(up_to),
            } => {
                if let Some(s) = self.subjects.get_mut(subject) {
                    for (_, entry) in s.versions.range_mut(..=*up_to) {
                        entry.deleted = true;
                    }
                }
            }
            LogRecord::DeleteSubject { version: None, .. } | LogRecord::Ignored => {}
        }
    }

    fn apply_schema(&mut self, subject: &str, version: u32, value: &SchemaValue) {
        self.max_id = self.max_id.max(value.id);
        if !self.schemas.contains_key(&value.id) {
            let analysed = self
                .analyse(value.schema_type, &value.schema, &value.references)
                .unwrap_or_else(|reason| {
                    // Keep serving it by id; it only cannot take part in compatibility checks.
                    tracing::warn!(id = value.id, %reason, "stored schema does not parse");
                    Analysed {
                        identity: format!("unparsed\n{}\n{}", value.schema_type, value.schema),
                        avro: None,
                    }
                });
            self.by_identity
                .entry(analysed.identity.clone())
                .or_insert(value.id);
            self.schemas.insert(
                value.id,
                StoredSchema {
                    id: value.id,
                    schema_type: value.schema_type,
                    schema: value.schema.clone(),
                    references: value.references.clone(),
                    identity: analysed.identity,
                    avro: analysed.avro,
                },
            );
        }
        let subject_state = self.subjects.entry(subject.to_string()).or_default();
        let previous = subject_state.versions.insert(
            version,
            VersionEntry {
                id: value.id,
                deleted: value.deleted,
            },
        );
        if let Some(previous) = previous
            && previous.id != value.id
        {
            self.collect_unreferenced(previous.id);
        }
    }

    fn prune_subject(&mut self, subject: &str) {
        if self.subjects.get(subject).is_some_and(Subject::is_empty) {
            self.subjects.remove(subject);
        }
    }

    /// Forgets a schema no version points at any more (after permanent deletes).
    fn collect_unreferenced(&mut self, id: u32) {
        let used = self
            .subjects
            .values()
            .any(|s| s.versions.values().any(|e| e.id == id));
        if !used
            && let Some(stored) = self.schemas.remove(&id)
            && self.by_identity.get(&stored.identity) == Some(&id)
        {
            self.by_identity.remove(&stored.identity);
        }
    }

    // ---------------------------------------------------------------- schema analysis

    fn analyse(
        &self,
        schema_type: SchemaType,
        text: &str,
        references: &[Reference],
    ) -> Result<Analysed, String> {
        let referenced = self.referenced_texts(references)?;
        canonical::analyse(schema_type, text, references, &referenced)
    }

    /// The texts of all schemas `references` point at, transitively, dependencies first.
    fn referenced_texts(&self, references: &[Reference]) -> Result<Vec<String>, String> {
        let mut seen = BTreeSet::new();
        let mut texts = Vec::new();
        self.collect_references(references, &mut seen, &mut texts, 0)?;
        Ok(texts)
    }

    fn collect_references(
        &self,
        references: &[Reference],
        seen: &mut BTreeSet<u32>,
        texts: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > 32 {
            return Err("references nested too deeply".to_string());
        }
        for reference in references {
            let stored = self.resolve_reference(reference).ok_or_else(|| {
                format!(
                    "reference '{}' to subject '{}' version {} not found",
                    reference.name, reference.subject, reference.version
                )
            })?;
            if seen.insert(stored.id) {
                self.collect_references(&stored.references, seen, texts, depth + 1)?;
                texts.push(stored.schema.clone());
            }
        }
        Ok(())
    }

    fn resolve_reference(&self, reference: &Reference) -> Option<&StoredSchema> {
        let subject = self.subjects.get(&reference.subject)?;
        let entry = match reference.version {
            -1 => subject.latest(false)?.1,
            v => *subject.versions.get(&u32::try_from(v).ok()?)?,
        };
        self.schemas.get(&entry.id)
    }

    fn prepare(&self, request: &SchemaRequest) -> Result<Candidate> {
        let schema = request
            .schema
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| Error::InvalidSchema("empty schema".to_string()))?;
        let schema_type = SchemaType::parse(request.schema_type.as_deref())?;
        let references = request.references.clone().unwrap_or_default();
        let analysed = self
            .analyse(schema_type, schema, &references)
            .map_err(|reason| Error::InvalidSchema(format!("{schema_type} schema: {reason}")))?;
        Ok(Candidate {
            schema_type,
            schema: schema.to_string(),
            references,
            analysed,
        })
    }

    // ---------------------------------------------------------------- reads

    /// The compatibility level in force for `subject`: its own, else global, else BACKWARD.
    pub fn effective_level(&self, subject: &str) -> CompatibilityLevel {
        self.subject_config(subject)
            .or(self.global_config)
            .unwrap_or_default()
    }

    pub fn effective_mode(&self, subject: &str) -> Mode {
        self.subject_mode(subject)
            .or(self.global_mode)
            .unwrap_or_default()
    }

    pub fn global_config(&self) -> CompatibilityLevel {
        self.global_config.unwrap_or_default()
    }

    pub fn global_config_set(&self) -> Option<CompatibilityLevel> {
        self.global_config
    }

    pub fn subject_config(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.subjects.get(subject).and_then(|s| s.config)
    }

    pub fn global_mode(&self) -> Mode {
        self.global_mode.unwrap_or_default()
    }

    pub fn global_mode_set(&self) -> Option<Mode> {
        self.global_mode
    }

    pub fn subject_mode(&self, subject: &str) -> Option<Mode> {
        self.subjects.get(subject).and_then(|s| s.mode)
    }

    /// The largest id handed out so far.
    pub fn max_id(&self) -> u32 {
        self.max_id
    }

    /// Subjects with at least one version admitted by `filter`, sorted.
    pub fn subjects(&self, filter: Filter, prefix: &str) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .filter(|(_, s)| s.versions.values().any(|e| filter.admits(e.deleted)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A subject that has versions; with `include_deleted == false`, live ones.
    fn existing_subject(&self, subject: &str, include_deleted: bool) -> Result<&Subject> {
        self.subjects
            .get(subject)
            .filter(|s| {
                if include_deleted {
                    !s.versions.is_empty()
                } else {
                    s.live().next().is_some()
                }
            })
            .ok_or_else(|| Error::SubjectNotFound(subject.to_string()))
    }

    pub fn versions(&self, subject: &str, filter: Filter) -> Result<Vec<u32>> {
        let s = self.existing_subject(subject, filter != Filter::Live)?;
        Ok(s.versions
            .iter()
            .filter(|(_, e)| filter.admits(e.deleted))
            .map(|(v, _)| *v)
            .collect())
    }

    pub fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<VersionInfo> {
        let s = self.existing_subject(subject, include_deleted)?;
        let not_found = || Error::VersionNotFound {
            subject: subject.to_string(),
            version: spec.to_string(),
        };
        let (version, entry) = match spec {
            VersionSpec::Latest => s.latest(include_deleted).ok_or_else(not_found)?,
            VersionSpec::Number(n) => {
                let entry = s
                    .versions
                    .get(&n)
                    .filter(|e| include_deleted || !e.deleted)
                    .ok_or_else(not_found)?;
                (n, *entry)
            }
        };
        self.version_info(subject, version, entry.id)
    }

    fn version_info(&self, subject: &str, version: u32, id: u32) -> Result<VersionInfo> {
        let stored = self.schema_by_id(id)?;
        Ok(VersionInfo {
            subject: subject.to_string(),
            version,
            id,
            schema_type: stored.schema_type,
            schema: stored.schema.clone(),
            references: stored.references.clone(),
        })
    }

    /// Every (subject, version) admitted by `filter`, by subject then version; with
    /// `latest_only`, only each subject's latest admitted version.
    pub fn all_versions(
        &self,
        filter: Filter,
        prefix: &str,
        latest_only: bool,
    ) -> Vec<VersionInfo> {
        let mut found = Vec::new();
        for (name, s) in self.subjects.range(prefix.to_string()..) {
            if !name.starts_with(prefix) {
                break;
            }
            let admitted: Vec<(&u32, &VersionEntry)> = s
                .versions
                .iter()
                .filter(|(_, e)| filter.admits(e.deleted))
                .collect();
            let chosen = if latest_only {
                &admitted[admitted.len().saturating_sub(1)..]
            } else {
                &admitted[..]
            };
            for (version, entry) in chosen {
                if let Ok(info) = self.version_info(name, **version, entry.id) {
                    found.push(info);
                }
            }
        }
        found
    }

    /// A schema by id; soft-deleted versions keep their schema readable.
    pub fn schema_by_id(&self, id: u32) -> Result<&StoredSchema> {
        self.schemas
            .get(&id)
            .ok_or_else(|| Error::SchemaNotFound(format!("Schema {id} not found")))
    }

    /// Every (subject, version) that uses schema `id`.
    pub fn id_versions(&self, id: u32, filter: Filter) -> Result<Vec<(String, u32)>> {
        self.schema_by_id(id)?;
        let mut found = Vec::new();
        for (name, s) in &self.subjects {
            for (version, entry) in &s.versions {
                if entry.id == id && filter.admits(entry.deleted) {
                    found.push((name.clone(), *version));
                }
            }
        }
        Ok(found)
    }

    /// Ids of live schemas that reference (subject, version).
    pub fn referenced_by(&self, subject: &str, version: u32) -> Vec<u32> {
        let mut ids = BTreeSet::new();
        for s in self.subjects.values() {
            for (_, entry) in s.live() {
                let Some(stored) = self.schemas.get(&entry.id) else {
                    continue;
                };
                let refers = stored.references.iter().any(|r| {
                    r.subject == subject
                        && (r.version == i64::from(version)
                            || (r.version == -1
                                && self
                                    .subjects
                                    .get(subject)
                                    .and_then(|t| t.latest(false))
                                    .is_some_and(|(v, _)| v == version)))
                });
                if refers {
                    ids.insert(entry.id);
                }
            }
        }
        ids.into_iter().collect()
    }

    /// Finds `request`'s schema among the subject's versions (POST /subjects/{s}).
    pub fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        include_deleted: bool,
    ) -> Result<VersionInfo> {
        let s = self.existing_subject(subject, include_deleted)?;
        let candidate = self.prepare(request)?;
        let found = s
            .versions
            .iter()
            .rev()
            .filter(|(_, e)| include_deleted || !e.deleted)
            .find(|(_, e)| self.identity_of(e.id) == Some(&candidate.analysed.identity));
        match found {
            Some((version, entry)) => self.version_info(subject, *version, entry.id),
            None => Err(Error::SchemaNotFound("Schema not found".to_string())),
        }
    }

    fn identity_of(&self, id: u32) -> Option<&String> {
        self.schemas.get(&id).map(|s| &s.identity)
    }

    /// Compatibility of `request` with the subject (POST /compatibility/...). `spec: None`
    /// checks every version the level asks for; `Some` checks that one version. Returns the
    /// reasons it is incompatible (empty = compatible).
    pub fn check_compatibility(
        &self,
        subject: &str,
        spec: Option<VersionSpec>,
        request: &SchemaRequest,
    ) -> Result<Vec<String>> {
        let level = self.effective_level(subject);
        let live: Vec<(u32, VersionEntry)> = self
            .subjects
            .get(subject)
            .map(|s| s.live().collect())
            .unwrap_or_default();
        let against: Option<(u32, VersionEntry)> = match spec {
            None => None,
            Some(VersionSpec::Latest) => match live.last() {
                Some(latest) => Some(*latest),
                // Nothing to be incompatible with.
                None => return Ok(Vec::new()),
            },
            Some(VersionSpec::Number(n)) => {
                Some(live.iter().find(|(v, _)| *v == n).copied().ok_or_else(|| {
                    Error::VersionNotFound {
                        subject: subject.to_string(),
                        version: n.to_string(),
                    }
                })?)
            }
        };
        let candidate = self.prepare(request)?;
        let new = candidate.checked();
        Ok(match against {
            Some((version, entry)) => match self.schemas.get(&entry.id) {
                Some(old) => compat::check_one(level, new, version, checked(old)),
                None => Vec::new(),
            },
            None => {
                let existing = self.checked_versions(&live);
                compat::check(level, new, &existing)
            }
        })
    }

    fn checked_versions<'a>(&'a self, live: &[(u32, VersionEntry)]) -> Vec<(u32, Checked<'a>)> {
        live.iter()
            .filter_map(|(v, e)| self.schemas.get(&e.id).map(|s| (*v, checked(s))))
            .collect()
    }

    // ---------------------------------------------------------------- writes

    fn ensure_writable(&self, subject: &str) -> Result<Mode> {
        let mode = self.effective_mode(subject);
        if mode.is_read_only() {
            return Err(Error::OperationNotPermitted(format!(
                "Subject {subject} is in read-only mode"
            )));
        }
        Ok(mode)
    }

    /// Plans POST /subjects/{s}/versions.
    pub fn plan_register(
        &self,
        subject: &str,
        request: &SchemaRequest,
    ) -> Result<Plan<Registered>> {
        let mode = self.ensure_writable(subject)?;
        let candidate = self.prepare(request)?;
        let identity = &candidate.analysed.identity;
        let existing = self.subjects.get(subject);

        // Re-registering a live schema is a no-op that returns what is there.
        if let Some(s) = existing
            && let Some((version, entry)) = s
                .live()
                .rev()
                .find(|(_, e)| self.identity_of(e.id) == Some(identity))
        {
            return Ok(Plan::nothing(Registered {
                id: entry.id,
                version,
            }));
        }

        let import = mode == Mode::Import;
        if !import {
            let level = self.effective_level(subject);
            let live: Vec<(u32, VersionEntry)> =
                existing.map(|s| s.live().collect()).unwrap_or_default();
            let messages = compat::check(level, candidate.checked(), &self.checked_versions(&live));
            if !messages.is_empty() {
                return Err(Error::Incompatible {
                    subject: subject.to_string(),
                    messages,
                });
            }
        }

        let requested_id = request.id.filter(|id| import && *id > 0);
        let id = match requested_id {
            Some(id) => {
                let id = u32::try_from(id)
                    .ok()
                    .filter(|id| *id <= MAX_ID)
                    .ok_or_else(|| Error::InvalidSchema(format!("id {id} out of range")))?;
                if let Some(stored) = self.schemas.get(&id)
                    && &stored.identity != identity
                {
                    return Err(Error::OperationNotPermitted(format!(
                        "Overwrite new schema with id {id} is not permitted."
                    )));
                }
                id
            }
            None => match self.by_identity.get(identity) {
                Some(id) => *id,
                None => self
                    .max_id
                    .checked_add(1)
                    .filter(|id| *id <= MAX_ID)
                    .ok_or_else(|| Error::Store("schema ids exhausted".to_string()))?,
            },
        };

        let next_version = existing
            .and_then(|s| s.versions.keys().next_back().copied())
            .unwrap_or(0)
            .checked_add(1)
            .filter(|v| *v <= MAX_ID)
            .ok_or_else(|| Error::Store("versions exhausted".to_string()))?;
        let version = match request.version.filter(|v| import && *v > 0) {
            Some(v) => {
                let v = u32::try_from(v)
                    .ok()
                    .filter(|v| *v <= MAX_ID)
                    .ok_or_else(|| Error::InvalidVersion(v.to_string()))?;
                if existing.is_some_and(|s| s.versions.contains_key(&v)) {
                    return Err(Error::OperationNotPermitted(format!(
                        "Version {v} of subject {subject} already exists"
                    )));
                }
                v
            }
            None => next_version,
        };

        let value = SchemaValue {
            subject: subject.to_string(),
            version,
            id,
            schema: candidate.schema,
            schema_type: candidate.schema_type,
            references: candidate.references,
            deleted: false,
        };
        Ok(Plan {
            records: vec![LogRecord::Schema {
                subject: subject.to_string(),
                version,
                value: Some(value),
            }],
            outcome: Registered { id, version },
        })
    }

    fn rewrite(
        &self,
        subject: &str,
        version: u32,
        entry: VersionEntry,
        deleted: bool,
    ) -> LogRecord {
        let value = self.schemas.get(&entry.id).map(|stored| SchemaValue {
            subject: subject.to_string(),
            version,
            id: entry.id,
            schema: stored.schema.clone(),
            schema_type: stored.schema_type,
            references: stored.references.clone(),
            deleted,
        });
        LogRecord::Schema {
            subject: subject.to_string(),
            version,
            value,
        }
    }

    fn ensure_unreferenced(&self, subject: &str, version: u32) -> Result<()> {
        if self.referenced_by(subject, version).is_empty() {
            Ok(())
        } else {
            Err(Error::ReferenceExists {
                subject: subject.to_string(),
                version,
            })
        }
    }

    /// Plans DELETE /subjects/{s}[?permanent=true]; the outcome lists the deleted versions.
    pub fn plan_delete_subject(&self, subject: &str, permanent: bool) -> Result<Plan<Vec<u32>>> {
        self.ensure_writable(subject)?;
        let s = self.existing_subject(subject, true)?;
        let live: Vec<(u32, VersionEntry)> = s.live().collect();
        if permanent {
            if !live.is_empty() {
                return Err(Error::SubjectNotSoftDeleted(subject.to_string()));
            }
            let mut records: Vec<LogRecord> = s
                .versions
                .keys()
                .map(|v| LogRecord::Schema {
                    subject: subject.to_string(),
                    version: *v,
                    value: None,
                })
                .collect();
            // Permanent delete takes the subject's own config and mode with it.
            if s.config.is_some() {
                records.push(LogRecord::Config {
                    subject: Some(subject.to_string()),
                    level: None,
                });
            }
            if s.mode.is_some() {
                records.push(LogRecord::Mode {
                    subject: Some(subject.to_string()),
                    mode: None,
                });
            }
            records.push(LogRecord::DeleteSubject {
                subject: subject.to_string(),
                version: None,
            });
            return Ok(Plan {
                records,
                outcome: s.versions.keys().copied().collect(),
            });
        }
        if live.is_empty() {
            return Err(Error::SubjectSoftDeleted(subject.to_string()));
        }
        for (version, _) in &live {
            self.ensure_unreferenced(subject, *version)?;
        }
        let mut records: Vec<LogRecord> = live
            .iter()
            .map(|(v, e)| self.rewrite(subject, *v, *e, true))
            .collect();
        // What Confluent writes; the rewritten SCHEMA values above survive compaction alone.
        if let Some(max) = s.versions.keys().next_back() {
            records.push(LogRecord::DeleteSubject {
                subject: subject.to_string(),
                version: Some(*max),
            });
        }
        Ok(Plan {
            records,
            outcome: live.iter().map(|(v, _)| *v).collect(),
        })
    }

    /// Plans DELETE /subjects/{s}/versions/{v}[?permanent=true]; the outcome is the version.
    pub fn plan_delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<Plan<u32>> {
        self.ensure_writable(subject)?;
        let s = self.existing_subject(subject, true)?;
        let not_found = || Error::VersionNotFound {
            subject: subject.to_string(),
            version: spec.to_string(),
        };
        let (version, entry) = match spec {
            VersionSpec::Latest => s.latest(permanent).ok_or_else(not_found)?,
            VersionSpec::Number(n) => (n, *s.versions.get(&n).ok_or_else(not_found)?),
        };
        if permanent {
            if !entry.deleted {
                return Err(Error::VersionNotSoftDeleted {
                    subject: subject.to_string(),
                    version,
                });
            }
            return Ok(Plan {
                records: vec![LogRecord::Schema {
                    subject: subject.to_string(),
                    version,
                    value: None,
                }],
                outcome: version,
            });
        }
        if entry.deleted {
            return Err(Error::VersionSoftDeleted {
                subject: subject.to_string(),
                version,
            });
        }
        self.ensure_unreferenced(subject, version)?;
        Ok(Plan {
            records: vec![self.rewrite(subject, version, entry, true)],
            outcome: version,
        })
    }

    /// Plans PUT /config[/{s}] (`subject: None` = global).
    pub fn plan_set_config(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Plan<CompatibilityLevel> {
        Plan {
            records: vec![LogRecord::Config {
                subject: subject.map(str::to_string),
                level: Some(level),
            }],
            outcome: level,
        }
    }

    /// Plans DELETE /config[/{s}]; the outcome is the level that was set (global: the level
    /// that was in force).
    pub fn plan_delete_config(&self, subject: Option<&str>) -> Result<Plan<CompatibilityLevel>> {
        let previous = match subject {
            None => self.global_config(),
            Some(s) => self
                .subject_config(s)
                .ok_or_else(|| Error::SubjectConfigNotFound(s.to_string()))?,
        };
        Ok(Plan {
            records: vec![LogRecord::Config {
                subject: subject.map(str::to_string),
                level: None,
            }],
            outcome: previous,
        })
    }

    /// Plans PUT /mode[/{s}].
    pub fn plan_set_mode(&self, subject: Option<&str>, mode: Mode) -> Plan<Mode> {
        Plan {
            records: vec![LogRecord::Mode {
                subject: subject.map(str::to_string),
                mode: Some(mode),
            }],
            outcome: mode,
        }
    }

    /// Plans DELETE /mode[/{s}]; the outcome is the mode that was set.
    pub fn plan_delete_mode(&self, subject: Option<&str>) -> Result<Plan<Mode>> {
        let previous = match subject {
            None => self.global_mode(),
            Some(s) => self
                .subject_mode(s)
                .ok_or_else(|| Error::SubjectModeNotFound(s.to_string()))?,
        };
        Ok(Plan {
            records: vec![LogRecord::Mode {
                subject: subject.map(str::to_string),
                mode: None,
            }],
            outcome: previous,
        })
    }
}

/// A parsed schema from a request, not yet stored.
#[derive(Debug)]
struct Candidate {
    schema_type: SchemaType,
    schema: String,
    references: Vec<Reference>,
    analysed: Analysed,
}

impl Candidate {
    fn checked(&self) -> Checked<'_> {
        Checked {
            schema_type: self.schema_type,
            avro: self.analysed.avro.as_deref(),
        }
    }
}

fn checked(stored: &StoredSchema) -> Checked<'_> {
    Checked {
        schema_type: stored.schema_type,
        avro: stored.avro.as_deref(),
    }
}

#[cfg(test)]
mod tests;
