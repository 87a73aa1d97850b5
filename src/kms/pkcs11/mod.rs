//! `Pkcs11Kms`: CMKs held in a PKCS#11 token (an HSM, or SoftHSM2 in tests).
//!
//! # What lives on the token
//!
//! * Each version of each CMK is its own non-extractable, sensitive AES-256 secret-key object
//!   ([`objects`]: `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE = true`, `CKA_EXTRACTABLE = false`),
//!   found by label and `CKA_ID`. Its material never leaves the token.
//! * Wrapping a data key (or a KEK) is AES-256-GCM encryption on the token (`CKM_AES_GCM`, PKCS#11
//!   v2.40 section 2.12.3; NIST SP 800-38D) with the KMS name, key id, version and encryption context
//!   as associated data ([`wrap`]), under a 96-bit random IV (SP 800-38D section 8.2.2), at most 2^32
//!   times per key version, counted on the token.
//! * States, versions, grants, alias and origin live in one private `CKO_DATA` object, sealed with
//!   AES-256-GCM under a metadata key that is itself a non-extractable token object ([`record`]).
//! * Destroying a version or deleting a key destroys its token objects (`C_DestroyObject`): the
//!   material is gone from the token, which is real crypto-shredding (as far as the token's own
//!   backups go: see `SECURITY.md`).
//!
//! # Semantics
//!
//! The same as [`super::LocalKms`]: grant then state checked on every call, 7 to 30 day deletion
//! windows measured by the injected [`Clock`], a version destroy delay (the longest KEK lifetime)
//! enforced with [`Error::VersionDestroyTooEarly`], and [`Kms::rotation_epoch`] bumped by every
//! rotation through this value. [`KmsAdmin::state_generation`] is `None`: the token keeps its own state.
//!
//! # Concurrency
//!
//! Within a process, updates of the state record are serialised per token and every call reads the
//! current record, so a disable is seen by the next call. A record older than one this process has
//! already seen is refused as a rollback ([`Error::Integrity`]). Between processes, PKCS#11 offers no
//! lock: two processes administering the same token at the same instant can lose one update, or
//! leave two records of the same generation, which is refused ([`Error::Integrity`]) rather than
//! guessed at; run administration from one place.

mod admin;
pub mod objects;
mod record;
mod session;
pub mod wrap;

pub use objects::{version_label, version_object_id};
pub use session::context;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use zeroize::Zeroizing;

use self::record::State;
use self::session::{lock, p11, TokenShared};
use super::cache::MAX_KEK_LIFETIME;
use super::types::KeyId;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// The name of this KMS, recorded in every key it wraps.
pub const PKCS11_KMS_NAME: &str = "pkcs11";
/// The environment variable holding the token's user PIN.
pub const PIN_ENV: &str = "COLVAULT_PKCS11_PIN";
/// How many AES-GCM invocations under one key version a process reserves in the state record at a
/// time (see [`wrap`]): one record update per this many wraps.
pub const WRAP_LEASE: u64 = 1024;

/// How to open a [`Pkcs11Kms`]: the module, the token, the PIN and the clock.
pub struct Pkcs11Options {
    module: PathBuf,
    token_label: String,
    pin: Option<Zeroizing<String>>,
    clock: Arc<dyn Clock>,
    version_destroy_delay: Duration,
}

