//! The read half of the state machine: what the GET endpoints, lookup and the
//! compatibility check answer from memory.

use super::*;

impl RegistryState {
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
    pub(super) fn existing_subject(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<&Subject> {
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

    pub(super) fn identity_of(&self, id: u32) -> Option<&String> {
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

    pub(super) fn checked_versions<'a>(
        &'a self,
        live: &[(u32, VersionEntry)],
    ) -> Vec<(u32, Checked<'a>)> {
        live.iter()
            .filter_map(|(v, e)| self.schemas.get(&e.id).map(|s| (*v, checked(s))))
            .collect()
    }
}
