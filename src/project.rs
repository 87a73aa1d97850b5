//! Projects: a directory of tables with encryption settings chosen at creation and authenticated.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::access::KeyAccess;
use crate::codec::{Decoder, Encoder};
use crate::crypto::{ct_eq, derive_key, random_array, Algorithm, Purpose};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::kms::{CreateKeyRequest, DataKeyEnvelope, KeyCache, KeyId, KmsAdmin, Principal};

/// Which CMK protects a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChoice {
    /// A key created in the KMS for this project, granted to it.
    ProjectDefault,
    /// A key the user created (bring your own key); its owner must have granted the project use of it.
    Byok(KeyId),
}

/// A project's encryption setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptionSettings {
    /// The algorithm of every file.
    pub algorithm: Algorithm,
    /// The key.
    pub key: KeyChoice,
    /// Whether RC4 may be written (legacy, RFC 7465).
    pub allow_legacy_rc4: bool,
}

/// Settings given when a project is created.
///
/// ```
/// use colvault::project::{KeyChoice, ProjectSettings};
/// use colvault::Algorithm;
/// let s = ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault);
/// assert!(s.encryption.is_some());
/// assert!(ProjectSettings::plaintext().encryption.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectSettings {
    /// `None`: no encryption (checksums only).
    pub encryption: Option<EncryptionSettings>,
}

impl ProjectSettings {
    /// No encryption.
    pub fn plaintext() -> Self {
        ProjectSettings { encryption: None }
    }
    /// Encryption with `algorithm` under `key`.
    pub fn encrypted(algorithm: Algorithm, key: KeyChoice) -> Self {
        ProjectSettings {
            encryption: Some(EncryptionSettings {
                algorithm,
                key,
                allow_legacy_rc4: false,
            }),
        }
    }
    /// Allows RC4 (needed to create an RC4 project).
    pub fn allow_legacy_rc4(mut self) -> Self {
        if let Some(e) = &mut self.encryption {
            e.allow_legacy_rc4 = true;
        }
        self
    }
}

/// The key services a project uses: the KMS (administration, for default keys) and the KEK cache.
#[derive(Clone)]
pub struct Keys {
    /// The KMS.
    pub kms: Arc<dyn KmsAdmin>,
    /// The KEK cache in front of it.
    pub cache: Arc<KeyCache>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("kms", &self.kms.name())
            .finish_non_exhaustive()
    }
}

/// The stored, authenticated settings of a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSettings {
    /// The project's name (its principal in the KMS).
    pub name: String,
    /// Random, immutable.
    pub project_id: String,
    /// The algorithm (`none` when encryption is off).
    pub algorithm: Algorithm,
    /// The KMS name and CMK, when encrypted.
    pub kms: String,
    /// The CMK, when encrypted.
    pub cmk: Option<KeyId>,
    /// Whether the CMK was created for the project.
    pub default_key: bool,
    /// Whether RC4 may be written.
    pub allow_legacy_rc4: bool,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Increases with every settings migration.
    pub generation: u64,
    /// While a migration is under way: the algorithm and CMK being migrated from, which readers
    /// still accept for data not yet rewritten.
    pub migrating_from: Option<(Algorithm, Option<KeyId>)>,
}

const SETTINGS_FILE: &str = "project.cv";
const SETTINGS_MAGIC: [u8; 4] = *b"CVPJ";
const SETTINGS_VERSION: u8 = 1;

/// Checks a project name: 3 to 27 characters, a letter first, then letters, digits, underscores.
pub fn validate_name(name: &str) -> Result<()> {
    check_identifier(name, "project", 3, 27)
}

/// Checks a name of `kind` (project, table): `min` to `max` characters, a letter first, then ASCII
/// letters, digits and underscores.
pub(crate) fn check_identifier(name: &str, kind: &str, min: usize, max: usize) -> Result<()> {
    let ok = (min..=max).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid {kind} name {name:?}: a {kind} name is {min} to {max} characters, starts with a letter, and holds only letters, digits and underscores"
        )))
    }
}

