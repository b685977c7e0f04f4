//! The write half of the state machine: each `plan_*` method checks a request against the
//! current state and returns the records to append and the answer (see the parent module).

use super::*;

impl RegistryState {
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

    /// Plans PUT /config[/{s}] or /mode[/{s}] (`subject: None` = global).
    pub fn plan_set<S: Setting>(&self, subject: Option<&str>, value: S) -> Plan<S> {
        Plan {
            records: vec![S::record(subject, Some(value))],
            outcome: value,
        }
    }

    /// Plans DELETE /config[/{s}] or /mode[/{s}]; the outcome is the value that was set
    /// (global: the value that was in force).
    pub fn plan_delete<S: Setting>(&self, subject: Option<&str>) -> Result<Plan<S>> {
        let previous = match subject {
            None => S::global(self).unwrap_or_default(),
            Some(s) => S::of_subject(self, s).ok_or_else(|| S::not_set(s))?,
        };
        Ok(Plan {
            records: vec![S::record(subject, None)],
            outcome: previous,
        })
    }
}

/// What the compatibility level and the mode have in common: a value set for the whole
/// registry or for one subject, kept in the log as a record of its own kind, read back
/// with a default when the registry has none. One planner and one set of HTTP handlers
/// serve both.
pub trait Setting: Copy + Default + std::fmt::Display + Send + Sync + 'static {
    /// The record that sets (`Some`) or clears (`None`) the value.
    fn record(subject: Option<&str>, value: Option<Self>) -> LogRecord;
    /// The registry-wide value, if one was set.
    fn global(state: &RegistryState) -> Option<Self>;
    /// The subject's own value, if it has one.
    fn of_subject(state: &RegistryState, subject: &str) -> Option<Self>;
    /// The error for a subject without a value of its own (40408, 40409).
    fn not_set(subject: &str) -> Error;
}

impl Setting for CompatibilityLevel {
    fn record(subject: Option<&str>, level: Option<Self>) -> LogRecord {
        LogRecord::Config {
            subject: subject.map(str::to_string),
            level,
        }
    }

    fn global(state: &RegistryState) -> Option<Self> {
        state.global_config
    }

    fn of_subject(state: &RegistryState, subject: &str) -> Option<Self> {
        state.subject_config(subject)
    }

    fn not_set(subject: &str) -> Error {
        Error::SubjectConfigNotFound(subject.to_string())
    }
}

impl Setting for Mode {
    fn record(subject: Option<&str>, mode: Option<Self>) -> LogRecord {
        LogRecord::Mode {
            subject: subject.map(str::to_string),
            mode,
        }
    }

    fn global(state: &RegistryState) -> Option<Self> {
        state.global_mode
    }

    fn of_subject(state: &RegistryState, subject: &str) -> Option<Self> {
        state.subject_mode(subject)
    }

    fn not_set(subject: &str) -> Error {
        Error::SubjectModeNotFound(subject.to_string())
    }
}
