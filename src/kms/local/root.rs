//! The root secret a keystore is sealed under, and the Argon2id parameters that stretch a passphrase.

use super::*;

/// The Argon2id fields of a keystore sealed under a key file.
pub(super) const NO_ARGON2: Argon2Params = Argon2Params {
    m_cost_kib: 0,
    t_cost: 0,
    p_cost: 0,
    insecure: false,
};
/// The fewest characters (Unicode code points) a passphrase that creates or changes a root secret
/// has. NIST SP 800-63B-4 (2025), section 3.1.1.2, requires at least 15 characters for a password
/// used as a single authentication factor, which a keystore passphrase is; it also says to count
/// each Unicode code point as one character and to impose no composition rules, so none are.
pub const MIN_PASSPHRASE_CHARS: usize = 15;

/// The secret a keystore is sealed under.
pub enum RootSecret {
    /// A passphrase, stretched with Argon2id (RFC 9106) with the parameters of
    /// [`LocalKmsOptions::with_argon2`] and a random salt.
    Passphrase(Zeroizing<String>),
    /// 32 random bytes, usually kept in a file (see [`RootSecret::create_key_file`]).
    KeyFile(SecretKey),
}

impl RootSecret {
    /// A passphrase root secret.
    pub fn passphrase(passphrase: impl Into<String>) -> Self {
        RootSecret::Passphrase(Zeroizing::new(passphrase.into()))
    }

    /// Reads a root key file: exactly 32 bytes.
    pub fn load_key_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let f = File::open(path).map_err(|e| Error::io(format!("opening root key file {}", path.display()), e))?;
        let mut buf = Zeroizing::new(Vec::with_capacity(KEY_LEN + 1));
        f.take(KEY_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("reading root key file {}", path.display()), e))?;
        if buf.len() != KEY_LEN {
            return Err(Error::InvalidArgument(format!(
                "root key file {} must hold exactly {KEY_LEN} bytes",
                path.display()
            )));
        }
        Ok(RootSecret::KeyFile(SecretKey::from_slice(&buf)?))
    }

    /// Creates a root key file of 32 random bytes, readable by its owner only (mode 0600 on Unix); fails
    /// if the file exists.
    pub fn create_key_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let key = SecretKey::generate()?;
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let ctx = || format!("creating root key file {}", path.display());
        let mut f = opts.open(path).map_err(|e| Error::io(ctx(), e))?;
        f.write_all(key.expose()).map_err(|e| Error::io(ctx(), e))?;
        f.sync_all().map_err(|e| Error::io(ctx(), e))?;
        Ok(RootSecret::KeyFile(key))
    }

    pub(super) fn kind(&self) -> u8 {
        match self {
            RootSecret::Passphrase(_) => ROOT_PASSPHRASE,
            RootSecret::KeyFile(_) => ROOT_KEY_FILE,
        }
    }
}

impl fmt::Debug for RootSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootSecret::Passphrase(_) => f.write_str("RootSecret::Passphrase([REDACTED])"),
            RootSecret::KeyFile(_) => f.write_str("RootSecret::KeyFile([REDACTED])"),
        }
    }
}

/// Argon2id cost parameters (RFC 9106).
///
/// New root secrets use at least [`Argon2Params::FLOOR`] (RFC 9106 section 4, the second recommended
/// option); the only way below it is [`Argon2Params::insecure_for_tests`]. Opening a keystore uses the
/// parameters its header records, which are not authenticated before they are used (they derive the
/// key that authenticates the header), so an opener refuses any above its configured maximum
/// ([`LocalKmsOptions::with_max_argon2`], default [`Argon2Params::DEFAULT_MAX`]) before allocating
/// anything for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// Set only by [`Argon2Params::insecure_for_tests`]: lets parameters below the floor create a
    /// keystore (tests). Never recorded in a keystore.
    insecure: bool,
}

impl Argon2Params {
    /// RFC 9106 section 4, the second recommended option ("if much less memory is available"):
    /// 64 MiB, 3 passes, 4 lanes.
    pub const RFC9106_SECOND: Argon2Params = Argon2Params::new(64 * 1024, 3, 4);

    /// The parameters of new root secrets by default: [`Argon2Params::RFC9106_SECOND`].
    pub const DEFAULT: Argon2Params = Self::RFC9106_SECOND;

    /// The floor for new root secrets: at least this much memory and this many passes
    /// ([`Argon2Params::RFC9106_SECOND`]); the lanes may be 1 to the opener's maximum (fewer lanes do
    /// not make an attacker's guess cheaper).
    pub const FLOOR: Argon2Params = Self::RFC9106_SECOND;

    /// The default maximum an opener accepts from a keystore header: 256 MiB, 8 passes, 8 lanes.
    pub const DEFAULT_MAX: Argon2Params = Argon2Params::new(256 * 1024, 8, 8);

    /// Parameters of your choice (for a new root secret they must be at least [`Argon2Params::FLOOR`]).
    pub const fn new(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Self {
        Argon2Params {
            m_cost_kib,
            t_cost,
            p_cost,
            insecure: false,
        }
    }

    /// The cheapest parameters Argon2id accepts (8 KiB, 1 pass, 1 lane), allowed below the floor: for
    /// tests only, never for real passphrases.
    pub const fn insecure_for_tests() -> Self {
        Argon2Params {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
            insecure: true,
        }
    }

    /// Whether every parameter is at most `max`'s.
    pub fn within(self, max: Argon2Params) -> bool {
        self.m_cost_kib <= max.m_cost_kib && self.t_cost <= max.t_cost && self.p_cost <= max.p_cost
    }

    /// The same parameters as they are recorded in a keystore header (without the test marker).
    pub(super) fn recorded(self) -> Self {
        Argon2Params::new(self.m_cost_kib, self.t_cost, self.p_cost)
    }

    /// Checks parameters for a new root secret: at least the floor (unless made by
    /// [`Argon2Params::insecure_for_tests`]) and at most the opener's maximum `max` (else the keystore
    /// could not be opened again).
    pub(super) fn check_new(self, max: Argon2Params) -> Result<()> {
        if !self.insecure && (self.m_cost_kib < Self::FLOOR.m_cost_kib || self.t_cost < Self::FLOOR.t_cost) {
            return Err(Error::WeakRootSecret(format!(
                "Argon2id parameters {self} are below the floor {} (RFC 9106 section 4)",
                Self::FLOOR
            )));
        }
        if !self.within(max) {
            return Err(Error::InvalidArgument(format!(
                "Argon2id parameters {self} are above this KMS's maximum {max}, so the keystore could not be \
                 opened again"
            )));
        }
        self.params().map(drop)
    }

    pub(super) fn params(self) -> Result<argon2::Params> {
        argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(KEY_LEN))
            .map_err(|e| Error::InvalidArgument(format!("Argon2id parameters {self}: {e}")))
    }
}

impl fmt::Display for Argon2Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} KiB, t={}, p={}", self.m_cost_kib, self.t_cost, self.p_cost)
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::DEFAULT
    }
}
