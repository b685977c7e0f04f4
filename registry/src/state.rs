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

mod plan;
mod read;

pub use plan::Setting;

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
