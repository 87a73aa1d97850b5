//! `LocalKms`: the embedded KMS, one keystore file sealed as a whole under a root secret.
//!
//! # What is sealed
//!
//! Everything: every key's material, state, versions, grants and alias, a generation counter, the head
//! of the audit log and the audit key. The keystore is one AES-256-GCM ciphertext (NIST SP 800-38D,
//! aws-lc-rs) under a key derived from the root secret, with a fresh random 96-bit nonce on every write
//! and the plaintext header as associated data. So without the root secret, editing the file can
//! neither re-enable a key, nor add a grant, nor restore destroyed material: it fails to open with
//! [`Error::Integrity`] or [`Error::WrongRootSecret`].
//!
//! # Root secret and key derivation
//!
//! ```text
//! ikm       = Argon2id(passphrase, salt, m, t, p) (32 bytes)       for RootSecret::Passphrase
//!           = the 32 bytes of the key file                         for RootSecret::KeyFile
//! seal key  = HKDF-SHA256(ikm, "colvault v1 keystore seal key" || salt || 0x01)
//! check     = HKDF-SHA256(ikm, "colvault v1 keystore seal key" || salt || 0x02)
//! ```
//!
//! The salt is 16 random bytes, new with every root secret. The check value tells a wrong root secret
//! ([`Error::WrongRootSecret`]) from a tampered file ([`Error::Integrity`]); it gives an attacker
//! nothing the GCM tag would not (each guess still costs one Argon2id evaluation). The seal key is
//! derived once when the keystore is opened and kept, zeroized on drop.
//!
//! # File layout (all integers big-endian)
//!
//! ```text
//! header (78 bytes, the GCM associated data):
//!   "CVKS" | u8 format version = 1 | u8 root kind (1 = Argon2id passphrase, 2 = key file)
//!   | u32 m_cost KiB | u32 t_cost | u32 p_cost (zero for a key file) | salt (16) | check (32) | nonce (12)
//! u32 length of the sealed body (<= 64 MiB) | sealed body = AES-256-GCM ciphertext || 16-byte tag
//! ```
//!
//! The body is specified in `format-spec/` (and beside `Keystore::encode_body` in this file).
//!
//! # Concurrency and atomicity
//!
//! Updates take an exclusive lock on `<keystore>.lock` (`File::lock`, i.e. `flock`), re-read and open
//! the current keystore, apply the change, append an intent record to the audit log, increment the
//! generation, write a temporary file in the same directory, fsync it, rename it over the keystore,
//! fsync the directory, and append the outcome record (see [`LocalKms::commit`]). A write that fails
//! removes its temporary file; opening removes any left by a killed write (older sealed copies that
//! could still hold deleted keys) and gives intents left without an outcome the outcome that took
//! effect, both under the exclusive lock. Data-plane calls re-read
//! the keystore under a shared lock, so a disable made by another process is seen by the next call. A
//! keystore whose generation is lower than one this process already saw at the same path is refused as
//! a rollback ([`Error::Integrity`]). A copy of an older keystore presented to a fresh process cannot
//! be detected (DESIGN, "Tables and their honest guarantees").

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::{Zeroize, Zeroizing};

use super::audit::{self, AuditAction, AuditEntry, AuditHead, AuditOutcome, AuditRecord};
use super::cache::MAX_KEK_LIFETIME;
use super::types::{
    decode_time, encode_time, unix_secs, validate_kms_name, CreateKeyRequest, EncryptionContext, KeyId, KeyMetadata,
    KeyOrigin, KeyState, KeyVersionInfo, KeyVersionState, Principal, WrappedKey,
};
use super::wrap::{kms_unwrap, kms_wrap};
use super::{Kms, KmsAdmin};
use crate::clock::{Clock, SystemClock};
use crate::codec::{Decoder, Encoder};
use crate::crypto::kdf::hkdf_expand;
use crate::crypto::{ct_eq, random_array, Purpose, SecretKey, KEY_LEN};
use crate::error::{Error, Result};

