//! The PKCS#11 plumbing: one initialised context per module per process, the token's slot found by
//! label, the user login, and the mapping of PKCS#11 return values to typed [`Error`]s.
//!
//! # One `C_Initialize` per process
//!
//! PKCS#11 v2.40 section 5.4 (`C_Initialize`) allows one initialisation per application: a second
//! call returns `CKR_CRYPTOKI_ALREADY_INITIALIZED`, and `C_Finalize` would close every session of the
//! process. So the initialised [`Pkcs11`] context of each module is kept for the life of the process in
//! a static map, keyed by the module's canonical path, and every [`super::Pkcs11Kms`] clones it.
//!
//! # Login is per token, not per session
//!
//! PKCS#11 v2.40 section 5.6 (`C_Login`): "When the user logs in, all sessions the application has
//! with the token are logged in". A second `C_Login` then returns `CKR_USER_ALREADY_LOGGED_IN`
//! without checking the PIN. So that a second opener in the same process cannot skip the PIN check,
//! a successful login leaves a verifier, HMAC-SHA256 of the PIN under a random per-process key,
//! and an opener that finds the token already logged in must present a PIN with the same verifier
//! (compared in constant time).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hmac::{KeyInit, Mac};
use zeroize::Zeroizing;

use crate::crypto::{ct_eq, random_array};
use crate::error::{Error, Result};

/// State shared by every [`super::Pkcs11Kms`] of this process on one token.
#[derive(Debug, Default)]
pub(super) struct TokenShared {
    /// The verifier of the PIN that last logged in successfully (see the module documentation).
    verifier: Mutex<Option<[u8; 32]>>,
    /// Serialises read-modify-write updates of the state record within this process.
    pub(super) update: Mutex<()>,
    /// The highest state-record generation this process has seen on the token (rollback check).
    pub(super) seen_generation: Mutex<u64>,
}

/// Locks a mutex, recovering from poisoning (every guarded value stays consistent across a panic:
/// it is replaced whole or not at all).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn contexts() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    CONTEXTS.get_or_init(Default::default)
}

/// The shared state of each token, by (canonical module path, token label).
type TokenMap = HashMap<(PathBuf, String), Arc<TokenShared>>;

fn tokens() -> &'static Mutex<TokenMap> {
    static TOKENS: OnceLock<Mutex<TokenMap>> = OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

/// A PKCS#11 failure that is not one colvault has a more precise variant for: [`Error::Io`] naming the
/// call. The message is the return value's name and description, never an argument.
pub(super) fn p11(what: &str, e: P11Error) -> Error {
    Error::io(format!("PKCS#11 {what}"), std::io::Error::other(e.to_string()))
}

/// The return value of a failed PKCS#11 call, if it was one.
pub(super) fn rv(e: &P11Error) -> Option<RvError> {
    match e {
        P11Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// The canonical path of a module, or [`Error::Io`].
pub(super) fn canonical_module(module: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(module).map_err(|e| Error::io(format!("opening PKCS#11 module {}", module.display()), e))
}

/// The process-wide, initialised PKCS#11 context of `module` (loaded and `C_Initialize`d on first
/// use). For tools and tests that need their own sessions beside a [`super::Pkcs11Kms`] on the same
/// module: a second context of the same module in one process would fail to initialise.
pub fn context(module: &Path) -> Result<Pkcs11> {
    let path = canonical_module(module)?;
    let mut map = lock(contexts());
    if let Some(c) = map.get(&path) {
        return Ok(c.clone());
    }
    let ctx = Pkcs11::new(&path).map_err(|e| p11(&format!("loading module {}", path.display()), e))?;
    match ctx.initialize(CInitializeArgs::OsThreads) {
        Ok(()) => {}
        // Another library in this process initialised the module first: its initialisation serves.
        Err(e) if rv(&e) == Some(RvError::CryptokiAlreadyInitialized) => {}
        Err(e) => return Err(p11("C_Initialize", e)),
    }
    map.insert(path, ctx.clone());
    Ok(ctx)
}

/// The state shared by this process's users of token `label` of `module`.
pub(super) fn token_shared(module: &Path, label: &str) -> Arc<TokenShared> {
    lock(tokens())
        .entry((module.to_path_buf(), label.to_owned()))
        .or_default()
        .clone()
}

/// The slot holding the initialised token labelled `label` (PKCS#11 pads labels to 32 bytes with
/// spaces; they are compared trimmed). None, or more than one, is [`Error::InvalidArgument`].
pub(super) fn find_slot(ctx: &Pkcs11, module: &Path, label: &str) -> Result<Slot> {
    let mut found = Vec::new();
    for slot in ctx
        .get_slots_with_initialized_token()
        .map_err(|e| p11("C_GetSlotList", e))?
    {
        let info = ctx.get_token_info(slot).map_err(|e| p11("C_GetTokenInfo", e))?;
        if info.label().trim_end() == label {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::InvalidArgument(format!(
            "PKCS#11 module {} has no initialised token labelled {label:?}",
            module.display()
        ))),
        _ => Err(Error::InvalidArgument(format!(
            "PKCS#11 module {} has {} tokens labelled {label:?}; labels must be unique",
            module.display(),
            found.len()
        ))),
    }
}

fn verifier_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| random_array().expect("the OS random number generator works"))
}

/// HMAC-SHA256 (FIPS 198-1) of the PIN under the per-process verifier key.
fn verifier(pin: &str) -> [u8; 32] {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(verifier_key()).expect("HMAC takes keys of any length");
    mac.update(pin.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Logs the user in on `session` with `pin` (see the module documentation for a token this process
/// is already logged in to). A refused PIN is [`Error::KmsAuthentication`]; SoftHSM2 reports some
/// refusals as `CKR_GENERAL_ERROR`, which `C_Login` is taken to mean here.
pub(super) fn login(session: &Session, shared: &TokenShared, kms: &str, pin: &Zeroizing<String>) -> Result<()> {
    let refused = |detail: &str| Error::KmsAuthentication {
        kms: kms.to_owned(),
        detail: detail.to_owned(),
    };
    if pin.is_empty() {
        return Err(refused("an empty PIN"));
    }
    // `AuthPin` (secrecy) zeroizes its copy on drop.
    let auth = AuthPin::new(pin.as_str().to_owned());
    let mut stored = lock(&shared.verifier);
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) => {
            *stored = Some(verifier(pin));
            Ok(())
        }
        Err(e) if rv(&e) == Some(RvError::UserAlreadyLoggedIn) => match *stored {
            Some(v) if ct_eq(&v, &verifier(pin)) => Ok(()),
            Some(_) => Err(refused(
                "wrong PIN (the token is already logged in by this process with another PIN)",
            )),
            None => Err(refused(
                "the token is already logged in by other code in this process; colvault cannot check the PIN",
            )),
        },
        Err(e) => match rv(&e) {
            Some(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange | RvError::GeneralError) => {
                Err(refused("wrong PIN (COLVAULT_PKCS11_PIN or the prompt)"))
            }
            Some(RvError::PinLocked) => Err(refused("the user PIN is locked; the security officer must reset it")),
            Some(RvError::PinExpired) => Err(refused("the user PIN has expired; change it first")),
            Some(RvError::UserPinNotInitialized) => Err(refused("the token has no user PIN; initialise it first")),
            _ => Err(p11("C_Login", e)),
        },
    }
}
