//! An open project: created or opened through the catalog, its settings checked against it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use super::settings::{self, mac, SettingsFile, LEGACY_FILE};
use super::{validate_name, KeyChoice, Keys, ProjectSettings, StoredSettings};
use crate::access::KeyAccess;
use crate::catalog::{anchor_kms, new_id, Catalog, EncryptionPolicy, ProjectRecord};
use crate::crypto::{ct_eq, derive_key, Algorithm, Purpose};
use crate::error::{Error, Result};
use crate::kms::{CreateKeyRequest, DataKeyEnvelope, Principal};
use crate::storage::{Location, Storage};

/// A project: its location, its settings (checked against the catalog), the catalog and key
/// access. Cheap to clone.
#[derive(Clone)]
pub struct Project {
    /// The project's location as a path: its directory when local, else its URL.
    pub(super) dir: PathBuf,
    /// Where its objects are.
    pub(super) storage: Storage,
    pub(super) settings: StoredSettings,
    pub(super) keys: Keys,
    principal: Principal,
    catalog: Arc<dyn Catalog>,
}

impl fmt::Debug for Project {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Project")
            .field("dir", &self.dir)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    UNIX_EPOCH.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The catalog's record of a project with `settings` at `dir`.
pub(crate) fn record_of(settings: &StoredSettings, location: &str) -> ProjectRecord {
    ProjectRecord {
        project_id: settings.project_id.clone(),
        name: settings.name.clone(),
        location: location.to_string(),
        kms: settings.kms.clone(),
        policy: EncryptionPolicy {
            algorithm: settings.algorithm,
            cmk: settings.cmk.clone(),
            migrating_from: settings.migrating_from.clone(),
        },
        generation: settings.generation,
        settings_digest: settings.digest(),
        created_ms: settings.created_ms,
    }
}

/// Whether `location` is missing or holds nothing (an empty directory, an empty prefix).
fn is_empty_location(location: &Location) -> Result<bool> {
    if let Some(dir) = location.local_dir() {
        return match std::fs::read_dir(dir) {
            Ok(mut rd) => Ok(rd.next().is_none()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(Error::io(format!("reading {}", dir.display()), e)),
        };
    }
    Ok(Storage::at(location.clone(), false)?.list("")?.is_empty())
}

/// A path or URL given as a path: its text.
pub(crate) fn location_text(dir: &Path) -> Result<&str> {
    dir.to_str()
        .ok_or_else(|| Error::InvalidArgument(format!("{} is not valid UTF-8", dir.display())))
}

impl Project {
    /// A project handle over `settings` at `dir` (nothing checked yet).
    pub(super) fn assemble(
        storage: Storage,
        settings: StoredSettings,
        keys: Keys,
        catalog: Arc<dyn Catalog>,
    ) -> Result<Project> {
        Ok(Project {
            dir: PathBuf::from(storage.url()),
            storage,
            principal: Principal::new(&settings.project_id)?,
            settings,
            keys,
            catalog,
        })
    }

    /// Creates a project named `name` in the empty or missing directory `dir` and registers it in
    /// `catalog`; the registration is the commit point, so a failure before it leaves nothing
    /// behind (no settings file, no directory it created, no default key).
    ///
    /// With [`KeyChoice::ProjectDefault`] a CMK is created for it in the KMS; with
    /// [`KeyChoice::Byok`] the key's owner must already have granted the project use of the key
    /// (grants name the project's immutable id, see [`Project::project_id`]), or creation fails with
    /// [`Error::AccessDenied`].
    pub fn create(
        catalog: &Arc<dyn Catalog>,
        dir: impl AsRef<Path>,
        name: &str,
        settings: ProjectSettings,
        keys: Keys,
    ) -> Result<Project> {
        let project_id = new_id()?;
        Self::create_with_id(catalog, dir, name, settings, keys, project_id)
    }

    /// [`Project::create`] with a project id chosen beforehand (so that a bring-your-own key can be
    /// granted to it before the project exists). The id must be 32 lowercase hex digits, random, and
    /// used for nothing else.
    pub fn create_with_id(
        catalog: &Arc<dyn Catalog>,
        dir: impl AsRef<Path>,
        name: &str,
        settings: ProjectSettings,
        keys: Keys,
        project_id: String,
    ) -> Result<Project> {
        validate_name(name)?;
        crate::catalog::check_id(&project_id, "project")
            .map_err(|_| Error::InvalidArgument("a project id is 32 lowercase hex digits".into()))?;
        // The catalog records where the project lives: an absolute path or a URL.
        let location = Location::parse(location_text(dir.as_ref())?)?;
        if catalog.project(name)?.is_some() {
            return Err(Error::AlreadyExists {
                kind: "project",
                name: name.to_string(),
            });
        }
        if !is_empty_location(&location)? {
            return Err(Error::InvalidArgument(format!(
                "{} is not empty: a project is created in a new or empty directory (or prefix)",
                location.to_url()
            )));
        }
        anchor_kms(catalog.as_ref(), keys.kms.as_ref())?;
        let principal = Principal::new(&project_id)?;
        let (algorithm, cmk, default_key, rc4) = match &settings.encryption {
            None => (Algorithm::None, None, false, false),
            Some(enc) => {
                if enc.algorithm == Algorithm::None {
                    return Err(Error::InvalidArgument(
                        "encryption on needs an algorithm other than none".into(),
                    ));
                }
                if enc.algorithm.is_legacy() && !enc.allow_legacy_rc4 {
                    return Err(Error::LegacyAlgorithmRefused);
                }
                match &enc.key {
                    KeyChoice::ProjectDefault => {
                        let meta = keys
                            .kms
                            .create_key(CreateKeyRequest::project_default(principal.clone()))?;
                        (enc.algorithm, Some(meta.id), true, enc.allow_legacy_rc4)
                    }
                    KeyChoice::Byok(id) => (enc.algorithm, Some(id.clone()), false, enc.allow_legacy_rc4),
                }
            }
        };
        let stored = StoredSettings {
            name: name.to_string(),
            project_id,
            algorithm,
            kms: if cmk.is_some() {
                keys.kms.name().to_string()
            } else {
                String::new()
            },
            cmk,
            default_key,
            allow_legacy_rc4: rc4,
            created_ms: now_ms(),
            generation: 0,
            migrating_from: None,
        };
        let created_dir = location.local_dir().is_some_and(|d| !d.exists());
        let storage = Storage::at(location, true)?;
        let project = Project {
            dir: PathBuf::from(storage.url()),
            storage,
            settings: stored,
            keys: keys.clone(),
            principal,
            catalog: catalog.clone(),
        };
        let result = project.create_storage_and_register();
        if result.is_err() {
            // All or nothing: remove what this call made, and the key it created for the project.
            let _ = project.storage.delete(&settings::file_name(&project.settings.digest()));
            if let Some(dir) = project.storage.local_dir() {
                let _ = std::fs::remove_dir(dir.join("tables"));
                if created_dir {
                    let _ = std::fs::remove_dir(&dir);
                }
            }
            if project.settings.default_key {
                if let Some(cmk) = &project.settings.cmk {
                    let _ = keys.kms.schedule_deletion(cmk, 7);
                }
            }
        }
        result.map(|()| project)
    }

    fn create_storage_and_register(&self) -> Result<()> {
        // Sealing the settings asks the KMS for a key under the CMK: for a BYOK key without a grant
        // this is where creation is refused, before anything appears on storage.
        let bytes = self.seal_settings()?;
        if let Some(dir) = self.storage.local_dir() {
            std::fs::create_dir_all(dir.join("tables"))
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        if !self
            .storage
            .put_new(&settings::file_name(&self.settings.digest()), bytes.into())?
        {
            return Err(Error::InvalidArgument(format!(
                "{} already holds a project",
                self.storage.url()
            )));
        }
        self.catalog
            .create_project(&record_of(&self.settings, &self.storage.url()), &[])
    }

    /// The settings file's bytes, sealed (encrypted projects) or checksummed.
    pub(crate) fn seal_settings(&self) -> Result<Vec<u8>> {
        let body = self.settings.encode_body();
        match &self.settings.cmk {
            None => Ok(SettingsFile::encode(&body, 0, &[], blake3::hash(&body).as_bytes())),
            Some(cmk) => {
                let access = self.access("");
                let (key, env) = access.new_aux_key(cmk, "settings").map_err(|e| self.byok_hint(e))?;
                let mac_key = derive_key(&key, Purpose::SettingsMac, &[self.settings.project_id.as_bytes()])?;
                Ok(SettingsFile::encode(
                    &body,
                    1,
                    &env.to_bytes(),
                    &mac(mac_key.expose(), &body),
                ))
            }
        }
    }

    fn byok_hint(&self, e: Error) -> Error {
        match e {
            // The error's message ends with the grant command for this project's id: said once.
            Error::AccessDenied { key, .. } => Error::AccessDenied {
                principal: format!("project {} ({})", self.settings.project_id, self.settings.name),
                key,
            },
            other => other,
        }
    }

    /// Opens the project named `name`: its location, id and encryption policy come from the
    /// catalog, and the settings file found there must be the one the catalog records. A plaintext
    /// or weaker settings file in a project the catalog records as encrypted is
    /// [`Error::Downgrade`]; an older one is [`Error::SettingsRollback`]; one of another project or
    /// forged is [`Error::Integrity`].
    pub fn open(catalog: &Arc<dyn Catalog>, name: &str, keys: Keys) -> Result<Project> {
        let record = catalog.project(name)?.ok_or_else(|| Error::NotRegistered {
            kind: "project",
            name: name.to_string(),
            hint: format!(
                " in catalog {}; create it, or adopt an existing project directory with `colvault project register DIR`",
                catalog.describe()
            ),
        })?;
        anchor_kms(catalog.as_ref(), keys.kms.as_ref())?;
        Self::open_record(catalog, &record, keys)
    }

    /// Opens the project with `record` (already read from `catalog`).
    pub(crate) fn open_record(catalog: &Arc<dyn Catalog>, record: &ProjectRecord, keys: Keys) -> Result<Project> {
        let storage = Storage::open(&record.location, false)?;
        let raw = read_settings_file(&storage, &record.settings_digest)?;
        let file = SettingsFile::parse(&raw)?;
        let settings = StoredSettings::decode_body(file.body)?;
        check_against_record(&settings, record)?;
        if settings.cmk.is_some() && settings.kms != keys.kms.name() {
            return Err(Error::InvalidArgument(format!(
                "project {} keeps its keys in KMS {:?}, but the KMS selected is {:?}; select {:?} (--kms / COLVAULT_KMS)",
                settings.name,
                settings.kms,
                keys.kms.name(),
                settings.kms
            )));
        }
        let project = Project {
            dir: PathBuf::from(storage.url()),
            storage,
            principal: Principal::new(&settings.project_id)?,
            settings,
            keys,
            catalog: catalog.clone(),
        };
        project.verify_seal(&file)?;
        Ok(project)
    }

    /// Checks the settings file's own authentication (MAC under a key from the CMK, or checksum).
    pub(crate) fn verify_seal(&self, file: &SettingsFile<'_>) -> Result<()> {
        let ok = match (file.kind, &self.settings.cmk) {
            (0, None) => ct_eq(blake3::hash(file.body).as_bytes(), &file.tag),
            (1, Some(_)) => {
                let env = DataKeyEnvelope::from_bytes(file.envelope)?;
                if Some(env.key_id()) != self.settings.cmk.as_ref() {
                    return Err(Error::integrity("project settings (key reference)"));
                }
                let key = self.access("").open_aux_key(&env, "settings")?;
                let mac_key = derive_key(&key, Purpose::SettingsMac, &[self.settings.project_id.as_bytes()])?;
                ct_eq(&mac(mac_key.expose(), file.body), &file.tag)
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::integrity(format!("project settings in {}", self.dir.display())))
        }
    }

    /// Writes `next` as the project's new settings and swaps the catalog's record to them
    /// (compare-and-swap on the current generation and digest). The new settings file is written
    /// beside the old one first, so a crash before the swap leaves the project as it was.
    pub(crate) fn store_settings(&self, next: StoredSettings) -> Result<Project> {
        let updated = Project {
            settings: next,
            ..self.clone()
        };
        let bytes = updated.seal_settings()?;
        let digest = updated.settings.digest();
        self.storage.put(&settings::file_name(&digest), bytes.into())?;
        let expected = record_of(&self.settings, &self.storage.url());
        let new = record_of(&updated.settings, &self.storage.url());
        if expected != new && !self.catalog.update_project(&expected, &new)? {
            return Err(Error::InvalidArgument(format!(
                "the settings of project {} changed in the catalog meanwhile; reopen the project and try again",
                self.settings.name
            )));
        }
        Ok(updated)
    }

    /// Re-seals the (unchanged) settings under a fresh key from the CMK's current version.
    pub(crate) fn reseal_settings(&self) -> Result<()> {
        let bytes = self.seal_settings()?;
        self.storage
            .put(&settings::file_name(&self.settings.digest()), bytes.into())
    }

    /// Drops the project: its registration (and its tables') is removed from the catalog, the
    /// commit point, then its directory. Its keys are left to the KMS's administrator (a default
    /// key may be scheduled for deletion to shred the data).
    pub fn drop_project(self) -> Result<()> {
        self.catalog.drop_project(&self.settings.project_id)?;
        self.storage.delete_all("")
    }

    /// The CMK version the settings' MAC key is wrapped under.
    pub(crate) fn settings_key_version(&self) -> Result<Option<u32>> {
        let raw = read_settings_file(&self.storage, &self.settings.digest())?;
        let file = SettingsFile::parse(&raw)?;
        if file.envelope.is_empty() {
            return Ok(None);
        }
        Ok(Some(DataKeyEnvelope::from_bytes(file.envelope)?.key_version()))
    }

    /// The project's location as a path: its directory when it is local; for a project on an
    /// object store, its URL (see [`Project::storage`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Where the project's objects are.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// The project's location as the catalog records it: an absolute path or a URL.
    pub fn location(&self) -> String {
        self.storage.url()
    }
    /// The authenticated settings (equal to what the catalog records).
    pub fn settings(&self) -> &StoredSettings {
        &self.settings
    }
    /// The project's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }
    /// The project's immutable random id: its principal in the KMS.
    pub fn project_id(&self) -> &str {
        &self.settings.project_id
    }
    /// The key services.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    /// The catalog the project is registered in.
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }
    /// The project's principal in the KMS: its immutable id, never its name (a new project that
    /// reuses a name gets none of the old one's grants).
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Key access for table `table_id` of this project.
    pub fn access(&self, table_id: &str) -> KeyAccess {
        KeyAccess::new(
            self.keys.cache.clone(),
            self.principal.clone(),
            self.settings.project_id.clone(),
            table_id,
        )
    }

    /// The directory that holds the tables.
    pub fn tables_dir(&self) -> PathBuf {
        self.dir.join("tables")
    }
}

/// Reads the settings file with body digest `digest` (by its content name; adopted projects keep
/// `project.cv`).
fn read_settings_file(storage: &Storage, digest: &[u8; 32]) -> Result<Vec<u8>> {
    if let Some(raw) = storage.get(&settings::file_name(digest))? {
        return Ok(raw.to_vec());
    }
    match storage.get(LEGACY_FILE)? {
        Some(raw) => Ok(raw.to_vec()),
        None => Err(Error::integrity(format!(
            "project settings in {} (the settings file the catalog records is missing)",
            storage.url()
        ))),
    }
}

/// Compares settings read from storage with the catalog's record, before any key is used.
fn check_against_record(s: &StoredSettings, r: &ProjectRecord) -> Result<()> {
    let found = EncryptionPolicy {
        algorithm: s.algorithm,
        cmk: s.cmk.clone(),
        migrating_from: s.migrating_from.clone(),
    };
    let weaker = (r.policy.cmk.is_some() && s.cmk.is_none())
        || (r.policy.algorithm != Algorithm::None && s.algorithm == Algorithm::None)
        || (!r.policy.algorithm.is_legacy() && s.algorithm.is_legacy());
    if weaker {
        return Err(Error::Downgrade {
            project: r.name.clone(),
            expected: r.policy.describe(),
            found: found.describe(),
        });
    }
    if s.project_id != r.project_id || s.name != r.name {
        return Err(Error::integrity(format!(
            "project settings in {} (they belong to another project)",
            r.location
        )));
    }
    let digest = s.digest();
    if s.generation < r.generation || (s.generation == r.generation && digest != r.settings_digest) {
        return Err(Error::SettingsRollback {
            project: r.name.clone(),
            expected: format!("{} ({})", r.generation, r.policy.describe()),
            found: format!("{} ({})", s.generation, found.describe()),
        });
    }
    if digest != r.settings_digest {
        return Err(Error::integrity(format!(
            "project settings in {} (not the settings the catalog records)",
            r.location
        )));
    }
    Ok(())
}
