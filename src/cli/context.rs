//! How the command line finds the keystore, its root secret and the KEK cache lifetime.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use colvault::catalog::{self, Catalog};
use colvault::kms::{CacheOptions, KeyCache, KeyId, KmsAdmin, LocalKms, LocalKmsOptions, RootSecret};
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
}

/// The open control plane: key services and the catalog.
pub struct Ctx {
    pub kms: Arc<LocalKms>,
    pub keys: Keys,
    pub keystore: PathBuf,
    pub catalog: Arc<dyn Catalog>,
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

fn env_passphrase(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|p| !p.is_empty())
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

    /// The catalog URL: --catalog / COLVAULT_CATALOG, else `catalog.db` beside the keystore.
    pub fn catalog_url(&self) -> CliResult<String> {
        match &self.catalog {
            Some(url) => Ok(url.clone()),
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
    /// Notes about what was created go to stderr.
    pub fn open(&self) -> CliResult<Ctx> {
        self.open_with_notes(&mut |n| eprintln!("note: {n}"))
    }

    /// [`open`](Self::open), giving the notes to `note`.
    pub fn open_with_notes(&self, note: &mut dyn FnMut(String)) -> CliResult<Ctx> {
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
        let kms = Arc::new(kms);
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
            keystore: path,
            catalog,
        })
    }

    fn root_secret(&self, keystore: &Path, exists: bool, note: &mut dyn FnMut(String)) -> CliResult<RootSecret> {
        if let Some(p) = env_passphrase(PASSPHRASE_ENV) {
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
        Ok(Project::open(&self.catalog, &rec.name, self.keys.clone())?)
    }

    /// The catalog's record of a project given by name or by its directory.
    pub fn find_project(&self, name_or_dir: &Path) -> CliResult<colvault::catalog::ProjectRecord> {
        let arg = name_or_dir.to_string_lossy();
        if let Some(rec) = self.catalog.project(&arg)? {
            return Ok(rec);
        }
        let wanted = [std::path::absolute(name_or_dir).ok(), name_or_dir.canonicalize().ok()];
        for rec in self.catalog.list_projects()? {
            let loc = Path::new(&rec.location);
            if wanted.iter().flatten().any(|w| w == loc || loc.canonicalize().ok().as_deref() == Some(w)) {
                return Ok(rec);
            }
        }
        let looks_like_project = name_or_dir.join("project.cv").is_file()
            || std::fs::read_dir(name_or_dir).is_ok_and(|rd| {
                rd.flatten().any(|e| e.file_name().to_string_lossy().starts_with("project-"))
            });
        let err = CliError::other(format!(
            "{arg} is not a project registered in catalog {}",
            self.catalog.describe()
        ));
        Err(if looks_like_project {
            err.hint(format!(
                "{arg} holds a colvault project the catalog does not know: adopt it (trust on first use) with                  `colvault project register {arg}`, or point --catalog / COLVAULT_CATALOG at the catalog that holds it"
            ))
        } else {
            err.hint(
                "`colvault catalog list` shows the projects; create one with `colvault project create DIR --name NAME --encrypt`",
            )
        })
    }

    /// A key id, or an alias resolved to its key id.
    pub fn resolve_key(&self, id_or_alias: &str) -> CliResult<KeyId> {
        let keys = self.kms.list()?;
        if let Some(k) = keys.iter().find(|k| k.id.as_str() == id_or_alias) {
            return Ok(k.id.clone());
        }
        if let Some(k) = keys.iter().find(|k| k.alias.as_deref() == Some(id_or_alias)) {
            return Ok(k.id.clone());
        }
        Err(CliError::key(format!(
            "unknown key {id_or_alias}: no key with this id or alias in keystore {}",
            self.keystore.display()
        ))
        .hint("`colvault kms list` shows the keys; check --keystore / COLVAULT_KEYSTORE"))
    }
}