/// The first bytes of a keystore file.
pub const KEYSTORE_MAGIC: [u8; 4] = *b"CVKS";
/// The keystore format version.
pub const KEYSTORE_FORMAT_VERSION: u8 = 1;
/// The format version of the sealed body.
const BODY_FORMAT_VERSION: u8 = 1;
const ROOT_PASSPHRASE: u8 = 1;
const ROOT_KEY_FILE: u8 = 2;
const SALT_LEN: usize = 16;
const CHECK_LEN: usize = 32;
const GCM_NONCE_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
const HEADER_LEN: usize = 4 + 1 + 1 + 12 + SALT_LEN + CHECK_LEN + GCM_NONCE_LEN;
/// The largest sealed body accepted.
pub const MAX_KEYSTORE_BODY_LEN: usize = 64 << 20;
/// The most keys one keystore holds.
pub const MAX_KEYS: usize = 100_000;
/// The most versions one key has.
pub const MAX_VERSIONS: usize = 10_000;
/// The most grants one key has.
pub const MAX_GRANTS: usize = 10_000;
const MAX_ALIAS_LEN: usize = 256;
/// Seals under one root secret before [`Error::KeyLimit`] asks for a new one (random GCM nonces,
/// NIST SP 800-38D section 8.3).
const MAX_SEALS_PER_ROOT: u64 = 1 << 32;
const SECS_PER_DAY: u64 = 86_400;
/// The Argon2id fields of a keystore sealed under a key file.
const NO_ARGON2: Argon2Params = Argon2Params {
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

    fn kind(&self) -> u8 {
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
    fn recorded(self) -> Self {
        Argon2Params::new(self.m_cost_kib, self.t_cost, self.p_cost)
    }

    /// Checks parameters for a new root secret: at least the floor (unless made by
    /// [`Argon2Params::insecure_for_tests`]) and at most the opener's maximum `max` (else the keystore
    /// could not be opened again).
    fn check_new(self, max: Argon2Params) -> Result<()> {
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

    fn params(self) -> Result<argon2::Params> {
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

/// Options of a [`LocalKms`].
#[derive(Clone, Debug)]
pub struct LocalKmsOptions {
    name: String,
    clock: Arc<dyn Clock>,
    argon2: Argon2Params,
    max_argon2: Argon2Params,
    version_destroy_delay: Duration,
}

impl Default for LocalKmsOptions {
    fn default() -> Self {
        LocalKmsOptions {
            name: "local".into(),
            clock: Arc::new(SystemClock),
            argon2: Argon2Params::DEFAULT,
            max_argon2: Argon2Params::DEFAULT_MAX,
            version_destroy_delay: MAX_KEK_LIFETIME,
        }
    }
}

impl LocalKmsOptions {
    /// The defaults: name `local`, the system clock, [`Argon2Params::DEFAULT`] for new root secrets,
    /// [`Argon2Params::DEFAULT_MAX`] as the most an opened keystore may ask for, and a version destroy
    /// delay of [`MAX_KEK_LIFETIME`] (24 hours).
    pub fn new() -> Self {
        Self::default()
    }

    /// The KMS name recorded in wrapped keys (1 to 64 ASCII letters, digits, `_`, `-`, `.`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The clock for deletion windows and audit times.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Argon2id parameters used when a passphrase root secret is set (create, change of root secret);
    /// opening uses the parameters recorded in the keystore.
    pub fn with_argon2(mut self, params: Argon2Params) -> Self {
        self.argon2 = params;
        self
    }

    /// The most Argon2id cost a keystore header may ask for; above it, opening fails with
    /// [`Error::KdfCostTooHigh`] before anything is allocated.
    pub fn with_max_argon2(mut self, max: Argon2Params) -> Self {
        self.max_argon2 = max;
        self
    }

    /// How long after a rotation the superseded version stays undestroyable
    /// ([`Error::VersionDestroyTooEarly`]). It must be at least the longest KEK cache lifetime of
    /// every process that writes with this keystore's keys (a cached KEK keeps wrapping new data keys
    /// under the old version until it expires); the default is the longest lifetime allowed,
    /// [`MAX_KEK_LIFETIME`].
    pub fn with_version_destroy_delay(mut self, delay: Duration) -> Self {
        self.version_destroy_delay = delay;
        self
    }

    /// The version destroy delay.
    pub fn version_destroy_delay(&self) -> Duration {
        self.version_destroy_delay
    }

    /// The most Argon2id cost an opened keystore may ask for.
    pub fn max_argon2(&self) -> Argon2Params {
        self.max_argon2
    }

    /// The KMS name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The Argon2id parameters.
    pub fn argon2(&self) -> Argon2Params {
        self.argon2
    }
}

/// How the seal key is derived: the KDF part of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KdfHeader {
    kind: u8,
    argon2: Argon2Params,
    salt: [u8; SALT_LEN],
}

/// The derived seal key and its check value.
struct SealKey {
    kdf: KdfHeader,
    check: [u8; CHECK_LEN],
    key: SecretKey,
}

impl SealKey {
    fn derive(root: &RootSecret, kdf: KdfHeader) -> Result<SealKey> {
        let mut ikm = Zeroizing::new([0u8; KEY_LEN]);
        match root {
            RootSecret::Passphrase(p) => {
                if kdf.kind != ROOT_PASSPHRASE {
                    return Err(Error::InvalidArgument("root secret kind mismatch".into()));
                }
                if p.is_empty() {
                    return Err(Error::InvalidArgument("an empty passphrase".into()));
                }
                let params = kdf.argon2.params()?;
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(p.as_bytes(), &kdf.salt, ikm.as_mut())
                    .map_err(|_| Error::Crypto("Argon2id failed"))?;
            }
            RootSecret::KeyFile(k) => {
                if kdf.kind != ROOT_KEY_FILE {
                    return Err(Error::InvalidArgument("root secret kind mismatch".into()));
                }
                ikm.copy_from_slice(k.expose());
            }
        }
        let mut key = [0u8; KEY_LEN];
        hkdf_expand(ikm.as_ref(), Purpose::KeystoreSeal, &[&kdf.salt, &[1]], &mut key)?;
        let mut check = [0u8; CHECK_LEN];
        hkdf_expand(ikm.as_ref(), Purpose::KeystoreSeal, &[&kdf.salt, &[2]], &mut check)?;
        Ok(SealKey {
            kdf,
            check,
            key: SecretKey::from_bytes(&mut key),
        })
    }

    /// A seal key for a new root secret: a passphrase must have [`MIN_PASSPHRASE_CHARS`] characters
    /// and `argon2` must pass [`Argon2Params::check_new`] against `max`.
    fn fresh(root: &RootSecret, argon2: Argon2Params, max: Argon2Params) -> Result<SealKey> {
        let argon2 = match root {
            RootSecret::Passphrase(p) => {
                let n = p.chars().count();
                if n < MIN_PASSPHRASE_CHARS {
                    return Err(Error::WeakRootSecret(format!(
                        "a passphrase has at least {MIN_PASSPHRASE_CHARS} characters (NIST SP 800-63B-4), this one \
                         has {n}"
                    )));
                }
                argon2.check_new(max)?;
                argon2.recorded()
            }
            RootSecret::KeyFile(_) => NO_ARGON2,
        };
        Self::derive(
            root,
            KdfHeader {
                kind: root.kind(),
                argon2,
                salt: random_array()?,
            },
        )
    }

    fn gcm(&self) -> Result<LessSafeKey> {
        Ok(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, self.key.expose()).map_err(|_| Error::Crypto("AES-256-GCM key"))?,
        ))
    }
}

impl Drop for SealKey {
    fn drop(&mut self) {
        self.check.zeroize();
    }
}

fn encode_header(kdf: &KdfHeader, check: &[u8; CHECK_LEN], nonce: &[u8; GCM_NONCE_LEN]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.raw(&KEYSTORE_MAGIC)
        .u8(KEYSTORE_FORMAT_VERSION)
        .u8(kdf.kind)
        .u32(kdf.argon2.m_cost_kib)
        .u32(kdf.argon2.t_cost)
        .u32(kdf.argon2.p_cost)
        .raw(&kdf.salt)
        .raw(check)
        .raw(nonce);
    let out = e.finish();
    debug_assert_eq!(out.len(), HEADER_LEN);
    out
}

/// A parsed (not yet opened) keystore file.
struct RawKeystore<'a> {
    header: &'a [u8],
    kdf: KdfHeader,
    check: [u8; CHECK_LEN],
    nonce: [u8; GCM_NONCE_LEN],
    sealed: &'a [u8],
}

/// Parses a keystore file; Argon2id parameters above `max` are [`Error::KdfCostTooHigh`], found
/// before anything is derived or allocated for them.
fn parse_file<'a>(bytes: &'a [u8], path: &Path, max: Argon2Params) -> Result<RawKeystore<'a>> {
    let bad = |detail: String| Error::integrity(format!("keystore {}: {detail}", path.display()));
    let mut d = Decoder::new(bytes, "keystore");
    let magic = d.array::<4>().map_err(|e| bad(e.to_string()))?;
    if magic != KEYSTORE_MAGIC {
        return Err(bad("not a colvault keystore (bad magic)".into()));
    }
    let mut fields = || -> Result<_> {
        let version = d.u8()?;
        let kind = d.u8()?;
        let m = d.u32()?;
        let t = d.u32()?;
        let p = d.u32()?;
        let salt = d.array::<SALT_LEN>()?;
        let check = d.array::<CHECK_LEN>()?;
        let nonce = d.array::<GCM_NONCE_LEN>()?;
        let sealed = d.bytes(MAX_KEYSTORE_BODY_LEN + GCM_TAG_LEN)?;
        Ok((version, kind, Argon2Params::new(m, t, p), salt, check, nonce, sealed))
    };
    let (version, kind, argon2, salt, check, nonce, sealed) = fields().map_err(|e| bad(e.to_string()))?;
    d.finish().map_err(|e| bad(e.to_string()))?;
    if version != KEYSTORE_FORMAT_VERSION {
        return Err(bad(format!("unknown format version {version}")));
    }
    if kind != ROOT_PASSPHRASE && kind != ROOT_KEY_FILE {
        return Err(bad(format!("unknown root secret kind {kind}")));
    }
    if kind == ROOT_PASSPHRASE && !argon2.within(max) {
        return Err(Error::KdfCostTooHigh {
            path: path.to_path_buf(),
            found: argon2.to_string(),
            max: max.to_string(),
        });
    }
    let params_ok = match kind {
        ROOT_PASSPHRASE => argon2.params().is_ok(),
        _ => argon2 == NO_ARGON2,
    };
    if !params_ok {
        return Err(bad(format!("Argon2id parameters out of range: {argon2}")));
    }
    if sealed.len() < GCM_TAG_LEN {
        return Err(bad("sealed body shorter than its tag".into()));
    }
    Ok(RawKeystore {
        header: &bytes[..HEADER_LEN],
        kdf: KdfHeader { kind, argon2, salt },
        check,
        nonce,
        sealed,
    })
}

/// The state a key returns to when its deletion is cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resume {
    Enabled,
    Disabled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoredState {
    Enabled,
    Disabled,
    PendingDeletion { until: SystemTime, resume: Resume },
    Deleted,
}

impl StoredState {
    fn public(self) -> KeyState {
        match self {
            StoredState::Enabled => KeyState::Enabled,
            StoredState::Disabled => KeyState::Disabled,
            StoredState::PendingDeletion { until, .. } => KeyState::PendingDeletion { until },
            StoredState::Deleted => KeyState::Deleted,
        }
    }
}

struct VersionRecord {
    created: SystemTime,
    /// `None` once destroyed. Boxed so that growing the vector of versions moves pointers, not
    /// material.
    material: Option<Box<SecretKey>>,
}

