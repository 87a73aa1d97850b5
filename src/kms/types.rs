//! The vocabulary of key management: key ids, principals, key states and metadata, encryption contexts
//! and wrapped keys.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::codec::{Decoder, Encoder};
use crate::crypto::{random_array, SecretKey};
use crate::error::{Error, Result};

/// The id of a customer master key (CMK).
///
/// ASCII letters, digits, `_` and `-`, 1 to [`KeyId::MAX_LEN`] bytes. Generated ids are `cmk-` followed
/// by 32 lowercase hex digits (128 random bits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// The longest key id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Checks and wraps an existing key id.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() || id.len() > Self::MAX_LEN {
            return Err(Error::InvalidArgument(format!(
                "a key id is 1 to {} bytes, got {}",
                Self::MAX_LEN,
                id.len()
            )));
        }
        if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(Error::InvalidArgument(format!(
                "a key id may only hold ASCII letters, digits, '_' and '-': {id:?}"
            )));
        }
        Ok(KeyId(id))
    }

    /// A fresh random key id: `cmk-` and 32 hex digits.
    pub fn generate() -> Result<Self> {
        let r = random_array::<16>()?;
        let mut s = String::with_capacity(36);
        s.push_str("cmk-");
        for b in r {
            s.push_str(&format!("{b:02x}"));
        }
        Ok(KeyId(s))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn decode(d: &mut Decoder<'_>) -> Result<Self> {
        let s = d.str(Self::MAX_LEN)?;
        KeyId::new(s).map_err(|e| Error::malformed("key id", e.to_string()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for KeyId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KeyId::new(s)
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Who uses a key: a project id, or another name a grant is given to.
///
/// 1 to [`Principal::MAX_LEN`] bytes of UTF-8 without control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(String);

impl Principal {
    /// The longest principal, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Checks and wraps a principal name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(Error::InvalidArgument(format!(
                "a principal is 1 to {} bytes, got {}",
                Self::MAX_LEN,
                name.len()
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "a principal may not hold control characters: {name:?}"
            )));
        }
        Ok(Principal(name))
    }

    /// The principal as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn decode(d: &mut Decoder<'_>) -> Result<Self> {
        let s = d.str(Self::MAX_LEN)?;
        Principal::new(s).map_err(|e| Error::malformed("principal", e.to_string()))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Principal {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Principal::new(s)
    }
}

/// Where a CMK comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyOrigin {
    /// The default key of a project, created with it; automatically granted to the project.
    ProjectDefault {
        /// The project the key was created for.
        project: Principal,
    },
    /// A key the user brought: generated on request, or imported from 32 bytes of material.
    Byok,
}

/// The state of a CMK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Usable by its grantees.
    Enabled,
    /// Not usable until enabled again; nothing is lost.
    Disabled,
    /// Not usable; its material is destroyed by `delete_key` once `until` has passed, unless the
    /// deletion is cancelled first.
    PendingDeletion {
        /// The end of the deletion window.
        until: SystemTime,
    },
    /// Its material is destroyed; only this metadata remains, as a tombstone.
    Deleted,
}

/// The state of one version of a CMK's material.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyVersionState {
    /// The material exists; the version unwraps what it wrapped (the primary version also wraps).
    Enabled,
    /// The material is destroyed; keys wrapped under this version can no longer be unwrapped.
    Destroyed,
}

/// One version of a CMK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersionInfo {
    /// The version number, from 1.
    pub version: u32,
    /// Whether its material still exists.
    pub state: KeyVersionState,
    /// When the version was created.
    pub created: SystemTime,
}

/// What a KMS tells about a CMK. Never holds key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyMetadata {
    /// The key id.
    pub id: KeyId,
    /// An optional human-readable alias, unique in its KMS.
    pub alias: Option<String>,
    /// Where the key comes from.
    pub origin: KeyOrigin,
    /// The key's state.
    pub state: KeyState,
    /// The version new wraps use.
    pub primary_version: u32,
    /// Every version, oldest first.
    pub versions: Vec<KeyVersionInfo>,
    /// The principals that may use the key.
    pub grants: Vec<Principal>,
    /// When the key was created.
    pub created: SystemTime,
}

