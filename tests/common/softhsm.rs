//! SoftHSM2 for tests (feature `pkcs11`): a `softhsm2.conf` in a temporary directory
//! (`directories.tokendir`, `objectstore.backend = file`), `SOFTHSM2_CONF` set once per test binary
//! before the first `C_Initialize`, and a fresh token per test.
//!
//! Tokens are initialised in this process through the module itself (`C_InitToken` on the free slot,
//! then `C_InitPIN` as the security officer), which is what `softhsm2-util --init-token --free` does:
//! SoftHSM2 reads its token directory when it is initialised, so a token that `softhsm2-util` created
//! in a child process afterwards would not be seen by this process (`C_Initialize` runs once per
//! process). Initialisations are serialised, and the new token's directory is the one that appeared.
//!
//! Without SoftHSM2 (the module or `softhsm2-util`) a test prints why and skips, unless
//! `COLVAULT_REQUIRE_SERVICES=1`, then it fails. The temporary directory is removed when the test
//! process exits (an `atexit` hook).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use colvault::kms::pkcs11::Pkcs11Options;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

/// The user PIN of every test token.
pub const USER_PIN: &str = "test-user-pin-1234";
/// The security officer PIN of every test token.
pub const SO_PIN: &str = "test-so-pin-1234";

/// SoftHSM2 configured for this test binary.
pub struct SoftHsm {
    /// The module (`libsofthsm2.so`).
    pub module: PathBuf,
    /// The token directory.
    pub tokendir: PathBuf,
    /// Serialises token initialisation.
    init: Mutex<()>,
}

/// A fresh token.
pub struct Token {
    /// The module.
    pub module: PathBuf,
    /// The token's label.
    pub label: String,
    /// The token's own directory (its object files) inside the token directory.
    pub dir: PathBuf,
}

impl Token {
    /// Options opening this token with the right PIN.
    pub fn options(&self) -> Pkcs11Options {
        Pkcs11Options::new(&self.module, &self.label).with_pin(zeroize::Zeroizing::new(USER_PIN.to_owned()))
    }
}