struct KeyRecord {
    id: KeyId,
    alias: Option<String>,
    origin: KeyOrigin,
    state: StoredState,
    created: SystemTime,
    primary: u32,
    /// Version `n` is at index `n - 1`.
    versions: Vec<VersionRecord>,
    grants: Vec<Principal>,
}

impl KeyRecord {
    fn metadata(&self) -> KeyMetadata {
        KeyMetadata {
            id: self.id.clone(),
            alias: self.alias.clone(),
            origin: self.origin.clone(),
            state: self.state.public(),
            primary_version: self.primary,
            versions: self
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| KeyVersionInfo {
                    version: i as u32 + 1,
                    state: if v.material.is_some() {
                        KeyVersionState::Enabled
                    } else {
                        KeyVersionState::Destroyed
                    },
                    created: v.created,
                })
                .collect(),
            grants: self.grants.clone(),
            created: self.created,
        }
    }

    /// The data-plane checks, in order: grant, then state.
    fn check_usable(&self, principal: &Principal) -> Result<()> {
        if !self.grants.contains(principal) {
            return Err(Error::AccessDenied {
                principal: principal.to_string(),
                key: self.id.to_string(),
            });
        }
        let key = self.id.to_string();
        match self.state {
            StoredState::Enabled => Ok(()),
            StoredState::Disabled => Err(Error::KeyDisabled { key }),
            StoredState::PendingDeletion { until, .. } => Err(Error::KeyPendingDeletion {
                key,
                until_unix_secs: unix_secs(until),
            }),
            StoredState::Deleted => Err(Error::KeyDeleted { key }),
        }
    }

    fn material(&self, version: u32) -> Result<&SecretKey> {
        let v = version
            .checked_sub(1)
            .and_then(|i| self.versions.get(i as usize))
            .ok_or_else(|| {
                Error::integrity(format!(
                    "wrapped key (it names version {version} of key {}, which never existed)",
                    self.id
                ))
            })?;
        v.material.as_deref().ok_or_else(|| Error::VersionDestroyed {
            key: self.id.to_string(),
            version,
        })
    }

    /// Refuses administration of a key pending deletion or deleted.
    fn check_administrable(&self, what: &str) -> Result<()> {
        match self.state {
            StoredState::Enabled | StoredState::Disabled => Ok(()),
            StoredState::PendingDeletion { .. } => Err(Error::InvalidKeyState(format!(
                "cannot {what} key {}: it is pending deletion (cancel the deletion first)",
                self.id
            ))),
            StoredState::Deleted => Err(Error::InvalidKeyState(format!(
                "cannot {what} key {}: it was deleted",
                self.id
            ))),
        }
    }
}

/// The opened keystore.
struct Keystore {
    generation: u64,
    seals: u64,
    audit_key: SecretKey,
    audit_head: AuditHead,
    keys: Vec<KeyRecord>,
}

impl Keystore {
    fn find(&self, id: &KeyId) -> Result<&KeyRecord> {
        self.keys
            .iter()
            .find(|k| &k.id == id)
            .ok_or_else(|| Error::UnknownKey { key: id.to_string() })
    }

    fn find_mut(&mut self, id: &KeyId) -> Result<&mut KeyRecord> {
        self.keys
            .iter_mut()
            .find(|k| &k.id == id)
            .ok_or_else(|| Error::UnknownKey { key: id.to_string() })
    }

    /// The plaintext body:
    ///
    /// ```text
    /// u8 body version = 1 | u64 generation | u64 seals under this root | audit key (32)
    /// | u64 audit head seq | audit head mac (32) | u32 key count, then per key:
    ///   str id | u8 has_alias [str alias] | u8 origin (1 project default + str project, 2 BYOK)
    ///   | u8 state (1 enabled, 2 disabled, 3 pending deletion + u64 secs + u32 nanos + u8 resume
    ///     state (1 enabled, 2 disabled), 4 deleted)
    ///   | u64 secs + u32 nanos created | u32 primary version
    ///   | u32 version count, per version: u64 secs + u32 nanos created
    ///     | u8 (1 material follows (32 bytes), 2 destroyed)
    ///   | u32 grant count, per grant: str principal
    /// ```
    ///
    /// Encoded in two passes so that key material is only ever written into one zeroizing buffer
    /// allocated to its final size (plus room for the GCM tag): no reallocation leaves copies behind.
    fn encode_body(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut e = Encoder::new();
        let mut secrets: Vec<(usize, &SecretKey)> = Vec::new();
        e.u8(BODY_FORMAT_VERSION).u64(self.generation).u64(self.seals);
        secrets.push((e.as_slice().len(), &self.audit_key));
        e.raw(&[0; KEY_LEN]);
        e.u64(self.audit_head.seq).raw(&self.audit_head.mac);
        e.u32(self.keys.len() as u32);
        for k in &self.keys {
            e.str(k.id.as_str());
            match &k.alias {
                Some(a) => e.u8(1).str(a),
                None => e.u8(0),
            };
            match &k.origin {
                KeyOrigin::ProjectDefault { project } => e.u8(1).str(project.as_str()),
                KeyOrigin::Byok => e.u8(2),
            };
            match k.state {
                StoredState::Enabled => {
                    e.u8(1);
                }
                StoredState::Disabled => {
                    e.u8(2);
                }
                StoredState::PendingDeletion { until, resume } => {
                    e.u8(3);
                    encode_time(&mut e, until)?;
                    e.u8(match resume {
                        Resume::Enabled => 1,
                        Resume::Disabled => 2,
                    });
                }
                StoredState::Deleted => {
                    e.u8(4);
                }
            }
            encode_time(&mut e, k.created)?;
            e.u32(k.primary);
            e.u32(k.versions.len() as u32);
            for v in &k.versions {
                encode_time(&mut e, v.created)?;
                match &v.material {
                    Some(m) => {
                        e.u8(1);
                        secrets.push((e.as_slice().len(), m));
                        e.raw(&[0; KEY_LEN]);
                    }
                    None => {
                        e.u8(2);
                    }
                }
            }
            e.u32(k.grants.len() as u32);
            for g in &k.grants {
                e.str(g.as_str());
            }
        }
        let skeleton = e.finish();
        let mut out = Zeroizing::new(Vec::with_capacity(skeleton.len() + GCM_TAG_LEN));
        out.extend_from_slice(&skeleton);
        for (at, key) in secrets {
            out[at..at + KEY_LEN].copy_from_slice(key.expose());
        }
        Ok(out)
    }

