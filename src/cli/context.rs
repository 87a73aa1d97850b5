//! How the command line finds the keystore, its root secret and the KEK cache lifetime.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use colvault::catalog::{self, Catalog};
use colvault::config::Config;
use colvault::kms::select::{open_kms, KmsUrl};
use colvault::kms::{
    CacheOptions, CreateKeyRequest, EncryptionContext, KeyCache, KeyId, KeyMetadata, Kms, KmsAdmin, LocalKms,
    LocalKmsOptions, Principal, RootSecret, WrappedKey,
};
use colvault::project::{Keys, Project};

use super::error::{io_err, CliError, CliResult};

/// The environment variable holding the keystore's passphrase.
pub const PASSPHRASE_ENV: &str = "COLVAULT_PASSPHRASE";
/// The environment variable holding a new passphrase for `kms change-root-secret`.
pub const NEW_PASSPHRASE_ENV: &str = "COLVAULT_NEW_PASSPHRASE";

/// Where the keys are: options shared by every command.
#[derive(Args, Clone, Debug)]
pub struct KeyOpts {
    /// The keystore file of the local KMS [default: ~/.colvault/keystore]
    #[arg(
        long,
        global = true,
        env = "COLVAULT_KEYSTORE",
        value_name = "PATH",
        help_heading = "Keystore options"
    )]
    pub keystore: Option<PathBuf>,
    /// The root key file that seals the keystore, used when COLVAULT_PASSPHRASE is not set; created
    /// (mode 0600) together with a new keystore [default: ~/.colvault/root.key]
    #[arg(
        long,
        global = true,
        env = "COLVAULT_ROOT_KEY_FILE",
        value_name = "PATH",
        help_heading = "Keystore options"
    )]
    pub root_key_file: Option<PathBuf>,
    /// How long an unwrapped key-encryption key is cached in this process; 0 turns caching off
    /// [default: 600]
    #[arg(long, global = true, env = "COLVAULT_KEY_CACHE_SECONDS", value_name = "SECONDS", help_heading = "Keystore options",
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub key_cache_seconds: Option<u64>,
    /// The catalog, the trust anchor of projects and tables: sqlite:PATH or postgres://USER@HOST/DB
    /// [default: sqlite:catalog.db beside the keystore, i.e. ~/.colvault/catalog.db]
    #[arg(
        long,
        global = true,
        env = "COLVAULT_CATALOG",
        value_name = "URL",
        help_heading = "Keystore options"
    )]
    pub catalog: Option<String>,
    /// The KMS holding the keys: local (the keystore), pkcs11:module=PATH;token=LABEL, or aws-kms:
    /// (endpoint, region and static credentials from AWS_*) [default: `kms` in the configuration
    /// file ($COLVAULT_CONFIG, else ~/.colvault/config.toml), else local]
    #[arg(
        long,
        global = true,
        env = "COLVAULT_KMS",
        value_name = "URL",
        help_heading = "Keystore options"
    )]
    pub kms: Option<String>,
}

/// The open key services.
pub struct Ctx {
    /// The KMS: the local keystore, or (for a command that only reads, when there is no keystore)
    /// a stand-in that refuses every key operation, so plaintext projects stay readable.
    pub kms: Arc<dyn KmsAdmin>,
    /// The local keystore, when one was opened.
    local: Option<Arc<LocalKms>>,
    pub keys: Keys,
    pub keystore: PathBuf,
    pub catalog: Arc<dyn Catalog>,
    /// Set when no keystore exists and none was created: where colvault looked.
    missing: Option<Missing>,
    /// The KMS selected (--kms, COLVAULT_KMS, the configuration file, else local).
    pub selected: KmsUrl,
}

/// Where a command that only reads looked for a keystore and found none.
struct Missing {
    keystore: PathBuf,
    root_key_file: Option<PathBuf>,
}