impl fmt::Debug for Pkcs11Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Options")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &self.pin.as_ref().map(|_| "<set>"))
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Options {
    /// The PKCS#11 module (a shared library such as `/usr/lib/softhsm/libsofthsm2.so`) and the label
    /// of the token in it.
    pub fn new(module: impl Into<PathBuf>, token_label: impl Into<String>) -> Self {
        Pkcs11Options {
            module: module.into(),
            token_label: token_label.into(),
            pin: None,
            clock: Arc::new(SystemClock),
            version_destroy_delay: MAX_KEK_LIFETIME,
        }
    }

    /// The user PIN. Without it, [`PIN_ENV`] (`COLVAULT_PKCS11_PIN`), else a prompt on the terminal.
    pub fn with_pin(mut self, pin: Zeroizing<String>) -> Self {
        self.pin = Some(pin);
        self
    }

    /// The clock that measures deletion windows and the version destroy delay.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// A KMS whose CMKs are non-extractable AES-256 objects in a PKCS#11 token. See the
/// [module documentation](self).
pub struct Pkcs11Kms {
    module: PathBuf,
    token_label: String,
    /// `pkcs11:<module>;token=<label>`, for messages.
    display: String,
    clock: Arc<dyn Clock>,
    version_destroy_delay: Duration,
    shared: Arc<TokenShared>,
    /// The session (PKCS#11 sessions are not to be used from two threads at once).
    session: Mutex<Session>,
    /// AES-GCM invocations this value has reserved and not used yet, per (key, version).
    leases: Mutex<HashMap<(KeyId, u32), u64>>,
    /// Rotations made through this value ([`crate::kms::Kms::rotation_epoch`]).
    rotations: AtomicU64,
}

impl fmt::Debug for Pkcs11Kms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Kms")
            .field("kms", &self.display)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The PIN: given, else `COLVAULT_PKCS11_PIN`, else a prompt. Never logged.
fn resolve_pin(opts_pin: Option<Zeroizing<String>>, display: &str) -> Result<Zeroizing<String>> {
    if let Some(p) = opts_pin {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os(PIN_ENV) {
        let p = Zeroizing::new(
            p.into_string()
                .map_err(|_| Error::InvalidArgument(format!("{PIN_ENV} is not valid UTF-8")))?,
        );
        return Ok(p);
    }
    rpassword::prompt_password(format!("PIN for {display}: "))
        .map(Zeroizing::new)
        .map_err(|e| Error::io(format!("reading the PIN for {display} (or set {PIN_ENV})"), e))
}

impl Pkcs11Kms {
    /// Opens the token: loads and initialises the module (once per process), finds the token by label,
    /// logs in as the user, and creates the metadata key and an empty state record on first use.
    ///
    /// A refused PIN is [`Error::KmsAuthentication`]; a missing token [`Error::InvalidArgument`]; a
    /// state record that the metadata key did not seal [`Error::Integrity`].
    pub fn open(opts: Pkcs11Options) -> Result<Self> {
        let Pkcs11Options {
            module,
            token_label,
            pin,
            clock,
            version_destroy_delay,
        } = opts;
        let canonical = session::canonical_module(&module)?;
        let display = format!("pkcs11:module={};token={token_label}", module.display());
        let ctx = session::context(&canonical)?;
        let slot = session::find_slot(&ctx, &module, &token_label)?;
        let pin = resolve_pin(pin, &display)?;
        let sess = ctx.open_rw_session(slot).map_err(|e| p11("C_OpenSession", e))?;
        let shared = session::token_shared(&canonical, &token_label);
        session::login(&sess, &shared, &display, &pin)?;
        drop(pin);
        let kms = Pkcs11Kms {
            module: canonical,
            token_label,
            display,
            clock,
            version_destroy_delay,
            shared,
            session: Mutex::new(sess),
            leases: Mutex::new(HashMap::new()),
            rotations: AtomicU64::new(0),
        };
        kms.ensure_state()?;
        Ok(kms)
    }

    /// The module path (canonical) and the token label.
    pub fn token(&self) -> (&std::path::Path, &str) {
        (&self.module, &self.token_label)
    }

    /// Creates the metadata key and an empty record if neither exists; then checks the record opens.
    fn ensure_state(&self) -> Result<()> {
        let _update = lock(&self.shared.update);
        let s = lock(&self.session);
        let key = objects::find_key(&s, objects::METADATA_KEY_LABEL, objects::METADATA_KEY_LABEL.as_bytes())?;
        let recs = objects::find_states(&s)?;
        match (key, recs.is_empty()) {
            (Some(key), false) => {
                self.load_from(&s, key, &recs)?;
            }
            (None, true) => {
                let key =
                    objects::generate_key(&s, objects::METADATA_KEY_LABEL, objects::METADATA_KEY_LABEL.as_bytes())?;
                let state = State {
                    generation: 1,
                    seals: 1,
                    keys: Vec::new(),
                };
                objects::create_state(&s, record::seal(&s, key, &state)?)?;
                self.saw(1);
            }
            (Some(_), true) => {
                return Err(Error::integrity(format!(
                    "{}: the colvault state record is missing although its metadata key exists (removed \
                     outside colvault: restore the token from a backup)",
                    self.display
                )))
            }
            (None, false) => {
                return Err(Error::integrity(format!(
                    "{}: the colvault metadata key is missing, so the state record cannot be opened",
                    self.display
                )))
            }
        }
        Ok(())
    }

    fn saw(&self, generation: u64) {
        let mut seen = lock(&self.shared.seen_generation);
        *seen = (*seen).max(generation);
    }

    /// The handles of the metadata key and the state records.
    fn handles(&self, s: &Session) -> Result<(ObjectHandle, Vec<ObjectHandle>)> {
        let key = objects::find_key(s, objects::METADATA_KEY_LABEL, objects::METADATA_KEY_LABEL.as_bytes())?;
        let recs = objects::find_states(s)?;
        match key {
            Some(k) if !recs.is_empty() => Ok((k, recs)),
            _ => Err(Error::integrity(format!(
                "{}: the colvault metadata key or state record is missing",
                self.display
            ))),
        }
    }

    /// Opens every state record and keeps the newest. A record the metadata key did not seal is
    /// [`Error::Integrity`]; so are two records of the same generation (two processes updated the
    /// token at once: see the module documentation) and a generation older than one this process
    /// has seen (a rollback).
    fn load_from(&self, s: &Session, key: ObjectHandle, recs: &[ObjectHandle]) -> Result<State> {
        let mut newest: Option<State> = None;
        for rec in recs {
            let value = objects::read_state(s, *rec)?;
            let st = record::open(s, key, &value)?;
            match &newest {
                Some(n) if n.generation == st.generation => {
                    return Err(Error::integrity(format!(
                        "{}: two state records of generation {} (concurrent updates from two processes?)",
                        self.display, st.generation
                    )))
                }
                Some(n) if n.generation > st.generation => {}
                _ => newest = Some(st),
            }
        }
        let state = newest.ok_or_else(|| Error::integrity(format!("{}: no state record", self.display)))?;
        let seen = *lock(&self.shared.seen_generation);
        if state.generation < seen {
            return Err(Error::integrity(format!(
                "{}: the state record is at generation {}, this process has seen {seen} (rolled back)",
                self.display, state.generation
            )));
        }
        self.saw(state.generation);
        Ok(state)
    }

    /// The current state, read under the session lock the caller holds.
    fn load(&self, s: &Session) -> Result<State> {
        let (key, recs) = self.handles(s)?;
        self.load_from(s, key, &recs)
    }

    /// Reads the state, applies `f` (which may create or destroy token objects with the session it is
    /// given, after its checks), and writes the state back sealed, with its generation and seal count
    /// incremented. Nothing is written when `f` fails.
    fn update<T>(&self, f: impl FnOnce(&Session, &mut State, SystemTime) -> Result<T>) -> Result<T> {
        let _update = lock(&self.shared.update);
        let s = lock(&self.session);
        let (key, recs) = self.handles(&s)?;
        let mut state = self.load_from(&s, key, &recs)?;
        if state.seals >= record::MAX_GCM_INVOCATIONS {
            return Err(Error::KeyLimit {
                what: format!(
                    "{}: the metadata key sealed the state record 2^32 times (NIST SP 800-38D section 8.3)",
                    self.display
                ),
            });
        }
        let out = f(&s, &mut state, self.clock.now())?;
        state.generation += 1;
        state.seals += 1;
        objects::replace_state(&s, &recs, record::seal(&s, key, &state)?)?;
        self.saw(state.generation);
        Ok(out)
    }
}