    fn decode_body(body: &[u8]) -> Result<Keystore> {
        const WHAT: &str = "keystore body";
        let mut d = Decoder::new(body, WHAT);
        let v = d.u8()?;
        if v != BODY_FORMAT_VERSION {
            return Err(Error::malformed(WHAT, format!("unknown body version {v}")));
        }
        let generation = d.u64()?;
        let seals = d.u64()?;
        let audit_key = SecretKey::from_slice(d.raw(KEY_LEN)?)?;
        let audit_head = AuditHead {
            seq: d.u64()?,
            mac: d.array()?,
        };
        let n = d.count(MAX_KEYS, 40)?;
        let mut keys: Vec<KeyRecord> = Vec::with_capacity(n);
        for _ in 0..n {
            let id = KeyId::decode(&mut d)?;
            if keys.iter().any(|k| k.id == id) {
                return Err(Error::malformed(WHAT, format!("key {id} appears twice")));
            }
            let alias = match d.u8()? {
                0 => None,
                1 => Some(d.str(MAX_ALIAS_LEN)?.to_owned()),
                b => return Err(Error::malformed(WHAT, format!("alias flag {b}"))),
            };
            let origin = match d.u8()? {
                1 => KeyOrigin::ProjectDefault {
                    project: Principal::decode(&mut d)?,
                },
                2 => KeyOrigin::Byok,
                b => return Err(Error::malformed(WHAT, format!("origin {b}"))),
            };
            let state = match d.u8()? {
                1 => StoredState::Enabled,
                2 => StoredState::Disabled,
                3 => {
                    let until = decode_time(&mut d, WHAT)?;
                    let resume = match d.u8()? {
                        1 => Resume::Enabled,
                        2 => Resume::Disabled,
                        b => return Err(Error::malformed(WHAT, format!("resume state {b}"))),
                    };
                    StoredState::PendingDeletion { until, resume }
                }
                4 => StoredState::Deleted,
                b => return Err(Error::malformed(WHAT, format!("state {b}"))),
            };
            let created = decode_time(&mut d, WHAT)?;
            let primary = d.u32()?;
            let nv = d.count(MAX_VERSIONS, 13)?;
            let mut versions = Vec::with_capacity(nv);
            for _ in 0..nv {
                let created = decode_time(&mut d, WHAT)?;
                let material = match d.u8()? {
                    1 => Some(Box::new(SecretKey::from_slice(d.raw(KEY_LEN)?)?)),
                    2 => None,
                    b => return Err(Error::malformed(WHAT, format!("version flag {b}"))),
                };
                versions.push(VersionRecord { created, material });
            }
            let ng = d.count(MAX_GRANTS, 5)?;
            let mut grants: Vec<Principal> = Vec::with_capacity(ng);
            for _ in 0..ng {
                let p = Principal::decode(&mut d)?;
                if grants.contains(&p) {
                    return Err(Error::malformed(WHAT, format!("grant {p} appears twice")));
                }
                grants.push(p);
            }
            // Invariants: the primary exists; its material exists unless the key was deleted; a deleted
            // key has no material left.
            let primary_ok = primary >= 1 && (primary as usize) <= versions.len();
            let deleted = state == StoredState::Deleted;
            if !primary_ok
                || (!deleted && versions[primary as usize - 1].material.is_none())
                || (deleted && versions.iter().any(|v| v.material.is_some()))
            {
                return Err(Error::malformed(WHAT, format!("key {id}: inconsistent versions")));
            }
            keys.push(KeyRecord {
                id,
                alias,
                origin,
                state,
                created,
                primary,
                versions,
                grants,
            });
        }
        d.finish()?;
        Ok(Keystore {
            generation,
            seals,
            audit_key,
            audit_head,
            keys,
        })
    }
}

/// The highest keystore generation this process has seen, per keystore path.
fn high_water() -> &'static Mutex<HashMap<PathBuf, u64>> {
    static SEEN: OnceLock<Mutex<HashMap<PathBuf, u64>>> = OnceLock::new();
    SEEN.get_or_init(|| Mutex::new(HashMap::new()))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which lock a call takes on `<keystore>.lock`.
#[derive(Clone, Copy)]
enum Lock {
    Shared,
    Exclusive,
}

/// The embedded KMS: a keystore file sealed as a whole under a root secret, with a hash-chained audit
/// log beside it. See the [module documentation](self) for the construction and the file layout.
///
/// Several `LocalKms` values (in one process or in several) may use the same keystore at once: updates
/// are serialised by a file lock and every call reads the current keystore.
pub struct LocalKms {
    path: PathBuf,
    canonical: PathBuf,
    lock_path: PathBuf,
    audit_path: PathBuf,
    name: String,
    clock: Arc<dyn Clock>,
    argon2: Argon2Params,
    max_argon2: Argon2Params,
    version_destroy_delay: Duration,
    /// Rotations made through this value ([`Kms::rotation_epoch`]).
    rotations: AtomicU64,
    seal: RwLock<Arc<SealKey>>,
}