impl StoredSettings {
    fn encode_body(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.raw(&SETTINGS_MAGIC).u8(SETTINGS_VERSION);
        e.str(&self.name)
            .str(&self.project_id)
            .u8(self.algorithm.id())
            .str(&self.kms);
        e.str(self.cmk.as_ref().map(|k| k.as_str()).unwrap_or(""));
        e.u8(self.default_key as u8)
            .u8(self.allow_legacy_rc4 as u8)
            .u64(self.created_ms)
            .u64(self.generation);
        match &self.migrating_from {
            None => e.u8(0),
            Some((alg, cmk)) => e.u8(1).u8(alg.id()).str(cmk.as_ref().map(|k| k.as_str()).unwrap_or("")),
        };
        e.finish()
    }

    fn decode_body(d: &mut Decoder<'_>) -> Result<Self> {
        if d.array::<4>()? != SETTINGS_MAGIC {
            return Err(Error::NotColvault("not a colvault project settings file".into()));
        }
        let v = d.u8()?;
        if v != SETTINGS_VERSION {
            return Err(Error::UnsupportedVersion {
                found: v.to_string(),
                supported: SETTINGS_VERSION,
            });
        }
        let name = d.str(27)?.to_string();
        let project_id = d.str(64)?.to_string();
        let algorithm = Algorithm::from_id(d.u8()?)?;
        let kms = d.str(64)?.to_string();
        let cmk = d.str(64)?;
        let cmk = if cmk.is_empty() { None } else { Some(KeyId::new(cmk)?) };
        let default_key = d.u8()? != 0;
        let allow_legacy_rc4 = d.u8()? != 0;
        let created_ms = d.u64()?;
        let generation = d.u64()?;
        let migrating_from = match d.u8()? {
            0 => None,
            1 => {
                let alg = Algorithm::from_id(d.u8()?)?;
                let k = d.str(64)?;
                Some((alg, if k.is_empty() { None } else { Some(KeyId::new(k)?) }))
            }
            f => return Err(Error::malformed("project settings", format!("migration flag {f}"))),
        };
        Ok(StoredSettings {
            name,
            project_id,
            algorithm,
            kms,
            cmk,
            default_key,
            allow_legacy_rc4,
            created_ms,
            generation,
            migrating_from,
        })
    }
}

fn mac(key: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = zeroize::Zeroizing::new(blake3::Hasher::new_keyed(key));
    h.update(&(body.len() as u64).to_be_bytes()).update(body);
    *h.finalize().as_bytes()
}

/// A project: its directory, authenticated settings and key access.
#[derive(Clone)]
pub struct Project {
    dir: PathBuf,
    settings: StoredSettings,
    keys: Keys,
    principal: Principal,
}

