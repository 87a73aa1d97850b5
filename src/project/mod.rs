//! Projects: a location holding tables, registered in the catalog, with encryption settings chosen
//! at creation. The catalog holds what readers expect (the project id, the encryption policy, the
//! settings' generation and digest); the settings file on storage is a sealed copy checked against
//! it ([`settings`]).

mod handle;
mod register;
pub(crate) mod settings;

use std::fmt;
use std::sync::Arc;

use crate::crypto::Algorithm;
use crate::error::{Error, Result};
use crate::kms::{KeyCache, KeyId, KmsAdmin};

pub use handle::Project;
pub use register::RegisterReport;

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

/// A fresh random project id (32 hex digits), for [`Project::create_with_id`] when a
/// bring-your-own key must be granted to the project before it is created.
pub fn new_project_id() -> Result<String> {
    crate::catalog::new_id()
}

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
