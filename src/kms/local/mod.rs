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
//! The body is specified in `format-spec/keys.md` (and beside `Keystore::encode_body` in `store.rs`).
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

mod admin;
mod file;
mod options;
mod root;
mod seal;
mod store;
#[cfg(test)]
mod tests;

pub use options::LocalKmsOptions;
pub use root::{Argon2Params, RootSecret, MIN_PASSPHRASE_CHARS};

use crate::codec::hex;
use file::*;
#[allow(unused_imports)]
use root::*;
use seal::*;
use store::*;

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
        for intent in audit::unresolved_intents(&self.audit_path, &ks.audit_key, ks.audit_head, ks.generation, now)? {
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