impl Missing {
    fn error(&self, what: &str) -> CliError {
        let root = match &self.root_key_file {
            Some(f) => format!(" (root key file {})", f.display()),
            None => String::new(),
        };
        CliError::key(format!(
            "{what} needs keys, but there is no keystore at {}{root}: colvault looked at --keystore, else \
             COLVAULT_KEYSTORE, else ~/.colvault/keystore, and created nothing",
            self.keystore.display()
        ))
        .hint(
            "point --keystore / COLVAULT_KEYSTORE at the keystore the data was written with, and give its root \
             secret (COLVAULT_PASSPHRASE, or --root-key-file / COLVAULT_ROOT_KEY_FILE)",
        )
    }
}

/// The KMS of a command that only reads when no keystore exists: every key operation is refused
/// (as an unknown key), and nothing is created.
struct NoKeystore;

impl NoKeystore {
    fn refuse<T>(key: &str) -> colvault::Result<T> {
        Err(colvault::Error::UnknownKey { key: key.to_string() })
    }
}

impl Kms for NoKeystore {
    fn name(&self) -> &str {
        "local"
    }
    fn generate_data_key(
        &self,
        _: &Principal,
        key: &KeyId,
        _: &EncryptionContext,
    ) -> colvault::Result<(colvault::crypto::SecretKey, WrappedKey)> {
        Self::refuse(key.as_str())
    }
    fn decrypt_data_key(
        &self,
        _: &Principal,
        wrapped: &WrappedKey,
        _: &EncryptionContext,
    ) -> colvault::Result<colvault::crypto::SecretKey> {
        Self::refuse(wrapped.key_id().as_str())
    }
    fn rewrap(&self, _: &Principal, wrapped: &WrappedKey, _: &EncryptionContext) -> colvault::Result<WrappedKey> {
        Self::refuse(wrapped.key_id().as_str())
    }
}

impl KmsAdmin for NoKeystore {
    fn create_key(&self, _: CreateKeyRequest) -> colvault::Result<KeyMetadata> {
        Self::refuse("(new key)")
    }
    fn describe(&self, key: &KeyId) -> colvault::Result<KeyMetadata> {
        Self::refuse(key.as_str())
    }
    fn list(&self) -> colvault::Result<Vec<KeyMetadata>> {
        Ok(Vec::new())
    }
    fn enable(&self, key: &KeyId) -> colvault::Result<KeyMetadata> {
        Self::refuse(key.as_str())
    }
    fn disable(&self, key: &KeyId) -> colvault::Result<KeyMetadata> {
        Self::refuse(key.as_str())
    }
    fn schedule_deletion(&self, key: &KeyId, _: u32) -> colvault::Result<KeyMetadata> {
        Self::refuse(key.as_str())
    }
    fn cancel_deletion(&self, key: &KeyId) -> colvault::Result<KeyMetadata> {
        Self::refuse(key.as_str())
    }
    fn delete_key(&self, key: &KeyId) -> colvault::Result<KeyMetadata> {
        Self::refuse(key.as_str())
    }
    fn rotate(&self, key: &KeyId) -> colvault::Result<KeyMetadata> {
        Self::refuse(key.as_str())
    }
    fn destroy_version(&self, key: &KeyId, _: u32) -> colvault::Result<KeyMetadata> {
        Self::refuse(key.as_str())
    }
    fn grant(&self, key: &KeyId, _: &Principal) -> colvault::Result<KeyMetadata> {
        Self::refuse(key.as_str())
    }
    fn revoke(&self, key: &KeyId, _: &Principal) -> colvault::Result<KeyMetadata> {
        Self::refuse(key.as_str())
    }
}

fn home() -> CliResult<PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h)),
        _ => Err(
            CliError::usage("HOME is not set, so the default keystore location (~/.colvault) is unknown").hint(
                "pass --keystore PATH and --root-key-file PATH, or set COLVAULT_KEYSTORE and COLVAULT_ROOT_KEY_FILE",
            ),
        ),
    }
}