static HSM: OnceLock<Result<SoftHsm, (bool, String)>> = OnceLock::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Whether missing services fail tests instead of skipping them.
pub fn services_required() -> bool {
    std::env::var("COLVAULT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The SoftHSM2 module: `COLVAULT_SOFTHSM2_MODULE`, else the Debian paths.
pub fn find_module() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COLVAULT_SOFTHSM2_MODULE") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

fn has_util() -> bool {
    std::process::Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn start() -> Result<SoftHsm, (bool, String)> {
    let module = find_module().ok_or((true, "the SoftHSM2 module libsofthsm2.so is not installed".to_owned()))?;
    if !has_util() {
        return Err((
            true,
            "softhsm2-util is not installed (Debian package softhsm2)".to_owned(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("colvault-softhsm-")
        .tempdir()
        .map_err(|e| (false, format!("temporary directory: {e}")))?
        .keep();
    let tokendir = dir.join("tokens");
    std::fs::create_dir(&tokendir).map_err(|e| (false, format!("token directory: {e}")))?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokendir.display()
        ),
    )
    .map_err(|e| (false, format!("softhsm2.conf: {e}")))?;
    // Before any C_Initialize in this process: `hsm()` is the only way tests reach the module.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    // The directory goes when the process exits (a `static` is never dropped).
    // SAFETY: `remove_dir` is a plain `extern "C" fn` without arguments, as atexit requires.
    unsafe {
        libc::atexit(remove_dir);
    }
    eprintln!("SoftHSM2 for this test binary: {}", conf.display());
    Ok(SoftHsm {
        module,
        tokendir,
        init: Mutex::new(()),
    })
}

extern "C" fn remove_dir() {
    if let Some(Ok(h)) = HSM.get() {
        if let Some(dir) = h.tokendir.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// SoftHSM2, or `None` (after printing why) when it is missing and services are not required.
pub fn hsm(test: &str) -> Option<&'static SoftHsm> {
    match HSM.get_or_init(start) {
        Ok(h) => Some(h),
        Err((true, why)) if !services_required() => {
            eprintln!("SKIPPED {test} on SoftHSM2: {why} (COLVAULT_REQUIRE_SERVICES=1 makes this a failure)");
            None
        }
        Err((_, why)) => panic!("SoftHSM2 is required for {test} but unavailable: {why}"),
    }
}

fn dirs(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

impl SoftHsm {
    /// Initialises a fresh token (labelled after `hint`) with [`SO_PIN`] and [`USER_PIN`].
    pub fn token(&self, hint: &str) -> Token {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let mut label = format!("{n}-{hint}");
        label.truncate(32);
        let ctx = colvault::kms::pkcs11::context(&self.module).expect("SoftHSM2 module initialises");
        let _g = self.init.lock().unwrap_or_else(|e| e.into_inner());
        let before = dirs(&self.tokendir);
        let free = ctx
            .get_all_slots()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).is_ok_and(|i| !i.token_initialized()))
            .expect("SoftHSM2 always offers a free slot");
        let so = AuthPin::new(SO_PIN.to_owned());
        ctx.init_token(free, &so, &label).expect("C_InitToken");
        // The initialised token may move to another slot id: find it by label.
        let slot = ctx
            .get_slots_with_initialized_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).is_ok_and(|i| i.label().trim_end() == label))
            .expect("the new token is listed");
        let s = ctx.open_rw_session(slot).unwrap();
        s.login(UserType::So, Some(&so)).expect("SO login");
        s.init_pin(&AuthPin::new(USER_PIN.to_owned())).expect("C_InitPIN");
        s.logout().unwrap();
        drop(s);
        let after = dirs(&self.tokendir);
        let new: Vec<PathBuf> = after.into_iter().filter(|d| !before.contains(d)).collect();
        assert_eq!(new.len(), 1, "one new token directory: {new:?}");
        Token {
            module: self.module.clone(),
            label,
            dir: new.into_iter().next().unwrap(),
        }
    }
}

/// A fresh token for `test`, or `None` when SoftHSM2 is missing and not required.
pub fn token(test: &str) -> Option<Token> {
    hsm(test).map(|h| h.token(test))
}

/// A raw, logged-in session on `token`'s slot, for tests that look at the token objects directly.
/// The token must already be open through a `Pkcs11Kms` in this process (login is per process and
/// token, so this session shares that login).
pub fn raw_session(token: &Token) -> cryptoki::session::Session {
    let ctx = colvault::kms::pkcs11::context(&token.module).unwrap();
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .is_ok_and(|i| i.label().trim_end() == token.label)
        })
        .expect("the token is listed");
    let s = ctx.open_rw_session(slot).unwrap();
    match s.login(UserType::User, Some(&AuthPin::new(USER_PIN.to_owned()))) {
        Ok(()) => {}
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
    s
}

/// The colvault state record object of `token`, through `s`.
pub fn state_record(s: &cryptoki::session::Session) -> cryptoki::object::ObjectHandle {
    use colvault::kms::pkcs11::objects::{APPLICATION, STATE_LABEL};
    use cryptoki::object::{Attribute, ObjectClass};
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(APPLICATION.as_bytes().to_vec()),
            Attribute::Label(STATE_LABEL.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "one state record");
    found[0]
}

/// The value of the state record `rec`.
pub fn record_value(s: &cryptoki::session::Session, rec: cryptoki::object::ObjectHandle) -> Vec<u8> {
    use cryptoki::object::{Attribute, AttributeType};
    match s.get_attributes(rec, &[AttributeType::Value]).unwrap().pop() {
        Some(Attribute::Value(v)) => v,
        other => panic!("state record value: {other:?}"),
    }
}

/// Replaces the state record on `token` with one holding `value` (a new private data object with
/// the same class, application and label, the old one destroyed), as someone holding the PIN but
/// not colvault's metadata key could.
pub fn put_state_record(s: &cryptoki::session::Session, value: Vec<u8>) {
    use colvault::kms::pkcs11::objects::{APPLICATION, STATE_LABEL};
    use cryptoki::object::{Attribute, ObjectClass};
    let old = state_record(s);
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Application(APPLICATION.as_bytes().to_vec()),
        Attribute::Label(STATE_LABEL.as_bytes().to_vec()),
        Attribute::Value(value),
    ])
    .unwrap();
    s.destroy_object(old).unwrap();
}

/// Flips one byte (in the sealed body) of the state record on `token`.
pub fn flip_state_record_byte(token: &Token) {
    let s = raw_session(token);
    let mut value = record_value(&s, state_record(&s));
    let at = value.len() / 2;
    value[at] ^= 0x01;
    put_state_record(&s, value);
}