impl fmt::Debug for Project {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Project")
            .field("dir", &self.dir)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Project {
    /// Creates a project named `name` in the empty or missing directory `dir`.
    ///
    /// With [`KeyChoice::ProjectDefault`] a CMK is created for it in the KMS; with
    /// [`KeyChoice::Byok`] the key's owner must already have granted the project (by name) use of
    /// the key, or creation fails with [`Error::AccessDenied`].
    pub fn create(dir: impl AsRef<Path>, name: &str, settings: ProjectSettings, keys: Keys) -> Result<Project> {
        validate_name(name)?;
        let dir = dir.as_ref().to_path_buf();
        if dir.join(SETTINGS_FILE).exists() {
            return Err(Error::InvalidArgument(format!(
                "{} already holds a project",
                dir.display()
            )));
        }
        let principal = Principal::new(name)?;
        let project_id: String = random_array::<16>()?.iter().map(|b| format!("{b:02x}")).collect();
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
            created_ms: UNIX_EPOCH.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0),
            generation: 0,
            migrating_from: None,
        };
        let project = Project {
            dir,
            settings: stored,
            keys,
            principal,
        };
        // Sealing the settings asks the KMS for a key under the CMK: for a BYOK key without a grant
        // this is where creation is refused.
        let bytes = project.seal_settings()?;
        // Only now, with the key usable, does anything appear on storage.
        let dir = &project.dir;
        std::fs::create_dir_all(dir.join("tables")).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        if !fsutil::write_new_atomic(&dir.join(SETTINGS_FILE), &bytes)? {
            return Err(Error::InvalidArgument(format!(
                "{} already holds a project",
                dir.display()
            )));
        }
        Ok(project)
    }

    fn seal_settings(&self) -> Result<Vec<u8>> {
        let body = self.settings.encode_body();
        let mut e = Encoder::new();
        e.bytes(&body);
        match &self.settings.cmk {
            None => {
                let mut h = blake3::Hasher::new();
                h.update(&body);
                e.u8(0).bytes(&[]).raw(h.finalize().as_bytes());
            }
            Some(cmk) => {
                let access = self.access("");
                let (key, env) = access.new_aux_key(cmk, "settings").map_err(|e| self.byok_hint(e))?;
                let mac_key = derive_key(&key, Purpose::SettingsMac, &[self.settings.project_id.as_bytes()])?;
                e.u8(1).bytes(&env.to_bytes()).raw(&mac(mac_key.expose(), &body));
            }
        }
        Ok(e.finish())
    }

    fn byok_hint(&self, e: Error) -> Error {
        match e {
            Error::AccessDenied { key, .. } => Error::AccessDenied {
                principal: format!(
                    "project {} (grant it first: colvault kms grant {key} {})",
                    self.settings.name, self.settings.name
                ),
                key,
            },
            other => other,
        }
    }

    /// Opens a project and checks the authentication of its settings.
    pub fn open(dir: impl AsRef<Path>, keys: Keys) -> Result<Project> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(SETTINGS_FILE);
        let raw = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut d = Decoder::new(&raw, "project settings");
        let body = d.bytes(4096)?;
        let kind = d.u8()?;
        let env = d.bytes(4096)?;
        let tag: [u8; 32] = d.array()?;
        d.finish()?;
        let settings = StoredSettings::decode_body(&mut Decoder::new(body, "project settings"))?;
        let principal = Principal::new(&settings.name)?;
        let project = Project {
            dir,
            settings,
            keys,
            principal,
        };
        let ok = match (kind, &project.settings.cmk) {
            (0, None) => ct_eq(blake3::hash(body).as_bytes(), &tag),
            (1, Some(_)) => {
                let env = DataKeyEnvelope::from_bytes(env)?;
                if Some(env.key_id()) != project.settings.cmk.as_ref() {
                    return Err(Error::integrity("project settings (key reference)"));
                }
                let key = project.access("").open_aux_key(&env, "settings")?;
                let mac_key = derive_key(&key, Purpose::SettingsMac, &[project.settings.project_id.as_bytes()])?;
                ct_eq(&mac(mac_key.expose(), body), &tag)
            }
            _ => false,
        };
        if !ok {
            return Err(Error::integrity(format!("project settings {}", path.display())));
        }
        Ok(project)
    }

    /// This project with other settings (not stored).
    pub(crate) fn with_settings(&self, settings: StoredSettings) -> Project {
        Project {
            settings,
            ..self.clone()
        }
    }

    /// Re-seals the (unchanged) settings under a fresh key from the CMK's current version.
    pub(crate) fn reseal_settings(&self) -> Result<()> {
        let bytes = self.seal_settings()?;
        fsutil::replace_atomic(&self.dir.join(SETTINGS_FILE), &bytes)
    }

    /// The CMK version the settings' MAC key is wrapped under.
    pub(crate) fn settings_key_version(&self) -> Result<Option<u32>> {
        let path = self.dir.join(SETTINGS_FILE);
        let raw = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut d = Decoder::new(&raw, "project settings");
        d.bytes(4096)?;
        d.u8()?;
        let env = d.bytes(4096)?;
        if env.is_empty() {
            return Ok(None);
        }
        Ok(Some(DataKeyEnvelope::from_bytes(env)?.key_version()))
    }

    /// The project's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The authenticated settings.
    pub fn settings(&self) -> &StoredSettings {
        &self.settings
    }
    /// The key services.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    /// The project's principal in the KMS (its name).
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