impl fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKms")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl LocalKms {
    fn with_seal(path: PathBuf, canonical: PathBuf, options: LocalKmsOptions, seal: SealKey) -> LocalKms {
        LocalKms {
            lock_path: sibling(&path, ".lock"),
            audit_path: sibling(&path, ".audit"),
            path,
            canonical,
            name: options.name,
            clock: options.clock,
            argon2: options.argon2,
            max_argon2: options.max_argon2,
            version_destroy_delay: options.version_destroy_delay,
            rotations: AtomicU64::new(0),
            seal: RwLock::new(Arc::new(seal)),
        }
    }

    /// Creates a new, empty keystore at `path` (and its audit log `<path>.audit`); fails if either
    /// exists. A passphrase needs [`MIN_PASSPHRASE_CHARS`] characters and Argon2id parameters of at
    /// least [`Argon2Params::FLOOR`] ([`Error::WeakRootSecret`]).
    pub fn create(path: impl AsRef<Path>, root: RootSecret, options: LocalKmsOptions) -> Result<LocalKms> {
        let path = path.as_ref().to_path_buf();
        validate_kms_name(&options.name)?;
        let seal = SealKey::fresh(&root, options.argon2, options.max_argon2)?;
        drop(root);
        let lock_path = sibling(&path, ".lock");
        let audit_path = sibling(&path, ".audit");
        let lock = Self::take_lock(&lock_path, Lock::Exclusive)?;
        if path.exists() {
            return Err(Error::io(
                format!("creating keystore {}", path.display()),
                std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            ));
        }
        remove_leftover_temps(&path)?;
        audit::create(&audit_path)?;
        let mut ks = Keystore {
            generation: 1,
            seals: 1,
            audit_key: SecretKey::generate()?,
            audit_head: AuditHead::default(),
            keys: Vec::new(),
        };
        let mut entry = AuditEntry::new(AuditAction::CreateKeystore, None, None);
        entry.detail = format!("kms {}", options.name);
        // Until the keystore exists nothing else can read this log: its key is in the keystore.
        ks.audit_head = audit::append(
            &audit_path,
            &ks.audit_key,
            options.clock.now(),
            &entry,
            &AuditOutcome::Success,
        )?;
        write_keystore(&path, &ks, &seal)?;
        let canonical = fs::canonicalize(&path).map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
        high_water()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(canonical.clone(), ks.generation);
        drop(lock);
        Ok(Self::with_seal(path, canonical, options, seal))
    }

    /// Opens an existing keystore. A root secret that does not open it gives
    /// [`Error::WrongRootSecret`]; a tampered or rolled-back file gives [`Error::Integrity`]; Argon2id
    /// parameters above the options' maximum give [`Error::KdfCostTooHigh`] before any work.
    ///
    /// Under the exclusive lock it then removes leftover temporary keystores (older sealed copies
    /// left by a write that was killed) and reconciles the audit log with the keystore: an intent
    /// record that no outcome resolves gets the outcome that actually happened.
    pub fn open(path: impl AsRef<Path>, root: RootSecret, options: LocalKmsOptions) -> Result<LocalKms> {
        let path = path.as_ref().to_path_buf();
        validate_kms_name(&options.name)?;
        let lock_path = sibling(&path, ".lock");
        let bytes = {
            let _lock = Self::take_lock(&lock_path, Lock::Shared)?;
            read_file(&path)?
        };
        let raw = parse_file(&bytes, &path, options.max_argon2)?;
        if raw.kdf.kind != root.kind() {
            return Err(Error::WrongRootSecret { path });
        }
        let seal = SealKey::derive(&root, raw.kdf)?;
        drop(root);
        if !ct_eq(&seal.check, &raw.check) {
            return Err(Error::WrongRootSecret { path });
        }
        let canonical = fs::canonicalize(&path).map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
        let kms = Self::with_seal(path, canonical, options, seal);
        // Open it for real, under the exclusive lock: the rollback check, leftovers, reconciliation.
        let _lock = Self::take_lock(&kms.lock_path, Lock::Exclusive)?;
        remove_leftover_temps(&kms.path)?;
        let ks = kms.load()?;
        kms.reconcile(&ks)?;
        Ok(kms)
    }

    /// The keystore file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The audit log file (`<keystore>.audit`).
    pub fn audit_path(&self) -> &Path {
        &self.audit_path
    }

    /// Re-seals the keystore under a new root secret (a new salt; for a passphrase, the Argon2id
    /// parameters of the options, at least [`Argon2Params::FLOOR`], and at least
    /// [`MIN_PASSPHRASE_CHARS`] characters). Other `LocalKms` values opened with the old root secret
    /// then fail with [`Error::WrongRootSecret`].
    pub fn change_root_secret(&self, new: RootSecret) -> Result<()> {
        let new_seal = SealKey::fresh(&new, self.argon2, self.max_argon2)?;
        let kind = match new {
            RootSecret::Passphrase(_) => "passphrase",
            RootSecret::KeyFile(_) => "key file",
        };
        drop(new);
        let mut entry = AuditEntry::new(AuditAction::ChangeRootSecret, None, None);
        entry.detail = format!("new root secret: {kind}");
        self.commit(
            entry,
            |ks, _, _| {
                ks.seals = 0; // the commit counts this write: the first seal under the new secret
                Ok(())
            },
            Some(new_seal),
        )
    }

    /// The audit log, verified: every record's MAC chains to the previous one, and the record of the
    /// last administrative action that the sealed keystore remembers is present. Editing, reordering or
    /// truncating the log before that record gives [`Error::Integrity`]. A final record left
    /// incomplete by a crash during an append is cut first, and the cut is recorded
    /// ([`AuditAction::RepairTail`](super::AuditAction::RepairTail)), as the next key use would do.
    pub fn audit_log(&self) -> Result<Vec<AuditRecord>> {
        let ks = self.read(Lock::Shared)?;
        audit::repair(&self.audit_path, &ks.audit_key, self.clock.now())?;
        audit::read_verified(&self.audit_path, &ks.audit_key, ks.audit_head)
    }

    fn take_lock(lock_path: &Path, how: Lock) -> Result<File> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let f = opts
            .open(lock_path)
            .map_err(|e| Error::io(format!("opening lock file {}", lock_path.display()), e))?;
        audit::flock(&f, matches!(how, Lock::Exclusive))
            .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
        Ok(f)
    }

    fn saw(&self, generation: u64) {
        let mut map = high_water().lock().unwrap_or_else(|e| e.into_inner());
        let seen = map.entry(self.canonical.clone()).or_insert(0);
        *seen = (*seen).max(generation);
    }

    /// Reads, opens and checks the current keystore; the caller holds the lock.
    fn load(&self) -> Result<Keystore> {
        let seal = self.seal.read().unwrap_or_else(|e| e.into_inner()).clone();
        self.load_with(&seal)
    }

    fn load_with(&self, seal: &SealKey) -> Result<Keystore> {
        let bytes = read_file(&self.path)?;
        let raw = parse_file(&bytes, &self.path, self.max_argon2)?;
        if raw.kdf != seal.kdf || !ct_eq(&raw.check, &seal.check) {
            return Err(Error::WrongRootSecret {
                path: self.path.clone(),
            });
        }
        let mut body = Zeroizing::new(raw.sealed.to_vec());
        let plain = seal
            .gcm()?
            .open_in_place(
                Nonce::assume_unique_for_key(raw.nonce),
                Aad::from(raw.header),
                body.as_mut_slice(),
            )
            .map_err(|_| Error::integrity(format!("keystore {} (sealed body)", self.path.display())))?;
        let ks = Keystore::decode_body(plain)
            .map_err(|e| Error::integrity(format!("keystore {}: {e}", self.path.display())))?;
        let mut map = high_water().lock().unwrap_or_else(|e| e.into_inner());
        let seen = map.entry(self.canonical.clone()).or_insert(0);
        if ks.generation < *seen {
            return Err(Error::integrity(format!(
                "keystore {}: rolled back to generation {} after this process saw generation {}",
                self.path.display(),
                ks.generation,
                *seen
            )));
        }
        *seen = ks.generation;
        Ok(ks)
    }

    fn read(&self, how: Lock) -> Result<Keystore> {
        let _lock = Self::take_lock(&self.lock_path, how)?;
        self.load()
    }

    /// Gives every intent record that no outcome resolves the outcome that actually happened: the
    /// keystore anchors the intent of its last committed change (its generation is the intent's), so
    /// that intent succeeded; any other unresolved intent is a change whose keystore write never took
    /// effect. The caller holds the exclusive lock and has just loaded `ks`.
    fn reconcile(&self, ks: &Keystore) -> Result<()> {
        let now = self.clock.now();
        for intent in audit::unresolved_intents(&self.audit_path, &ks.audit_key, ks.audit_head, now)? {
            let AuditOutcome::Intent { generation } = intent.outcome else {
                continue;
            };
            let took = intent.seq == ks.audit_head.seq && generation == ks.generation;
            let outcome = if took {
                AuditOutcome::Success
            } else {
                AuditOutcome::Failure(format!(
                    "not committed: the keystore is at generation {}, the change would have written generation \
                     {generation} (found at the next open; the writer stopped before it could record this)",
                    ks.generation
                ))
            };
            let mut entry = AuditEntry::new(intent.action, intent.key.as_ref(), intent.principal.as_ref());
            entry.version = intent.version;
            entry.detail = if took {
                format!(
                    "{} (committed as generation {generation}; recorded at the next open, the writer stopped \
                     before it could)",
                    intent.detail
                )
            } else {
                intent.detail.clone()
            };
            audit::append_resolving(&self.audit_path, &ks.audit_key, now, &entry, &outcome, Some(intent.seq))?;
        }
        Ok(())
    }

    /// An administrative change: under the exclusive lock, load, apply `f`, audit, and write the next
    /// generation. See [`LocalKms::commit`].
    fn update(
        &self,
        entry: AuditEntry,
        f: impl FnOnce(&mut Keystore, SystemTime, &mut AuditEntry) -> Result<KeyMetadata>,
    ) -> Result<KeyMetadata> {
        self.commit(entry, f, None)
    }

    /// An administrative change, in this order under the exclusive lock on the keystore:
    ///
    /// 1. load the keystore and [reconcile](Self::reconcile) the log with it;
    /// 2. apply `f`; a refusal is recorded as a failure and nothing else happens;
    /// 3. append an *intent* record naming the generation about to be written;
    /// 4. write the next generation, which anchors that intent (a crash here leaves either the old
    ///    keystore or the new one, never a mix);
    /// 5. append the *outcome*: success if the new generation is on disk (checked again after a
    ///    failed write, since a rename can succeed before its error), else failure.
    ///
    /// So the log never states an outcome that did not take effect, and a change that took effect
    /// without its outcome record (a crash between 4 and 5) gets it at the next open or change.
    /// `new_seal` re-seals the keystore under a new root secret.
    fn commit<T>(
        &self,
        mut entry: AuditEntry,
        f: impl FnOnce(&mut Keystore, SystemTime, &mut AuditEntry) -> Result<T>,
        new_seal: Option<SealKey>,
    ) -> Result<T> {
        let _lock = Self::take_lock(&self.lock_path, Lock::Exclusive)?;
        let mut ks = self.load()?;
        self.reconcile(&ks)?;
        let now = self.clock.now();
        let result = f(&mut ks, now, &mut entry).and_then(|meta| {
            if ks.seals >= MAX_SEALS_PER_ROOT {
                return Err(Error::KeyLimit {
                    what: "keystore writes under one root secret; change the root secret".into(),
                });
            }
            Ok(meta)
        });
        let meta = match result {
            Ok(meta) => meta,
            Err(e) => {
                // A refused attempt changes nothing; its record is chained but not anchored in the
                // keystore until the next change (SECURITY.md: it can be cut until then).
                audit::append(
                    &self.audit_path,
                    &ks.audit_key,
                    now,
                    &entry,
                    &AuditOutcome::Failure(e.to_string()),
                )?;
                return Err(e);
            }
        };
        let target = ks.generation + 1;
        let intent = audit::append(
            &self.audit_path,
            &ks.audit_key,
            now,
            &entry,
            &AuditOutcome::Intent { generation: target },
        )?;
        ks.audit_head = intent;
        ks.generation = target;
        ks.seals += 1;
        let current = self.seal.read().unwrap_or_else(|e| e.into_inner()).clone();
        let seal: &SealKey = new_seal.as_ref().unwrap_or(&current);
        let written = write_keystore(&self.path, &ks, seal);
        let took = written.is_ok()
            || self
                .load_with(seal)
                .is_ok_and(|on_disk| on_disk.generation == target && on_disk.audit_head == intent);
        let outcome = match &written {
            Err(e) if !took => AuditOutcome::Failure(format!("not committed: {e}")),
            _ => AuditOutcome::Success,
        };
        // If this record cannot be written, the next open or change writes it (reconciliation).
        let _ = audit::append_resolving(&self.audit_path, &ks.audit_key, now, &entry, &outcome, Some(intent.seq));
        if !took {
            return Err(written.err().unwrap_or(Error::Crypto("keystore write")));
        }
        self.saw(target);
        if let Some(new) = new_seal {
            *self.seal.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        }
        Ok(meta)
    }

    /// A key use: load the current keystore under the shared lock, apply `f`, audit the outcome (a use
    /// that cannot be audited is refused).
    fn use_key<T>(&self, mut entry: AuditEntry, f: impl FnOnce(&Keystore, &mut AuditEntry) -> Result<T>) -> Result<T> {
        let ks = self.read(Lock::Shared)?;
        let result = f(&ks, &mut entry);
        let outcome = match &result {
            Ok(_) => AuditOutcome::Success,
            Err(e) => AuditOutcome::Failure(e.to_string()),
        };
        audit::append(&self.audit_path, &ks.audit_key, self.clock.now(), &entry, &outcome)?;
        result
    }

    fn check_kms(&self, wrapped: &WrappedKey) -> Result<()> {
        if wrapped.kms() != self.name {
            return Err(Error::InvalidArgument(format!(
                "the wrapped key belongs to KMS {:?}, not to this KMS {:?}",
                wrapped.kms(),
                self.name
            )));
        }
        Ok(())
    }

    #[cfg(test)]
    fn plaintext_body(&self) -> Zeroizing<Vec<u8>> {
        let _l = Self::take_lock(&self.lock_path, Lock::Shared).unwrap();
        let ks = self.load().unwrap();
        ks.encode_body().unwrap()
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(|e| Error::io(format!("opening keystore {}", path.display()), e))?;
    let mut buf = Vec::new();
    f.take((HEADER_LEN + 4 + MAX_KEYSTORE_BODY_LEN + GCM_TAG_LEN) as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("reading keystore {}", path.display()), e))?;
    Ok(buf)
}