/// `~/.colvault`.
pub fn default_dir() -> CliResult<PathBuf> {
    Ok(home()?.join(".colvault"))
}

/// Creates a directory (and its parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> CliResult<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .map_err(|e| io_err(format!("creating {}", dir.display()), e))
}

/// A passphrase from the environment: `None` when the variable is unset or empty, an error when it
/// is set but not UTF-8 (so it is never mistaken for unset).
pub fn env_passphrase(var: &str) -> CliResult<Option<String>> {
    match std::env::var(var) {
        Ok(p) => Ok(Some(p).filter(|p| !p.is_empty())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(CliError::usage(format!(
            "{var} is set but is not valid UTF-8: a passphrase must be UTF-8 text"
        ))
        .hint(format!(
            "set {var} to the passphrase as UTF-8 text (or unset it to use the root key file)"
        ))),
    }
}

/// Reads a passphrase from the terminal without echo; `None` when stdin is not a terminal.
pub fn prompt_passphrase(prompt: &str) -> CliResult<Option<String>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let p = rpassword::prompt_password(prompt).map_err(|e| io_err("reading a passphrase from the terminal", e))?;
    Ok(Some(p))
}

impl KeyOpts {
    pub fn keystore_path(&self) -> CliResult<PathBuf> {
        match &self.keystore {
            Some(p) => Ok(p.clone()),
            None => Ok(default_dir()?.join("keystore")),
        }
    }

    pub fn root_key_path(&self) -> CliResult<PathBuf> {
        match &self.root_key_file {
            Some(p) => Ok(p.clone()),
            None => Ok(default_dir()?.join("root.key")),
        }
    }

    /// The configuration file's settings (none when there is no file).
    pub fn config(&self) -> CliResult<Config> {
        Ok(match Config::default_path() {
            Some(path) => Config::load(&path)?,
            None => Config::default(),
        })
    }

    /// The KMS selected: --kms / COLVAULT_KMS, else `kms` in the configuration file, else local.
    pub fn kms_url(&self) -> CliResult<KmsUrl> {
        let url = match &self.kms {
            Some(u) => u.clone(),
            None => self.config()?.kms.unwrap_or_else(|| "local".into()),
        };
        Ok(url.parse()?)
    }

    /// The catalog URL: --catalog / COLVAULT_CATALOG, else `catalog` in the configuration file,
    /// else `catalog.db` beside the keystore.
    pub fn catalog_url(&self) -> CliResult<String> {
        match self.catalog.clone().or(self.config()?.catalog) {
            Some(url) => Ok(url),
            None => {
                let ks = self.keystore_path()?;
                let dir = ks.parent().map(Path::to_path_buf).unwrap_or_default();
                Ok(format!("sqlite:{}", dir.join("catalog.db").display()))
            }
        }
    }

    /// Opens the catalog.
    pub fn open_catalog(&self) -> CliResult<Arc<dyn Catalog>> {
        Ok(catalog::open(&self.catalog_url()?)?)
    }

    pub fn cache_lifetime(&self) -> Duration {
        self.key_cache_seconds
            .map(Duration::from_secs)
            .unwrap_or(colvault::kms::DEFAULT_KEK_LIFETIME)
    }

    /// Opens the keystore, creating it (and, without a passphrase, its root key file) on first use.
    /// Notes about what was created go to stderr. Only key administration and project creation
    /// use this; every other command uses [`open_existing`](Self::open_existing).
    pub fn open(&self) -> CliResult<Ctx> {
        self.open_with_notes(&mut |n| eprintln!("note: {n}"))
    }

