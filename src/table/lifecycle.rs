//! Key lifecycle on tables and projects: rewrap (new CMK version, data untouched), re-encrypt
//! (fresh DEKs), and the check before an old CMK version is destroyed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use crate::crypto::random_array;
use crate::error::{Error, Result};
use crate::format::rewrap::rewrap_file;
use crate::project::Project;

use super::{FileRef, Manifest, Table};

/// In [`Table::key_versions_in_use`], the version of a column key, which blocks destroying any
/// version of that key.
pub const COLUMN_KEY_ANY_VERSION: u32 = u32::MAX;

/// Progress of a long operation: (what, done, total).
pub type Progress<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

/// What a rewrap or re-encryption did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LifecycleReport {
    /// Files rewritten.
    pub files: usize,
    /// Bytes of column data copied without being decrypted (rewrap) or re-encrypted (re-encrypt).
    pub bytes: u64,
    /// The version committed, if anything changed.
    pub version: Option<u64>,
}

impl Table {
    /// Moves every live file's keys to the CMK's current version: each file is rewritten with its
    /// chunk bytes copied unchanged and its footer re-sealed with a fresh nonce, and all of them are
    /// committed at once. Old files stay for older snapshots until those expire.
    pub fn rewrap(&self, progress: Progress<'_>) -> Result<LifecycleReport> {
        let head = self.head()?;
        let Some(access) = self.access() else {
            return Err(Error::InvalidArgument(format!(
                "table {} is not encrypted: nothing to rewrap",
                self.name
            )));
        };
        let mut memo = HashMap::new();
        let mut replaced = Vec::new();
        let mut report = LifecycleReport::default();
        let total = head.files.len() as u64;
        for (i, f) in head.files.iter().enumerate() {
            progress("rewrap", i as u64, total);
            let src = self
                .storage
                .reader(&Self::data_object(&f.name), Some(f.len))?
                .ok_or_else(|| Error::integrity(format!("data file {} (missing)", f.file_id)))?;
            let tag: String = random_array::<4>()?.iter().map(|b| format!("{b:02x}")).collect();
            let name = format!("{}-{tag}.cvlt", f.file_id);
            let mut out = self.storage.writer(&Self::data_object(&name))?;
            // The reader's checks apply: the file must be the one the manifest committed, with
            // the table's column keys (each re-wrapped under its own CMK's current version).
            self.check_file_and_keys(f, &head)?;
            let info = rewrap_file(&*src, &mut out, &access, &f.key_ids, &mut memo)?;
            out.finish()?;
            report.files += 1;
            report.bytes += info.chunk_bytes;
            replaced.push((
                f.file_id,
                FileRef {
                    name,
                    len: info.file_len,
                    footer_digest: info.footer_digest,
                    key_version: info.key_version,
                    ..f.clone()
                },
            ));
        }
        progress("rewrap", total, total);
        report.version = Some(self.replace_files("rewrap", &head, replaced)?);
        Ok(report)
    }

    /// Gives every live file a fresh DEK (for a DEK that may have leaked): each file is decrypted and
    /// written again under a new data key and file id, and all are committed at once.
    pub fn reencrypt(&self, progress: Progress<'_>) -> Result<LifecycleReport> {
        let head = self.head()?;
        let mut replaced = Vec::new();
        let mut report = LifecycleReport::default();
        let total = head.files.len() as u64;
        for (i, f) in head.files.iter().enumerate() {
            progress("reencrypt", i as u64, total);
            let batches = self.read_checked_file(f, &head)?;
            let mut new = self.write_files(&head.schema, batches)?;
            if new.is_empty() {
                // A file without rows still holds a footer sealed under its old DEK: it gets a
                // fresh (empty) file too, so every counted file really has a new key.
                new.push(self.finish_file(self.start_file(&head.schema, f.partition.clone())?)?);
            }
            match new.len() {
                1 => replaced.push((f.file_id, new.remove(0))),
                _ => return Err(Error::InvalidArgument("re-encryption split a file".into())),
            }
            report.files += 1;
            report.bytes += f.len;
        }
        progress("reencrypt", total, total);
        report.version = Some(self.replace_files("reencrypt", &head, replaced)?);
        Ok(report)
    }