/// The directory of a keystore and the prefix of its temporary files (`.<name>.tmp-`).
fn temp_prefix(path: &Path) -> (PathBuf, String) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, format!(".{file_name}.tmp-"))
}

/// Removes the temporary keystores a killed write left beside `path`: older sealed copies that may
/// still hold keys deleted since, which would defeat crypto-shredding. The caller holds the exclusive
/// lock, so no write is in progress and every such file is a leftover.
fn remove_leftover_temps(path: &Path) -> Result<()> {
    let (dir, prefix) = temp_prefix(path);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let p = entry.path();
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("removing leftover temporary keystore {}", p.display()),
                        e,
                    ))
                }
            }
        }
    }
    Ok(())
}

/// A temporary file that is removed when dropped unless it was renamed into place, so no error path
/// (or panic) leaves an older sealed copy of the keystore behind.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Test-only fault injection: a keystore write whose path is registered fails after the temporary
/// file was written, before the rename.
#[cfg(test)]
pub(super) fn fail_writes_to(path: &Path) {
    FAILING_WRITES.lock().unwrap().push(path.to_path_buf());
}
#[cfg(test)]
static FAILING_WRITES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
#[cfg(test)]
fn injected_failure(path: &Path) -> bool {
    FAILING_WRITES.lock().unwrap().iter().any(|p| p == path)
}
#[cfg(not(test))]
fn injected_failure(_: &Path) -> bool {
    false
}

/// Seals `ks` and replaces the file atomically: temp file in the same directory, fsync, rename, fsync
/// of the directory. The temporary file is removed on every error path.
fn write_keystore(path: &Path, ks: &Keystore, seal: &SealKey) -> Result<()> {
    let mut body = ks.encode_body()?;
    if body.len() > MAX_KEYSTORE_BODY_LEN {
        return Err(Error::KeyLimit {
            what: "the keystore is too large".into(),
        });
    }
    let nonce = random_array::<GCM_NONCE_LEN>()?;
    let header = encode_header(&seal.kdf, &seal.check, &nonce);
    seal.gcm()?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&header), &mut *body)
        .map_err(|_| Error::Crypto("AES-256-GCM seal failed"))?;
    let mut file = header;
    file.extend_from_slice(&(body.len() as u32).to_be_bytes());
    file.extend_from_slice(&body);

    let (dir, prefix) = temp_prefix(path);
    let mut tmp = TempFile {
        path: dir.join(format!("{prefix}{}", hex(&random_array::<8>()?))),
        armed: false,
    };
    let ctx = || format!("writing keystore {}", path.display());
    let result = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp.path)?;
        tmp.armed = true;
        f.write_all(&file)?;
        f.sync_all()?;
        drop(f);
        if injected_failure(path) {
            return Err(std::io::Error::other("injected failure before the rename"));
        }
        fs::rename(&tmp.path, path)?;
        tmp.armed = false;
        #[cfg(unix)]
        File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    drop(tmp);
    result.map_err(|e: std::io::Error| Error::io(ctx(), e))
}

fn validate_alias(alias: &str) -> Result<()> {
    if alias.is_empty() || alias.len() > MAX_ALIAS_LEN || alias.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "an alias is 1 to {MAX_ALIAS_LEN} bytes without control characters: {alias:?}"
        )));
    }
    Ok(())
}

impl Kms for LocalKms {
    fn name(&self) -> &str {
        &self.name
    }

    fn rotation_epoch(&self) -> u64 {
        self.rotations.load(Ordering::SeqCst)
    }

    fn generate_data_key(
        &self,
        principal: &Principal,
        key: &KeyId,
        ctx: &EncryptionContext,
    ) -> Result<(SecretKey, WrappedKey)> {
        let entry = AuditEntry::new(AuditAction::GenerateDataKey, Some(key), Some(principal));
        self.use_key(entry, |ks, entry| {
            let rec = ks.find(key)?;
            rec.check_usable(principal)?;
            entry.version = Some(rec.primary);
            let material = rec.material(rec.primary)?;
            let dek = SecretKey::generate()?;
            let wrapped = kms_wrap(material, &self.name, key, rec.primary, ctx, &dek)?;
            Ok((dek, wrapped))
        })
    }