    /// Opens the keystore if it exists, and creates nothing. Without one, plaintext projects still
    /// open; anything that needs a key fails saying where colvault looked.
    pub fn open_existing(&self) -> CliResult<Ctx> {
        let selected = self.kms_url()?;
        if selected != KmsUrl::Local {
            return self.open_service(selected);
        }
        let path = self.keystore_path()?;
        if path.exists() {
            return self.open();
        }
        // A non-UTF-8 passphrase is reported even here, rather than silently ignored.
        let passphrase = env_passphrase(PASSPHRASE_ENV)?.is_some();
        let kms: Arc<dyn KmsAdmin> = Arc::new(NoKeystore);
        let cache = Arc::new(KeyCache::new(
            kms.clone(),
            CacheOptions::default().with_lifetime(self.cache_lifetime()),
        )?);
        Ok(Ctx {
            keys: Keys {
                kms: kms.clone(),
                cache,
            },
            kms,
            local: None,
            keystore: path.clone(),
            catalog: self.open_catalog()?,
            missing: Some(Missing {
                keystore: path,
                root_key_file: if passphrase { None } else { Some(self.root_key_path()?) },
            }),
            selected,
        })
    }

    /// Opens a KMS other than the local keystore (it holds its own state: nothing is created
    /// here).
    fn open_service(&self, selected: KmsUrl) -> CliResult<Ctx> {
        let kms = open_kms(&selected, || {
            Err(colvault::Error::InvalidArgument(
                "the local keystore is opened elsewhere".into(),
            ))
        })?;
        let cache = Arc::new(KeyCache::new(
            kms.clone(),
            CacheOptions::default().with_lifetime(self.cache_lifetime()),
        )?);
        let catalog = self.open_catalog()?;
        catalog::anchor_kms(catalog.as_ref(), kms.as_ref())?;
        Ok(Ctx {
            keys: Keys {
                kms: kms.clone(),
                cache,
            },
            kms,
            local: None,
            keystore: self.keystore_path()?,
            catalog,
            missing: None,
            selected,
        })
    }

    /// [`open`](Self::open), giving the notes to `note`.
    pub fn open_with_notes(&self, note: &mut dyn FnMut(String)) -> CliResult<Ctx> {
        let selected = self.kms_url()?;
        if selected != KmsUrl::Local {
            return self.open_service(selected);
        }
        let path = self.keystore_path()?;
        let exists = path.exists();
        let root = self.root_secret(&path, exists, note)?;
        let kms = if exists {
            LocalKms::open(&path, root, LocalKmsOptions::new())?
        } else {
            if let Some(parent) = path.parent() {
                create_private_dir(parent)?;
            }
            let kms = LocalKms::create(&path, root, LocalKmsOptions::new())?;
            note(format!("created keystore {}", path.display()));
            kms
        };
        let local = Arc::new(kms);
        let kms: Arc<dyn KmsAdmin> = local.clone();
        let cache = Arc::new(KeyCache::new(
            kms.clone(),
            CacheOptions::default().with_lifetime(self.cache_lifetime()),
        )?);
        let catalog = self.open_catalog()?;
        // The keystore must not be older than one the catalog has seen.
        catalog::anchor_kms(catalog.as_ref(), kms.as_ref())?;
        Ok(Ctx {
            keys: Keys {
                kms: kms.clone(),
                cache,
            },
            kms,
            local: Some(local),
            keystore: path,
            catalog,
            missing: None,
            selected,
        })
    }

    fn root_secret(&self, keystore: &Path, exists: bool, note: &mut dyn FnMut(String)) -> CliResult<RootSecret> {
        if let Some(p) = env_passphrase(PASSPHRASE_ENV)? {
            return Ok(RootSecret::passphrase(p));
        }
        let key_file = self.root_key_path()?;
        if key_file.exists() {
            return Ok(RootSecret::load_key_file(&key_file)?);
        }
        if !exists {
            if let Some(parent) = key_file.parent() {
                create_private_dir(parent)?;
            }
            let root = RootSecret::create_key_file(&key_file)?;
            note(format!(
                "created root key file {} (mode 0600): it seals the keystore, keep it safe and back it up",
                key_file.display()
            ));
            return Ok(root);
        }
        match prompt_passphrase(&format!("Passphrase for keystore {}: ", keystore.display()))? {
            Some(p) => Ok(RootSecret::passphrase(p)),
            None => Err(CliError::key(format!(
                "keystore {} exists but no root secret was given: COLVAULT_PASSPHRASE is not set and the root key \
                 file {} does not exist",
                keystore.display(),
                key_file.display()
            ))
            .hint(
                "set COLVAULT_PASSPHRASE to the keystore's passphrase, or point --root-key-file / \
                 COLVAULT_ROOT_KEY_FILE at its root key file",
            )),
        }
    }
}