/// A request to create a CMK (see `KmsAdmin::create_key`).
#[derive(Debug)]
pub struct CreateKeyRequest {
    /// Where the key comes from. A `ProjectDefault` key is automatically granted to its project.
    pub origin: KeyOrigin,
    /// An optional alias, unique in the KMS (1 to 256 bytes, no control characters).
    pub alias: Option<String>,
    /// Material to import as version 1 (`Byok` only); `None` generates fresh material.
    pub import: Option<SecretKey>,
    /// Principals granted use of the key from the start.
    pub grants: Vec<Principal>,
}

impl CreateKeyRequest {
    /// A project's default key, granted to that project.
    pub fn project_default(project: Principal) -> Self {
        CreateKeyRequest {
            origin: KeyOrigin::ProjectDefault { project },
            alias: None,
            import: None,
            grants: Vec::new(),
        }
    }

    /// A bring-your-own key with fresh material and no grants yet.
    pub fn byok() -> Self {
        CreateKeyRequest {
            origin: KeyOrigin::Byok,
            alias: None,
            import: None,
            grants: Vec::new(),
        }
    }

    /// Sets the alias.
    pub fn with_alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = Some(alias.into());
        self
    }

    /// Imports existing material as version 1 (only for `Byok`).
    pub fn with_import(mut self, material: SecretKey) -> Self {
        self.import = Some(material);
        self
    }

    /// Adds a grant.
    pub fn with_grant(mut self, principal: Principal) -> Self {
        self.grants.push(principal);
        self
    }
}

/// The encryption context of a wrap: name/value pairs bound to the wrapped key as associated data, so
/// that it unwraps only with the same context.
///
/// Use immutable random ids (project id, table id, file id), not paths or names, which change. The pairs
/// are kept sorted by name; setting a name twice keeps the last value.
///
/// ```
/// use colvault::kms::EncryptionContext;
/// let a = EncryptionContext::new().with("project", "p1").with("table", "t1");
/// let b = EncryptionContext::new().with("table", "t1").with("project", "p1");
/// assert_eq!(a.canonical_bytes(), b.canonical_bytes());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EncryptionContext {
    pairs: BTreeMap<String, String>,
}

impl EncryptionContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// The context with `name` set to `value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// Sets `name` to `value`, returning the previous value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.pairs.insert(name.into(), value.into())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.get(name).map(String::as_str)
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The canonical encoding bound as associated data: `u32 count`, then for each pair in byte order of
    /// the names, `u32 len(name) || name || u32 len(value) || value` (big-endian). It is injective:
    /// two different contexts never encode to the same bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.u32(u32::try_from(self.pairs.len()).expect("fewer than 2^32 context pairs"));
        for (k, v) in &self.pairs {
            e.str(k).str(v);
        }
        e.finish()
    }
}

/// The length of the random nonce of a wrapped key.
pub const WRAP_NONCE_LEN: usize = 16;

/// The most bytes of sealed key a [`WrappedKey`] may carry (LocalKms uses 48: a 16-byte SIV tag and a
/// 32-byte key; other KMSes may carry their own blobs).
pub const MAX_WRAPPED_CIPHERTEXT_LEN: usize = 1024;

/// The longest KMS name, in bytes.
pub const MAX_KMS_NAME_LEN: usize = 64;

/// The first four bytes of an encoded [`WrappedKey`].
pub const WRAPPED_KEY_MAGIC: [u8; 4] = *b"CVWK";

/// The format version of an encoded [`WrappedKey`].
pub const WRAPPED_KEY_FORMAT_VERSION: u8 = 1;

/// Checks a KMS name: 1 to 64 bytes of ASCII letters, digits, `_`, `-` and `.`.
pub(crate) fn validate_kms_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_KMS_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(Error::InvalidArgument(format!(
            "a KMS name is 1 to {MAX_KMS_NAME_LEN} bytes of ASCII letters, digits, '_', '-' and '.': {name:?}"
        )));
    }
    Ok(())
}