    fn decrypt_data_key(
        &self,
        principal: &Principal,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<SecretKey> {
        let mut entry = AuditEntry::new(AuditAction::DecryptDataKey, Some(wrapped.key_id()), Some(principal));
        entry.version = Some(wrapped.version());
        self.use_key(entry, |ks, _| {
            self.check_kms(wrapped)?;
            let rec = ks.find(wrapped.key_id())?;
            rec.check_usable(principal)?;
            kms_unwrap(rec.material(wrapped.version())?, wrapped, ctx)
        })
    }

    fn rewrap(&self, principal: &Principal, wrapped: &WrappedKey, ctx: &EncryptionContext) -> Result<WrappedKey> {
        let mut entry = AuditEntry::new(AuditAction::Rewrap, Some(wrapped.key_id()), Some(principal));
        entry.detail = format!("from version {}", wrapped.version());
        self.use_key(entry, |ks, entry| {
            self.check_kms(wrapped)?;
            let rec = ks.find(wrapped.key_id())?;
            rec.check_usable(principal)?;
            entry.version = Some(rec.primary);
            let dek = kms_unwrap(rec.material(wrapped.version())?, wrapped, ctx)?;
            kms_wrap(rec.material(rec.primary)?, &self.name, &rec.id, rec.primary, ctx, &dek)
        })
    }
}

impl KmsAdmin for LocalKms {
    fn create_key(&self, request: CreateKeyRequest) -> Result<KeyMetadata> {
        let CreateKeyRequest {
            origin,
            alias,
            import,
            grants,
        } = request;
        let mut entry = AuditEntry::new(AuditAction::CreateKey, None, None);
        entry.detail = format!(
            "origin {}, {} material{}",
            match &origin {
                KeyOrigin::ProjectDefault { project } => format!("project default of {project}"),
                KeyOrigin::Byok => "BYOK".into(),
            },
            if import.is_some() { "imported" } else { "generated" },
            alias.as_deref().map(|a| format!(", alias {a:?}")).unwrap_or_default()
        );
        self.update(entry, |ks, now, entry| {
            if let Some(a) = &alias {
                validate_alias(a)?;
                if ks
                    .keys
                    .iter()
                    .any(|k| k.alias.as_deref() == Some(a) && k.state != StoredState::Deleted)
                {
                    return Err(Error::InvalidArgument(format!("alias {a:?} is already in use")));
                }
            }
            if import.is_some() && origin != KeyOrigin::Byok {
                return Err(Error::InvalidArgument(
                    "only a BYOK key can import material; a project default key is generated".into(),
                ));
            }
            if ks.keys.len() >= MAX_KEYS {
                return Err(Error::KeyLimit {
                    what: format!("a keystore holds at most {MAX_KEYS} keys"),
                });
            }
            let mut all_grants: Vec<Principal> = Vec::new();
            if let KeyOrigin::ProjectDefault { project } = &origin {
                all_grants.push(project.clone());
            }
            for g in grants {
                if !all_grants.contains(&g) {
                    all_grants.push(g);
                }
            }
            if all_grants.len() > MAX_GRANTS {
                return Err(Error::KeyLimit {
                    what: format!("a key has at most {MAX_GRANTS} grants"),
                });
            }
            let id = loop {
                let id = KeyId::generate()?;
                if ks.keys.iter().all(|k| k.id != id) {
                    break id;
                }
            };
            entry.key = Some(id.clone());
            entry.version = Some(1);
            let material = match import {
                Some(m) => Box::new(m),
                None => Box::new(SecretKey::generate()?),
            };
            ks.keys.push(KeyRecord {
                id,
                alias,
                origin,
                state: StoredState::Enabled,
                created: now,
                primary: 1,
                versions: vec![VersionRecord {
                    created: now,
                    material: Some(material),
                }],
                grants: all_grants,
            });
            Ok(ks.keys.last().expect("just pushed").metadata())
        })
    }

    fn describe(&self, key: &KeyId) -> Result<KeyMetadata> {
        Ok(self.read(Lock::Shared)?.find(key)?.metadata())
    }

    fn list(&self) -> Result<Vec<KeyMetadata>> {
        Ok(self.read(Lock::Shared)?.keys.iter().map(KeyRecord::metadata).collect())
    }

    fn enable(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(AuditEntry::new(AuditAction::Enable, Some(key), None), |ks, _, _| {
            let rec = ks.find_mut(key)?;
            rec.check_administrable("enable")?;
            rec.state = StoredState::Enabled;
            Ok(rec.metadata())
        })
    }

    fn disable(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(AuditEntry::new(AuditAction::Disable, Some(key), None), |ks, _, _| {
            let rec = ks.find_mut(key)?;
            rec.check_administrable("disable")?;
            rec.state = StoredState::Disabled;
            Ok(rec.metadata())
        })
    }

    fn schedule_deletion(&self, key: &KeyId, days: u32) -> Result<KeyMetadata> {
        let mut entry = AuditEntry::new(AuditAction::ScheduleDeletion, Some(key), None);
        entry.detail = format!("{days} days");
        self.update(entry, |ks, now, entry| {
            if !(7..=30).contains(&days) {
                return Err(Error::InvalidArgument(format!(
                    "a deletion window is 7 to 30 days, got {days}"
                )));
            }
            let rec = ks.find_mut(key)?;
            rec.check_administrable("schedule the deletion of")?;
            let resume = if rec.state == StoredState::Enabled {
                Resume::Enabled
            } else {
                Resume::Disabled
            };
            let until = now
                .checked_add(Duration::from_secs(u64::from(days) * SECS_PER_DAY))
                .ok_or_else(|| Error::InvalidArgument("the clock is too far in the future".into()))?;
            entry.detail = format!("{days} days, until {} s since the epoch", unix_secs(until));
            rec.state = StoredState::PendingDeletion { until, resume };
            Ok(rec.metadata())
        })
    }

    fn cancel_deletion(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(
            AuditEntry::new(AuditAction::CancelDeletion, Some(key), None),
            |ks, _, _| {
                let rec = ks.find_mut(key)?;
                match rec.state {
                    StoredState::PendingDeletion { resume, .. } => {
                        rec.state = match resume {
                            Resume::Enabled => StoredState::Enabled,
                            Resume::Disabled => StoredState::Disabled,
                        };
                        Ok(rec.metadata())
                    }
                    _ => Err(Error::InvalidKeyState(format!(
                        "cannot cancel the deletion of key {}: no deletion is scheduled",
                        rec.id
                    ))),
                }
            },
        )
    }

    fn delete_key(&self, key: &KeyId) -> Result<KeyMetadata> {
        self.update(
            AuditEntry::new(AuditAction::DeleteKey, Some(key), None),
            |ks, now, _| {
                let rec = ks.find_mut(key)?;
                match rec.state {
                    StoredState::PendingDeletion { until, .. } if now >= until => {
                        for v in &mut rec.versions {
                            v.material = None; // dropping the key zeroizes it
                        }
                        rec.state = StoredState::Deleted;
                        Ok(rec.metadata())
                    }
                    StoredState::PendingDeletion { until, .. } => Err(Error::InvalidKeyState(format!(
                        "cannot delete key {} before its deletion window ends ({} s since the epoch)",
                        rec.id,
                        unix_secs(until)
                    ))),
                    _ => Err(Error::InvalidKeyState(format!(
                        "cannot delete key {}: schedule its deletion first",
                        rec.id
                    ))),
                }
            },
        )
    }

    fn rotate(&self, key: &KeyId) -> Result<KeyMetadata> {
        let meta = self.update(
            AuditEntry::new(AuditAction::Rotate, Some(key), None),
            |ks, now, entry| {
                let rec = ks.find_mut(key)?;
                if rec.state != StoredState::Enabled {
                    rec.check_administrable("rotate")?;
                    return Err(Error::InvalidKeyState(format!(
                        "cannot rotate key {}: it is disabled (enable it first)",
                        rec.id
                    )));
                }
                if rec.versions.len() >= MAX_VERSIONS {
                    return Err(Error::KeyLimit {
                        what: format!("a key has at most {MAX_VERSIONS} versions"),
                    });
                }
                rec.versions.push(VersionRecord {
                    created: now,
                    material: Some(Box::new(SecretKey::generate()?)),
                });
                rec.primary = rec.versions.len() as u32;
                entry.version = Some(rec.primary);
                Ok(rec.metadata())
            },
        )?;
        // Caches in front of this value drop their writer KEKs (see `Kms::rotation_epoch`).
        self.rotations.fetch_add(1, Ordering::SeqCst);
        Ok(meta)
    }

    fn destroy_version(&self, key: &KeyId, version: u32) -> Result<KeyMetadata> {
        let mut entry = AuditEntry::new(AuditAction::DestroyVersion, Some(key), None);
        entry.version = Some(version).filter(|v| *v != 0);
        let delay = self.version_destroy_delay;
        self.update(entry, |ks, now, _| {
            let rec = ks.find_mut(key)?;
            rec.check_administrable("destroy a version of")?;
            if version == 0 || version as usize > rec.versions.len() {
                return Err(Error::InvalidArgument(format!(
                    "key {} has no version {version}",
                    rec.id
                )));
            }
            if version == rec.primary {
                return Err(Error::InvalidKeyState(format!(
                    "cannot destroy version {version} of key {}: it is the primary version (rotate first)",
                    rec.id
                )));
            }
            // Version v was superseded when version v + 1 was created (a rotation makes its new version
            // primary). Until the delay has passed since then, a writer anywhere may still hold a KEK
            // generated under v in its cache and wrap new data keys with it.
            let superseded =
                rec.versions.get(version as usize).map(|v| v.created).ok_or_else(|| {
                    Error::InvalidKeyState(format!("version {version} of key {} is the newest", rec.id))
                })?;
            let not_before = superseded.checked_add(delay).unwrap_or(superseded);
            if now < not_before {
                return Err(Error::VersionDestroyTooEarly {
                    key: rec.id.to_string(),
                    version,
                    superseded_unix_secs: unix_secs(superseded),
                    not_before_unix_secs: unix_secs(not_before).max(unix_secs(superseded) + 1),
                });
            }
            rec.versions[version as usize - 1].material = None;
            Ok(rec.metadata())
        })
    }