    /// Commits `replacements` (old file id → new file), refusing if the table changed meanwhile in a
    /// way that touched those files.
    fn replace_files(
        &self,
        op: &str,
        base: &Manifest,
        replacements: Vec<(crate::crypto::FileId, FileRef)>,
    ) -> Result<u64> {
        let map: HashMap<_, _> = replacements.into_iter().collect();
        let base_names: HashSet<String> = base.files.iter().map(|f| f.name.clone()).collect();
        let m = self.commit(op, |head| {
            let mut next = head.clone();
            for f in &mut next.files {
                if let Some(new) = map.get(&f.file_id) {
                    if !base_names.contains(&f.name) {
                        return Err(Error::InvalidArgument(format!(
                            "table {} changed during {op}; run it again",
                            self.name
                        )));
                    }
                    *f = new.clone();
                }
            }
            Ok(next)
        })?;
        Ok(m.version)
    }

    /// Which versions of which CMKs the retained snapshots still need, with what needs them
    /// (data files and manifests).
    pub fn key_versions_in_use(&self) -> Result<BTreeMap<(String, u32), Vec<String>>> {
        let head = self.head()?;
        let mut out: BTreeMap<(String, u32), Vec<String>> = BTreeMap::new();
        for v in head.oldest_retained.max(1)..=head.version {
            let m = self.snapshot(v)?;
            let bytes = self.manifest_bytes(v)?;
            if let Some((key, kv)) = Manifest::sealed_key_version(&bytes)? {
                out.entry((key.to_string(), kv))
                    .or_default()
                    .push(format!("table {} manifest version {v}", self.name));
            }
            for f in &m.files {
                let what = format!("table {} file {}", self.name, f.name);
                for (i, k) in f.key_ids.iter().enumerate() {
                    // The manifest records the version of the file key's KEK; a column key's
                    // version is recorded only in the file's footer, so a column key counts as in
                    // use at every version (COLUMN_KEY_ANY_VERSION) until the file is rewritten.
                    let version = if i == 0 { f.key_version } else { COLUMN_KEY_ANY_VERSION };
                    let users = out.entry((k.to_string(), version)).or_default();
                    if !users.contains(&what) {
                        users.push(what.clone());
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Project {
    /// Rewraps every table and re-seals the settings under the CMK's current version.
    pub fn rewrap(&self, progress: Progress<'_>) -> Result<Vec<(String, LifecycleReport)>> {
        let mut out = Vec::new();
        for name in self.list_tables()? {
            out.push((name.clone(), self.table(&name)?.rewrap(progress)?));
        }
        self.reseal_settings()?;
        Ok(out)
    }

    /// Vacuums every table (see [`Table::vacuum`]) and removes stale temporary files of the
    /// project's own. Returns how many files were removed.
    pub fn vacuum(&self, grace: std::time::Duration) -> Result<usize> {
        // First every table's head, as the catalog records it: if storage was rolled back or
        // replaced anywhere in the project, nothing at all is deleted.
        let tables = self
            .list_tables()?
            .iter()
            .map(|name| {
                let t = self.table(name)?;
                t.head()?;
                Ok(t)
            })
            .collect::<Result<Vec<_>>>()?;
        // Settings files the catalog no longer records (superseded by a migration): an older
        // authentic copy is refused anyway, but none is left lying around.
        let current = crate::project::settings::file_name(&self.settings().digest());
        let mut removed = self.storage().remove_where("", grace, |name| {
            name.starts_with("project-") && name.ends_with(".cv") && name != current
        })?;
        removed += self.remove_stale_staged_tables(grace)?;
        for t in tables {
            removed += t.vacuum(grace)?;
        }
        Ok(removed)
    }

    /// Removes the table prefixes under `tables/` that the catalog does not register (a table
    /// creation killed before its registration, a dropped table whose removal was interrupted)
    /// whose newest object is older than `grace`: no reader ever sees them.
    fn remove_stale_staged_tables(&self, grace: std::time::Duration) -> Result<usize> {
        let registered: HashSet<String> = self
            .catalog()
            .list_tables(self.project_id())?
            .into_iter()
            .map(|t| t.location.trim_matches('/').to_string())
            .collect();
        let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for dir in self.storage().list_dirs("tables")? {
            let location = format!("tables/{dir}");
            if registered.contains(&location) {
                continue;
            }
            let objects = self.storage().list(&location)?;
            // A creation under way writes into it: only a prefix nothing touched for `grace` goes.
            let local_age_ok = match self.storage().local_dir() {
                Some(root) => std::fs::metadata(root.join(&location))
                    .and_then(|m| m.modified())
                    .map(|t| t <= cutoff)
                    .unwrap_or(true),
                None => true,
            };
            if local_age_ok && objects.iter().all(|o| o.modified <= cutoff) {
                self.storage().delete_all(&location)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Re-encrypts every table with fresh DEKs.
    pub fn reencrypt(&self, progress: Progress<'_>) -> Result<Vec<(String, LifecycleReport)>> {
        let mut out = Vec::new();
        for name in self.list_tables()? {
            out.push((name.clone(), self.table(&name)?.reencrypt(progress)?));
        }
        Ok(out)
    }

    /// Destroys version `version` of the project's CMK, after checking that nothing retained
    /// still needs it in any project of the catalog (see [`destroy_key_version`]).
    pub fn destroy_key_version(&self, version: u32) -> Result<()> {
        let cmk = self
            .settings()
            .cmk
            .clone()
            .ok_or_else(|| Error::InvalidArgument("the project is not encrypted".into()))?;
        destroy_key_version(self.catalog(), self.keys(), &cmk, version)
    }

    /// What in this project still needs version `version` of CMK `cmk`.
    pub fn key_version_users(&self, cmk: &crate::kms::KeyId, version: u32) -> Result<Vec<String>> {
        let mut users = Vec::new();
        for name in self.list_tables()? {
            for ((key, v), what) in self.table(&name)?.key_versions_in_use()? {
                if key == cmk.as_str() && (v == version || v == COLUMN_KEY_ANY_VERSION) {
                    users.extend(what);
                }
            }
        }
        if self.settings().cmk.as_ref() == Some(cmk) && self.settings_key_version()? == Some(version) {
            users.push(format!("the settings of project {}", self.name()));
        }
        if let Some((_, Some(from))) = &self.settings().migrating_from {
            if from == cmk {
                users.push(format!("project {}'s unfinished migration", self.name()));
            }
        }
        Ok(users
            .into_iter()
            .map(|u| format!("project {}: {u}", self.name()))
            .collect())
    }
}

/// Destroys version `version` of CMK `cmk` after checking every project the catalog knows: if any
/// retained manifest, data file (under the key as file key or column key) or settings file still
/// needs that version, nothing is destroyed and the error lists what needs it (rewrap, then expire
/// older snapshots). The KMS adds its own rule: a version superseded less than the longest KEK
/// cache lifetime ago is refused, since another process may still wrap under it.
pub fn destroy_key_version(
    catalog: &std::sync::Arc<dyn crate::catalog::Catalog>,
    keys: &crate::project::Keys,
    cmk: &crate::kms::KeyId,
    version: u32,
) -> Result<()> {
    let mut users = Vec::new();
    for rec in catalog.list_projects()? {
        // A project whose policy never named the key can still hold column-key files under it, so
        // every project is opened; one that cannot be opened blocks the destruction.
        let project = Project::open_record(catalog, &rec, keys.clone()).map_err(|e| {
            Error::InvalidKeyState(format!(
                "cannot check project {} for uses of key {cmk} version {version} ({e}); nothing was destroyed",
                rec.name
            ))
        })?;
        users.extend(project.key_version_users(cmk, version)?);
    }
    if !users.is_empty() {
        let shown: Vec<_> = users.iter().take(10).cloned().collect();
        return Err(Error::InvalidKeyState(format!(
            "version {version} of key {cmk} is still needed by {} item(s), e.g. {}; rewrap the projects and expire older snapshots first",
            users.len(),
            shown.join(", ")
        )));
    }
    keys.kms.destroy_version(cmk, version)?;
    Ok(())
}

impl Project {
    /// Changes the project's encryption settings (turn encryption on or off, change the key or the
    /// algorithm): every file of every table is rewritten under the new settings and committed,
    /// then every snapshot that still references an old file is expired and the old files are
    /// removed, so nothing stays readable through a table under the old settings.
    ///
    /// Crash-safe and resumable: the settings first record the migration (readers accept both the
    /// old and the new settings meanwhile), each table moves in one commit and loses its old files
    /// only after that commit, and running `migrate` again with the same target finishes the job.
    pub fn migrate(&self, target: crate::project::ProjectSettings, progress: Progress<'_>) -> Result<Project> {
        let cur = self.settings().clone();
        // Before anything changes (or a key is created): the column keys must survive the move.
        let target_cmk = match &target.encryption {
            None => None,
            Some(enc) => match &enc.key {
                crate::project::KeyChoice::Byok(id) => Some(Some(id)),
                // The project's key, or a key created for it: never a column's key.
                crate::project::KeyChoice::ProjectDefault => None,
            },
        };
        if target.encryption.is_none() || target_cmk.is_some() {
            self.check_column_keys_survive(target_cmk.flatten())?;
        }
        let source = cur.migrating_from.clone().unwrap_or((cur.algorithm, cur.cmk.clone()));
        let mut next = cur.clone();
        match &target.encryption {
            None => {
                next.algorithm = crate::crypto::Algorithm::None;
                next.cmk = None;
                next.kms = String::new();
                next.default_key = false;
                next.allow_legacy_rc4 = false;
            }
            Some(enc) => {
                if enc.algorithm == crate::crypto::Algorithm::None {
                    return Err(Error::InvalidArgument(
                        "encryption on needs an algorithm other than none".into(),
                    ));
                }
                if enc.algorithm.is_legacy() && !enc.allow_legacy_rc4 {
                    return Err(Error::LegacyAlgorithmRefused);
                }
                let (cmk, default_key) = match &enc.key {
                    crate::project::KeyChoice::ProjectDefault if cur.default_key && cur.cmk.is_some() => {
                        (cur.cmk.clone(), true)
                    }
                    crate::project::KeyChoice::ProjectDefault => {
                        let req = crate::kms::CreateKeyRequest::project_default(self.principal().clone());
                        (Some(self.keys().kms.create_key(req)?.id), true)
                    }
                    crate::project::KeyChoice::Byok(id) => (Some(id.clone()), false),
                };
                next.algorithm = enc.algorithm;
                next.cmk = cmk;
                next.kms = self.keys().kms.name().to_string();
                next.default_key = default_key;
                next.allow_legacy_rc4 = enc.allow_legacy_rc4;
            }
        }
        if cur.migrating_from.is_none() {
            next.generation += 1;
        }
        next.migrating_from = Some(source);
        // The catalog records the migration first (readers then accept both settings), then each
        // table moves, then the catalog records the end.
        let mid = self.store_settings(next.clone())?;
        for name in mid.list_tables()? {
            mid.table(&name)?.migrate_files(progress)?;
        }
        next.migrating_from = None;
        mid.store_settings(next)
    }
}

impl Project {
    /// Refuses a migration to `next` that a table's column keys could not survive: to no
    /// encryption (there would be no key to keep a column under), or to a project key that is a
    /// column's own key (the column would no longer be apart). Checked before anything changes.
    fn check_column_keys_survive(&self, target_cmk: Option<&crate::kms::KeyId>) -> Result<()> {
        for rec in self.catalog().list_tables(self.project_id())? {
            for k in &rec.column_keys {
                let problem = match target_cmk {
                    None => crate::ColumnKeyProblem::ProjectNotEncrypted,
                    Some(cmk) if *cmk == k.cmk => crate::ColumnKeyProblem::ProjectKey,
                    Some(_) => continue,
                };
                return Err(Error::InvalidColumnKey {
                    column: format!("{}.{}", rec.name, k.column),
                    problem,
                });
            }
        }
        Ok(())
    }
}

impl Table {
    /// Rewrites every file not written under the project's current settings, commits, expires the
    /// older snapshots and removes the old files.
    fn migrate_files(&self, progress: Progress<'_>) -> Result<()> {
        let s = self.project.settings();
        let head = self.head()?;
        let target_alg = s.algorithm;
        let target_key = s.cmk.clone();
        let stale = |f: &FileRef| head.algorithm != target_alg || f.key_ids.first() != target_key.as_ref();
        let total = head.files.len() as u64;
        let mut files = Vec::with_capacity(head.files.len());
        for (i, f) in head.files.iter().enumerate() {
            progress(&format!("migrate {}", self.name), i as u64, total);
            if stale(f) {
                let batches = self.read_checked_file(f, &head)?;
                files.extend(self.write_files(&head.schema, batches)?);
            } else {
                files.push(f.clone());
            }
        }
        progress(&format!("migrate {}", self.name), total, total);
        let base: Vec<String> = head.files.iter().map(|f| f.name.clone()).collect();
        let m = self.commit("migrate", |h| {
            let names: Vec<String> = h.files.iter().map(|f| f.name.clone()).collect();
            if names != base {
                return Err(Error::InvalidArgument(format!(
                    "table {} changed during the migration; run it again",
                    self.name
                )));
            }
            let mut next = h.clone();
            next.files = files.clone();
            next.algorithm = target_alg;
            Ok(next)
        })?;
        self.expire_snapshots(m.version)?;
        self.vacuum(std::time::Duration::ZERO)?;
        Ok(())
    }
}