/// A data key wrapped by a KMS: self-describing (which KMS, which key, which version) and bound to the
/// encryption context it was wrapped with.
///
/// `Debug` shows the KMS, key id and version, never the nonce or the sealed bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WrappedKey {
    kms: String,
    key_id: KeyId,
    version: u32,
    nonce: [u8; WRAP_NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl WrappedKey {
    /// Assembles a wrapped key (for KMS implementations).
    pub fn new(
        kms: impl Into<String>,
        key_id: KeyId,
        version: u32,
        nonce: [u8; WRAP_NONCE_LEN],
        ciphertext: Vec<u8>,
    ) -> Result<Self> {
        let kms = kms.into();
        validate_kms_name(&kms)?;
        if version == 0 {
            return Err(Error::InvalidArgument("key versions start at 1".into()));
        }
        if ciphertext.is_empty() || ciphertext.len() > MAX_WRAPPED_CIPHERTEXT_LEN {
            return Err(Error::InvalidArgument(format!(
                "a wrapped key's sealed bytes are 1 to {MAX_WRAPPED_CIPHERTEXT_LEN} bytes, got {}",
                ciphertext.len()
            )));
        }
        Ok(WrappedKey {
            kms,
            key_id,
            version,
            nonce,
            ciphertext,
        })
    }

    /// The name of the KMS that wrapped it.
    pub fn kms(&self) -> &str {
        &self.kms
    }

    /// The CMK that wrapped it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The CMK version that wrapped it.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The random nonce of the wrap.
    pub fn nonce(&self) -> &[u8; WRAP_NONCE_LEN] {
        &self.nonce
    }

    /// The sealed key bytes.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// The encoding (see `format-spec/`): magic `CVWK`, format version `1`, then `u32`-length-prefixed
    /// KMS name and key id, `u32` version, 16-byte nonce, `u32`-length-prefixed sealed bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        self.encode(&mut e);
        e.finish()
    }

    pub(crate) fn encode(&self, e: &mut Encoder) {
        e.raw(&WRAPPED_KEY_MAGIC)
            .u8(WRAPPED_KEY_FORMAT_VERSION)
            .str(&self.kms)
            .str(self.key_id.as_str())
            .u32(self.version)
            .raw(&self.nonce)
            .bytes(&self.ciphertext);
    }

    /// Decodes [`WrappedKey::to_bytes`], refusing anything else (every length bounded, no trailing
    /// bytes) with [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut d = Decoder::new(bytes, "wrapped key");
        let w = Self::decode(&mut d)?;
        d.finish()?;
        Ok(w)
    }

    pub(crate) fn decode(d: &mut Decoder<'_>) -> Result<Self> {
        const WHAT: &str = "wrapped key";
        if d.array::<4>()? != WRAPPED_KEY_MAGIC {
            return Err(Error::malformed(WHAT, "bad magic"));
        }
        let v = d.u8()?;
        if v != WRAPPED_KEY_FORMAT_VERSION {
            return Err(Error::malformed(WHAT, format!("unknown format version {v}")));
        }
        let kms = d.str(MAX_KMS_NAME_LEN)?;
        validate_kms_name(kms).map_err(|e| Error::malformed(WHAT, e.to_string()))?;
        let key_id = KeyId::decode(d)?;
        let version = d.u32()?;
        if version == 0 {
            return Err(Error::malformed(WHAT, "version 0"));
        }
        let nonce = d.array::<WRAP_NONCE_LEN>()?;
        let ciphertext = d.bytes(MAX_WRAPPED_CIPHERTEXT_LEN)?;
        if ciphertext.is_empty() {
            return Err(Error::malformed(WHAT, "empty sealed key"));
        }
        Ok(WrappedKey {
            kms: kms.to_owned(),
            key_id,
            version,
            nonce,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("kms", &self.kms)
            .field("key_id", &self.key_id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Seconds and nanoseconds since the Unix epoch; times before it are refused.
pub(crate) fn unix_parts(t: SystemTime) -> Result<(u64, u32)> {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| Error::InvalidArgument("a time before 1970 (is the clock wrong?)".into()))?;
    Ok((d.as_secs(), d.subsec_nanos()))
}

/// Whole seconds since the Unix epoch (0 for earlier times), for error messages.
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Encodes a time as `u64` seconds and `u32` nanoseconds since the Unix epoch.
pub(crate) fn encode_time(e: &mut Encoder, t: SystemTime) -> Result<()> {
    let (s, n) = unix_parts(t)?;
    e.u64(s).u32(n);
    Ok(())
}

/// Decodes [`encode_time`].
pub(crate) fn decode_time(d: &mut Decoder<'_>, what: &'static str) -> Result<SystemTime> {
    let s = d.u64()?;
    let n = d.u32()?;
    if n >= 1_000_000_000 {
        return Err(Error::malformed(what, "nanoseconds out of range"));
    }
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::new(s, n))
        .ok_or_else(|| Error::malformed(what, "time out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        let id = KeyId::generate().unwrap();
        assert_eq!(id.as_str().len(), 36);
        assert!(id.as_str().starts_with("cmk-"));
        assert_ne!(id, KeyId::generate().unwrap());
        assert_eq!(KeyId::new(id.as_str()).unwrap(), id);
        KeyId::new("a").unwrap();
        KeyId::new("A_b-9".repeat(12)).unwrap();
        for bad in ["", "a b", "a/b", "é", "a.b", &"x".repeat(65)] {
            assert!(matches!(KeyId::new(bad), Err(Error::InvalidArgument(_))), "{bad:?}");
        }
        assert!(Principal::new("").is_err());
        assert!(Principal::new("a\nb").is_err());
        assert!(Principal::new("x".repeat(257)).is_err());
        Principal::new("project 7/é").unwrap();
    }

    #[test]
    fn contexts_are_canonical_and_unambiguous() {
        let a = EncryptionContext::new().with("project", "p1").with("table", "t1");
        let b = EncryptionContext::new().with("table", "t1").with("project", "p1");
        assert_eq!(a, b);
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        // Moving a boundary between name and value changes the encoding.
        let c = EncryptionContext::new().with("ab", "c");
        let d = EncryptionContext::new().with("a", "bc");
        assert_ne!(c.canonical_bytes(), d.canonical_bytes());
        assert_eq!(
            c.canonical_bytes(),
            [&[0, 0, 0, 1, 0, 0, 0, 2][..], b"ab", &[0, 0, 0, 1], b"c"].concat()
        );
        assert_eq!(EncryptionContext::new().canonical_bytes(), [0, 0, 0, 0]);
        assert_eq!(a.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["project", "table"]);
        assert_eq!(a.get("table"), Some("t1"));
    }

    fn sample() -> WrappedKey {
        WrappedKey::new("local", KeyId::generate().unwrap(), 3, [7; 16], vec![0xab; 48]).unwrap()
    }

    #[test]
    fn wrapped_key_round_trip_and_bounds() {
        let w = sample();
        let b = w.to_bytes();
        assert_eq!(&b[..5], b"CVWK\x01");
        assert_eq!(b.len(), 5 + 4 + 5 + 4 + 36 + 4 + 16 + 4 + 48);
        assert_eq!(WrappedKey::from_bytes(&b).unwrap(), w);
        for n in 0..b.len() {
            assert!(WrappedKey::from_bytes(&b[..n]).is_err(), "truncated to {n}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(WrappedKey::from_bytes(&long), Err(Error::Malformed { .. })));
        assert!(WrappedKey::new("local", KeyId::new("k").unwrap(), 0, [0; 16], vec![1]).is_err());
        assert!(WrappedKey::new("bad name", KeyId::new("k").unwrap(), 1, [0; 16], vec![1]).is_err());
        assert!(WrappedKey::new("local", KeyId::new("k").unwrap(), 1, [0; 16], vec![1; 1025]).is_err());
    }

    #[test]
    fn wrapped_key_debug_hides_the_sealed_bytes() {
        let w = sample();
        let s = format!("{w:?}");
        assert!(s.contains(w.key_id().as_str()) && s.contains("version: 3"), "{s}");
        assert!(!s.contains("171") && !s.to_lowercase().contains("ab, ab"), "{s}");
        assert!(!s.contains("ciphertext") && !s.contains("nonce"), "{s}");
    }

    #[test]
    fn times_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let mut e = Encoder::new();
        encode_time(&mut e, t).unwrap();
        let b = e.finish();
        assert_eq!(decode_time(&mut Decoder::new(&b, "t"), "t").unwrap(), t);
        let mut bad = b.clone();
        bad[8..12].copy_from_slice(&1_000_000_000u32.to_be_bytes());
        assert!(decode_time(&mut Decoder::new(&bad, "t"), "t").is_err());
        assert!(unix_parts(SystemTime::UNIX_EPOCH - Duration::from_secs(1)).is_err());
    }
}