    fn grant(&self, key: &KeyId, principal: &Principal) -> Result<KeyMetadata> {
        self.update(
            AuditEntry::new(AuditAction::Grant, Some(key), Some(principal)),
            |ks, _, _| {
                let rec = ks.find_mut(key)?;
                rec.check_administrable("grant use of")?;
                if !rec.grants.contains(principal) {
                    if rec.grants.len() >= MAX_GRANTS {
                        return Err(Error::KeyLimit {
                            what: format!("a key has at most {MAX_GRANTS} grants"),
                        });
                    }
                    rec.grants.push(principal.clone());
                }
                Ok(rec.metadata())
            },
        )
    }

    fn revoke(&self, key: &KeyId, principal: &Principal) -> Result<KeyMetadata> {
        self.update(
            AuditEntry::new(AuditAction::Revoke, Some(key), Some(principal)),
            |ks, _, _| {
                let rec = ks.find_mut(key)?;
                rec.check_administrable("revoke use of")?;
                rec.grants.retain(|g| g != principal);
                Ok(rec.metadata())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn opts(clock: Arc<ManualClock>) -> LocalKmsOptions {
        LocalKmsOptions::new()
            .with_clock(clock)
            .with_argon2(Argon2Params::insecure_for_tests())
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// Deletion removes the material from the plaintext state (the sealed body), not just from the
    /// metadata; destroying a version does the same for that version.
    #[test]
    fn deletion_removes_material_from_the_plaintext_state() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let kms = LocalKms::create(
            dir.path().join("ks"),
            RootSecret::passphrase("a test passphrase"),
            opts(clock.clone()),
        )
        .unwrap();
        let v1 = [0x5a; 32];
        let meta = kms
            .create_key(CreateKeyRequest::byok().with_import(SecretKey::from_slice(&v1).unwrap()))
            .unwrap();
        let other = [0x6b; 32];
        kms.create_key(CreateKeyRequest::byok().with_import(SecretKey::from_slice(&other).unwrap()))
            .unwrap();
        assert!(contains(&kms.plaintext_body(), &v1));
        // The sealed file never holds it in the clear.
        assert!(!contains(&fs::read(kms.path()).unwrap(), &v1));

        kms.schedule_deletion(&meta.id, 7).unwrap();
        clock.advance(Duration::from_secs(7 * SECS_PER_DAY));
        let deleted = kms.delete_key(&meta.id).unwrap();
        assert_eq!(deleted.state, KeyState::Deleted);
        assert!(deleted.versions.iter().all(|v| v.state == KeyVersionState::Destroyed));
        let body = kms.plaintext_body();
        assert!(!contains(&body, &v1), "the deleted key's material is gone");
        assert!(contains(&body, &other), "the other key's material is still there");
    }

    #[test]
    fn data_keys_never_reach_the_audit_log_or_the_keystore() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let kms = LocalKms::create(
            dir.path().join("ks"),
            RootSecret::passphrase("a test passphrase"),
            opts(clock),
        )
        .unwrap();
        let p = Principal::new("p").unwrap();
        let id = kms.create_key(CreateKeyRequest::project_default(p.clone())).unwrap().id;
        let ctx = EncryptionContext::new().with("project", "p");
        let (dek, w) = kms.generate_data_key(&p, &id, &ctx).unwrap();
        let dek2 = kms.decrypt_data_key(&p, &w, &ctx).unwrap();
        let w2 = kms.rewrap(&p, &w, &ctx).unwrap();
        assert_eq!(dek, dek2);
        let audit = fs::read(kms.audit_path()).unwrap();
        let ks = kms.read(Lock::Shared).unwrap();
        let cmk = ks.find(&id).unwrap().material(1).unwrap().expose().to_vec();
        for secret in [&dek.expose()[..], &cmk, ks.audit_key.expose()] {
            assert!(!contains(&audit, secret));
            assert!(!contains(&fs::read(kms.path()).unwrap(), secret));
        }
        assert!(!contains(&audit, w.ciphertext()) && !contains(&audit, w2.ciphertext()));
        assert!(!contains(&kms.plaintext_body(), dek.expose()), "DEKs are never stored");
    }

    #[test]
    fn imported_material_is_version_one() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let kms = LocalKms::create(
            dir.path().join("ks"),
            RootSecret::passphrase("a test passphrase"),
            opts(clock),
        )
        .unwrap();
        let m = SecretKey::from_slice(&[0x11; 32]).unwrap();
        let meta = kms.create_key(CreateKeyRequest::byok().with_import(m.clone())).unwrap();
        let ks = kms.read(Lock::Shared).unwrap();
        assert_eq!(ks.find(&meta.id).unwrap().material(1).unwrap(), &m);
        // And a project default key refuses imported material.
        let p = Principal::new("p").unwrap();
        assert!(matches!(
            kms.create_key(CreateKeyRequest::project_default(p).with_import(m)),
            Err(Error::InvalidArgument(_))
        ));
    }

    /// A keystore write that fails after its temporary file was written (injected before the
    /// rename) leaves no temporary file, and the log records the intent and a failure, never a
    /// success; the keystore is unchanged.
    #[test]
    fn a_failed_keystore_write_leaves_no_temporary_file_and_claims_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let kms = LocalKms::create(
            dir.path().join("ks"),
            RootSecret::passphrase("a test passphrase"),
            opts(clock),
        )
        .unwrap();
        fail_writes_to(kms.path());
        let e = kms
            .create_key(CreateKeyRequest::byok().with_alias("never"))
            .unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
        assert!(kms.list().unwrap().is_empty());
        let log = kms.audit_log().unwrap();
        let (intent, outcome) = (&log[log.len() - 2], &log[log.len() - 1]);
        assert!(matches!(intent.outcome, AuditOutcome::Intent { generation: 2 }));
        assert_eq!(outcome.resolves, Some(intent.seq));
        assert!(matches!(&outcome.outcome, AuditOutcome::Failure(m) if m.contains("not committed")));
        assert!(log
            .iter()
            .all(|r| r.action != AuditAction::CreateKey || r.outcome != AuditOutcome::Success));
    }

    #[test]
    fn body_round_trips_and_header_is_fixed_size() {
        let seal = SealKey::fresh(
            &RootSecret::KeyFile(SecretKey::generate().unwrap()),
            Argon2Params::DEFAULT,
            Argon2Params::DEFAULT_MAX,
        )
        .unwrap();
        assert_eq!(encode_header(&seal.kdf, &seal.check, &[0; 12]).len(), HEADER_LEN);
        assert_eq!(seal.kdf.argon2.m_cost_kib, 0);
        let ks = Keystore {
            generation: 9,
            seals: 3,
            audit_key: SecretKey::generate().unwrap(),
            audit_head: AuditHead { seq: 4, mac: [3; 32] },
            keys: Vec::new(),
        };
        let b = ks.encode_body().unwrap();
        let back = Keystore::decode_body(&b).unwrap();
        assert_eq!((back.generation, back.seals, back.audit_head), (9, 3, ks.audit_head));
        assert_eq!(back.audit_key, ks.audit_key);
        assert!(Keystore::decode_body(&b[..b.len() - 1]).is_err());
    }
}