impl Ctx {
    /// Opens a project given by name or by its directory, through the catalog.
    pub fn project(&self, name_or_dir: &Path) -> CliResult<Project> {
        let rec = self.find_project(name_or_dir)?;
        Project::open(&self.catalog, &rec.name, self.keys.clone())
            .map_err(|e| self.keys_error(e, &format!("project {}", rec.name)))
    }

    /// The catalog's record of a project given by name or by its directory.
    pub fn find_project(&self, name_or_dir: &Path) -> CliResult<colvault::catalog::ProjectRecord> {
        let arg = name_or_dir.to_string_lossy();
        if let Some(rec) = catalog::find_project(self.catalog.as_ref(), name_or_dir)? {
            return Ok(rec);
        }
        let looks_like_project = name_or_dir.join("project.cv").is_file()
            || std::fs::read_dir(name_or_dir).is_ok_and(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("project-"))
            });
        let err = CliError::other(format!(
            "{arg} is not a project registered in catalog {}",
            self.catalog.describe()
        ));
        Err(if looks_like_project {
            err.hint(format!(
                "{arg} holds a colvault project the catalog does not know: adopt it (trust on first use) with \
                 `colvault project register {arg}`, or point --catalog / COLVAULT_CATALOG at the catalog that holds it"
            ))
        } else {
            err.hint(
                "`colvault catalog list` shows the projects; create one with `colvault project create DIR --name NAME --encrypt`",
            )
        })
    }

    /// A library error, or, when no keystore exists and the error is a key the stand-in refused,
    /// the error that says where colvault looked for the keystore.
    pub fn keys_error(&self, e: colvault::Error, what: &str) -> CliError {
        match (&self.missing, &e) {
            (Some(m), colvault::Error::UnknownKey { .. }) => m.error(what),
            _ => e.into(),
        }
    }

    /// The local keystore (key administration opens it, creating it if needed).
    pub fn local(&self) -> CliResult<&Arc<LocalKms>> {
        match (&self.local, &self.missing) {
            (Some(l), _) => Ok(l),
            (None, Some(m)) => Err(m.error("this command")),
            (None, None) => Err(CliError::usage(format!(
                "this command works on the local keystore only, and the KMS selected is {} (--kms, COLVAULT_KMS or \
                 the configuration file)",
                self.selected
            ))
            .hint("select the local keystore with --kms local")),
        }
    }

    /// The KMS, for messages: the keystore's path, or the URL of another KMS.
    pub fn kms_description(&self) -> String {
        match self.selected {
            KmsUrl::Local => format!("keystore {}", self.keystore.display()),
            ref other => format!("KMS {other}"),
        }
    }

    /// A key id, or an alias resolved to its key id.
    pub fn resolve_key(&self, id_or_alias: &str) -> CliResult<KeyId> {
        if let Some(m) = &self.missing {
            return Err(m.error(&format!("key {id_or_alias}")));
        }
        let keys = self.kms.list()?;
        if let Some(k) = keys.iter().find(|k| k.id.as_str() == id_or_alias) {
            return Ok(k.id.clone());
        }
        if let Some(k) = keys.iter().find(|k| k.alias.as_deref() == Some(id_or_alias)) {
            return Ok(k.id.clone());
        }
        Err(CliError::key(format!(
            "unknown key {id_or_alias}: no key with this id or alias in {}",
            self.kms_description()
        ))
        .hint("`colvault kms list` shows the keys; check --keystore / COLVAULT_KEYSTORE"))
    }
}
