//! Double wrapping with a KEK cache (DESIGN, "Key hierarchy").
//!
//! ```text
//! CMK (in the KMS) --wraps, context = kek_ctx (project id)--> KEK (from Kms::generate_data_key, cached)
//! KEK --AES-SIV, context = dek_ctx (project, table, file ids)--> DEK (32 fresh random bytes per call)
//! ```
//!
//! A [`KeyCache`] keeps each KEK for at most its lifetime, counted from when the KMS generated or
//! unwrapped it and never refreshed by use, so writing or reading 1,000 files costs O(1) KMS round
//! trips. Writers' KEKs are cached per (principal, KMS, CMK id, version, KEK context); readers' per
//! (principal, KMS, CMK id, version, KEK context, wrapped KEK), so no grant check is skipped for another
//! principal or context. A key disabled, deleted or revoked in the KMS stops all use once the lifetime
//! has passed; [`KeyCache::invalidate`] stops it in this process at once. A clock that goes backwards
//! expires every entry.
//!
//! # Rotation
//!
//! A writer's KEK is used only while its CMK version is the newest this cache knows of. The cache
//! learns of a newer version when the KMS generates or unwraps a KEK under it (reading a file written
//! after a rotation) or re-wraps to it, and when a rotation goes through the KMS value behind the
//! cache ([`Kms::rotation_epoch`]): then every writer KEK of an older version is dropped at once. A
//! process that learns nothing keeps its KEK until the lifetime ends, which is why `LocalKms` refuses
//! to destroy a superseded version until the longest lifetime has passed since the rotation. A KEK
//! obtained by unwrapping (reading) is never used to wrap new DEKs: only KEKs the KMS generated for
//! this cache's writers are.
//!
//! The DEK wrap is AES-256-SIV under `HKDF-SHA256(KEK, "colvault v1 kek wrap key")` with the headers
//! `["colvault v1 kek wrap", canonical DEK context, 16-byte random nonce]` (see [`super::wrap`]).
//!
//! # Envelope layout (all integers big-endian)
//!
//! ```text
//! "CVDE" | u8 format version = 1 | u32 n || wrapped KEK (n <= 2048 bytes, a WrappedKey encoding)
//! | DEK nonce (16) | wrapped DEK (48 = 16-byte SIV tag || 32 bytes)
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use super::types::{EncryptionContext, KeyId, Principal, WrappedKey, WRAP_NONCE_LEN};
use super::wrap::{siv_unwrap_key, siv_wrap, KEK_WRAP_LABEL, WRAPPED_KEY_LEN};
use super::Kms;
use crate::clock::{Clock, SystemClock};
use crate::codec::{Decoder, Encoder};
use crate::crypto::kdf::derive_key_512;
use crate::crypto::{random_array, Purpose, SecretKey};
use crate::error::{Error, Result};

/// The default KEK lifetime: 10 minutes.
pub const DEFAULT_KEK_LIFETIME: Duration = Duration::from_secs(600);
/// The longest KEK lifetime allowed: 24 hours.
pub const MAX_KEK_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The most KEKs kept per direction (writers, readers); beyond it the oldest is dropped.
pub const MAX_CACHED_KEKS: usize = 4096;

/// The first bytes of an encoded [`DataKeyEnvelope`].
pub const ENVELOPE_MAGIC: [u8; 4] = *b"CVDE";
/// The format version of an encoded [`DataKeyEnvelope`].
pub const ENVELOPE_FORMAT_VERSION: u8 = 1;
const MAX_WRAPPED_KEK_LEN: usize = 2048;

/// Options of a [`KeyCache`].
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// How long a KEK is used after the KMS generated or unwrapped it: at most [`MAX_KEK_LIFETIME`];
    /// zero disables caching (every call goes to the KMS).
    pub lifetime: Duration,
    /// The clock that measures it.
    pub clock: Arc<dyn Clock>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            lifetime: DEFAULT_KEK_LIFETIME,
            clock: Arc::new(SystemClock),
        }
    }
}

impl CacheOptions {
    /// The defaults with another lifetime.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// The defaults with another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// A DEK wrapped by a KEK, and the KEK wrapped by a CMK: what a file stores to find its key again.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKeyEnvelope {
    wrapped_kek: WrappedKey,
    dek_nonce: [u8; WRAP_NONCE_LEN],
    wrapped_dek: [u8; WRAPPED_KEY_LEN],
}

impl DataKeyEnvelope {
    /// This envelope's wrapped KEK with `other`'s wrapped DEK: after a KEK was re-wrapped once, every
    /// DEK under that KEK moves to the new wrap without another KMS call.
    pub fn with_dek_of(&self, other: &DataKeyEnvelope) -> DataKeyEnvelope {
        DataKeyEnvelope {
            wrapped_kek: self.wrapped_kek.clone(),
            dek_nonce: other.dek_nonce,
            wrapped_dek: other.wrapped_dek,
        }
    }

    /// The wrapped KEK.
    pub fn wrapped_kek(&self) -> &WrappedKey {
        &self.wrapped_kek
    }

    /// The KMS holding the CMK.
    pub fn kms_name(&self) -> &str {
        self.wrapped_kek.kms()
    }

    /// The CMK.
    pub fn key_id(&self) -> &KeyId {
        self.wrapped_kek.key_id()
    }

    /// The CMK version that wrapped the KEK.
    pub fn key_version(&self) -> u32 {
        self.wrapped_kek.version()
    }

    /// The encoding (see the [module documentation](self)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.raw(&ENVELOPE_MAGIC)
            .u8(ENVELOPE_FORMAT_VERSION)
            .bytes(&self.wrapped_kek.to_bytes())
            .raw(&self.dek_nonce)
            .raw(&self.wrapped_dek);
        e.finish()
    }

    /// Decodes [`DataKeyEnvelope::to_bytes`] with every length bounded; anything else is
    /// [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "data key envelope";
        let mut d = Decoder::new(bytes, WHAT);
        if d.array::<4>()? != ENVELOPE_MAGIC {
            return Err(Error::malformed(WHAT, "bad magic"));
        }
        let v = d.u8()?;
        if v != ENVELOPE_FORMAT_VERSION {
            return Err(Error::malformed(WHAT, format!("unknown format version {v}")));
        }
        let wrapped_kek = WrappedKey::from_bytes(d.bytes(MAX_WRAPPED_KEK_LEN)?)?;
        let dek_nonce = d.array()?;
        let wrapped_dek = d.array()?;
        d.finish()?;
        Ok(DataKeyEnvelope {
            wrapped_kek,
            dek_nonce,
            wrapped_dek,
        })
    }
}

impl fmt::Debug for DataKeyEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyEnvelope")
            .field("wrapped_kek", &self.wrapped_kek)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct WriterSlot {
    principal: Principal,
    kms: String,
    cmk: KeyId,
    version: u32,
    kek_ctx: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ReaderSlot {
    principal: Principal,
    kms: String,
    cmk: KeyId,
    version: u32,
    kek_ctx: Vec<u8>,
    wrapped_kek: Vec<u8>,
}

/// A cached KEK, kept as its derived AES-SIV wrap key (zeroized when the last user drops it).
struct Cached {
    wrap_key: Arc<Zeroizing<[u8; 64]>>,
    wrapped_kek: WrappedKey,
    obtained: SystemTime,
}

/// The KEK cache of double wrapping. See the [module documentation](self).
pub struct KeyCache {
    kms: Arc<dyn Kms>,
    lifetime: Duration,
    clock: Arc<dyn Clock>,
    writers: Mutex<HashMap<WriterSlot, Cached>>,
    readers: Mutex<HashMap<ReaderSlot, Cached>>,
    /// The newest version of each (KMS, CMK) this cache has seen, and the KMS's rotation epoch when
    /// the writers were last checked against it.
    versions: Mutex<Versions>,
}

#[derive(Default)]
struct Versions {
    newest: HashMap<(String, KeyId), u32>,
    epoch: u64,
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("kms", &self.kms.name())
            .field("lifetime", &self.lifetime)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl KeyCache {
    /// A cache in front of `kms`. A lifetime over [`MAX_KEK_LIFETIME`] is
    /// [`Error::InvalidArgument`].
    pub fn new(kms: Arc<dyn Kms>, options: CacheOptions) -> Result<Self> {
        if options.lifetime > MAX_KEK_LIFETIME {
            return Err(Error::InvalidArgument(format!(
                "a KEK lifetime is at most 24 hours, got {:?}",
                options.lifetime
            )));
        }
        Ok(KeyCache {
            lifetime: options.lifetime,
            clock: options.clock,
            writers: Mutex::new(HashMap::new()),
            readers: Mutex::new(HashMap::new()),
            versions: Mutex::new(Versions {
                newest: HashMap::new(),
                epoch: kms.rotation_epoch(),
            }),
            kms,
        })
    }

    /// The KMS behind the cache.
    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.kms
    }

    /// The KEK lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn fresh(&self, obtained: SystemTime, now: SystemTime) -> bool {
        // A clock that went backwards (`now < obtained`) counts as expired.
        matches!(now.duration_since(obtained), Ok(age) if age < self.lifetime)
    }

    fn lookup<K: Eq + Hash>(
        &self,
        map: &Mutex<HashMap<K, Cached>>,
        slot: &K,
        now: SystemTime,
    ) -> Option<(Arc<Zeroizing<[u8; 64]>>, WrappedKey)> {
        let mut m = lock(map);
        match m.get(slot) {
            Some(c) if self.fresh(c.obtained, now) => Some((c.wrap_key.clone(), c.wrapped_kek.clone())),
            Some(_) => {
                m.remove(slot);
                None
            }
            None => None,
        }
    }

    fn insert<K: Eq + Hash + Clone>(&self, map: &Mutex<HashMap<K, Cached>>, slot: K, entry: Cached, now: SystemTime) {
        if self.lifetime.is_zero() {
            return;
        }
        let mut m = lock(map);
        if m.len() >= MAX_CACHED_KEKS {
            m.retain(|_, c| self.fresh(c.obtained, now));
        }
        if m.len() >= MAX_CACHED_KEKS {
            if let Some(oldest) = m.iter().min_by_key(|(_, c)| c.obtained).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(slot, entry);
    }

    fn reader_slot(principal: &Principal, wrapped_kek: &WrappedKey, kek_ctx: &[u8]) -> ReaderSlot {
        ReaderSlot {
            principal: principal.clone(),
            kms: wrapped_kek.kms().to_owned(),
            cmk: wrapped_kek.key_id().clone(),
            version: wrapped_kek.version(),
            kek_ctx: kek_ctx.to_vec(),
            wrapped_kek: wrapped_kek.to_bytes(),
        }
    }

    /// Records that version `version` of `cmk` exists (the KMS authenticated it): writer KEKs of older
    /// versions of that CMK are dropped, and are never used again.
    fn saw_version(&self, kms: &str, cmk: &KeyId, version: u32) {
        let mut v = lock(&self.versions);
        let newest = v.newest.entry((kms.to_owned(), cmk.clone())).or_insert(0);
        if version > *newest {
            *newest = version;
            drop(v);
            lock(&self.writers).retain(|s, _| !(s.kms == kms && &s.cmk == cmk && s.version < version));
        }
    }

    /// The newest version of `cmk` this cache knows of, after dropping every writer KEK if a rotation
    /// went through the KMS since the last call.
    fn newest_version(&self, cmk: &KeyId) -> Option<u32> {
        let epoch = self.kms.rotation_epoch();
        let mut v = lock(&self.versions);
        if v.epoch != epoch {
            v.epoch = epoch;
            v.newest.clear();
            lock(&self.writers).clear();
        }
        v.newest.get(&(self.kms.name().to_owned(), cmk.clone())).copied()
    }

    /// A fresh DEK for a new file, and its envelope: the DEK wrapped by a KEK (bound to `dek_ctx`), the
    /// KEK wrapped by CMK `cmk` (bound to `kek_ctx`). The KEK comes from the cache if it is younger than
    /// the lifetime and of the newest version of `cmk` this cache knows of (see the [module
    /// documentation](self)), else from [`Kms::generate_data_key`].
    pub fn new_data_key(
        &self,
        principal: &Principal,
        cmk: &KeyId,
        kek_ctx: &EncryptionContext,
        dek_ctx: &EncryptionContext,
    ) -> Result<(SecretKey, DataKeyEnvelope)> {
        let kek_bytes = kek_ctx.canonical_bytes();
        let slot = |version: u32| WriterSlot {
            principal: principal.clone(),
            kms: self.kms.name().to_owned(),
            cmk: cmk.clone(),
            version,
            kek_ctx: kek_bytes.clone(),
        };
        let now = self.clock.now();
        let hit = self
            .newest_version(cmk)
            .and_then(|v| self.lookup(&self.writers, &slot(v), now));
        let (wrap_key, wrapped_kek) = match hit {
            Some(hit) => hit,
            None => {
                let (kek, wrapped) = self.kms.generate_data_key(principal, cmk, kek_ctx)?;
                self.saw_version(wrapped.kms(), wrapped.key_id(), wrapped.version());
                let wrap_key = Arc::new(derive_key_512(&kek, Purpose::KekWrap, &[])?);
                drop(kek);
                let cached = |w: &WrappedKey| Cached {
                    wrap_key: wrap_key.clone(),
                    wrapped_kek: w.clone(),
                    obtained: now,
                };
                // A reader in this process may open what it writes without another round trip.
                self.insert(
                    &self.readers,
                    Self::reader_slot(principal, &wrapped, &kek_bytes),
                    cached(&wrapped),
                    now,
                );
                self.insert(&self.writers, slot(wrapped.version()), cached(&wrapped), now);
                (wrap_key, wrapped)
            }
        };
        let dek = SecretKey::generate()?;
        let dek_nonce = random_array::<WRAP_NONCE_LEN>()?;
        let c = dek_ctx.canonical_bytes();
        let sealed = siv_wrap(&wrap_key, &[KEK_WRAP_LABEL, &c, &dek_nonce], dek.expose())?;
        let wrapped_dek: [u8; WRAPPED_KEY_LEN] = sealed
            .try_into()
            .map_err(|_| Error::Crypto("AES-SIV output of an unexpected length"))?;
        Ok((
            dek,
            DataKeyEnvelope {
                wrapped_kek,
                dek_nonce,
                wrapped_dek,
            },
        ))
    }

    /// The DEK of an envelope. The KEK comes from the cache if this principal unwrapped this wrapped
    /// KEK with this context less than the lifetime ago, else from [`Kms::decrypt_data_key`]. A wrong
    /// `dek_ctx` or an altered envelope gives [`Error::Integrity`].
    pub fn open_data_key(
        &self,
        principal: &Principal,
        envelope: &DataKeyEnvelope,
        kek_ctx: &EncryptionContext,
        dek_ctx: &EncryptionContext,
    ) -> Result<SecretKey> {
        let slot = Self::reader_slot(principal, &envelope.wrapped_kek, &kek_ctx.canonical_bytes());
        let now = self.clock.now();
        let wrap_key = match self.lookup(&self.readers, &slot, now) {
            Some((k, _)) => k,
            None => {
                let kek = self.kms.decrypt_data_key(principal, &envelope.wrapped_kek, kek_ctx)?;
                // The KMS authenticated the version (it is bound into the wrap): a file written after a
                // rotation tells this cache's writers to move on. The KEK itself goes to the readers
                // only: it is never used to wrap new DEKs.
                let w = &envelope.wrapped_kek;
                self.saw_version(w.kms(), w.key_id(), w.version());
                let wrap_key = Arc::new(derive_key_512(&kek, Purpose::KekWrap, &[])?);
                drop(kek);
                self.insert(
                    &self.readers,
                    slot,
                    Cached {
                        wrap_key: wrap_key.clone(),
                        wrapped_kek: envelope.wrapped_kek.clone(),
                        obtained: now,
                    },
                    now,
                );
                wrap_key
            }
        };
        let c = dek_ctx.canonical_bytes();
        siv_unwrap_key(
            &wrap_key,
            &[KEK_WRAP_LABEL, &c, &envelope.dek_nonce],
            &envelope.wrapped_dek,
            "data key envelope (wrong data key context, or altered)",
        )
    }

    /// The envelope with its KEK re-wrapped under the CMK's current primary version
    /// ([`Kms::rewrap`]); the DEK wrap, and so the DEK, is unchanged. Always asks the KMS.
    pub fn rewrap_envelope(
        &self,
        principal: &Principal,
        envelope: &DataKeyEnvelope,
        kek_ctx: &EncryptionContext,
    ) -> Result<DataKeyEnvelope> {
        let wrapped_kek = self.kms.rewrap(principal, &envelope.wrapped_kek, kek_ctx)?;
        self.saw_version(wrapped_kek.kms(), wrapped_kek.key_id(), wrapped_kek.version());
        Ok(DataKeyEnvelope {
            wrapped_kek,
            dek_nonce: envelope.dek_nonce,
            wrapped_dek: envelope.wrapped_dek,
        })
    }

    /// Drops every cached KEK at once: the next call of each kind goes to the KMS.
    pub fn invalidate(&self) {
        lock(&self.writers).clear();
        lock(&self.readers).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::kms::wrap::{kms_unwrap, kms_wrap};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An in-memory KMS with one CMK and no state, counting calls.
    struct MemKms {
        material: SecretKey,
        calls: AtomicUsize,
    }

    impl Kms for MemKms {
        fn name(&self) -> &str {
            "mem"
        }
        fn generate_data_key(
            &self,
            _: &Principal,
            key: &KeyId,
            ctx: &EncryptionContext,
        ) -> Result<(SecretKey, WrappedKey)> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let k = SecretKey::generate()?;
            let w = kms_wrap(&self.material, "mem", key, 1, ctx, &k)?;
            Ok((k, w))
        }
        fn decrypt_data_key(&self, _: &Principal, w: &WrappedKey, ctx: &EncryptionContext) -> Result<SecretKey> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            kms_unwrap(&self.material, w, ctx)
        }
        fn rewrap(&self, _: &Principal, w: &WrappedKey, ctx: &EncryptionContext) -> Result<WrappedKey> {
            let k = self.decrypt_data_key(&Principal::new("x")?, w, ctx)?;
            kms_wrap(&self.material, "mem", w.key_id(), 1, ctx, &k)
        }
    }

    fn setup(lifetime: u64) -> (Arc<MemKms>, Arc<ManualClock>, KeyCache) {
        let kms = Arc::new(MemKms {
            material: SecretKey::generate().unwrap(),
            calls: AtomicUsize::new(0),
        });
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let cache = KeyCache::new(
            kms.clone(),
            CacheOptions::default()
                .with_lifetime(Duration::from_secs(lifetime))
                .with_clock(clock.clone()),
        )
        .unwrap();
        (kms, clock, cache)
    }

    #[test]
    fn lifetime_counts_from_the_unwrap_and_is_never_refreshed() {
        let (kms, clock, cache) = setup(600);
        let p = Principal::new("p").unwrap();
        let id = KeyId::new("k").unwrap();
        let kc = EncryptionContext::new().with("project", "p");
        let dc = EncryptionContext::new().with("file", "f");
        let calls = || kms.calls.load(Ordering::SeqCst);
        cache.new_data_key(&p, &id, &kc, &dc).unwrap();
        assert_eq!(calls(), 1);
        for _ in 0..599 {
            clock.advance(Duration::from_secs(1));
            cache.new_data_key(&p, &id, &kc, &dc).unwrap();
        }
        assert_eq!(calls(), 1, "used for 599 s without a round trip");
        clock.advance(Duration::from_secs(1));
        cache.new_data_key(&p, &id, &kc, &dc).unwrap();
        assert_eq!(calls(), 2, "at 600 s the KEK expired although it was used every second");
        // A clock that goes backwards expires the entry.
        clock.set(clock.now() - Duration::from_secs(5));
        cache.new_data_key(&p, &id, &kc, &dc).unwrap();
        assert_eq!(calls(), 3);
        // Another KEK context, another principal: other slots.
        cache.new_data_key(&p, &id, &EncryptionContext::new(), &dc).unwrap();
        cache
            .new_data_key(&Principal::new("q").unwrap(), &id, &kc, &dc)
            .unwrap();
        assert_eq!(calls(), 5);
    }

    /// A KEK that this cache got by unwrapping (reading a file) is never used to wrap a new DEK: the
    /// first write after a read still asks the KMS to generate a KEK.
    #[test]
    fn unwrapped_keks_never_wrap_new_data_keys() {
        let (kms, clock, writer) = setup(600);
        let reader = KeyCache::new(
            kms.clone(),
            CacheOptions::default()
                .with_lifetime(Duration::from_secs(600))
                .with_clock(clock),
        )
        .unwrap();
        let p = Principal::new("p").unwrap();
        let id = KeyId::new("k").unwrap();
        let kc = EncryptionContext::new().with("project", "p");
        let dc = EncryptionContext::new().with("file", "f");
        let (_, env) = writer.new_data_key(&p, &id, &kc, &dc).unwrap();
        let calls = || kms.calls.load(Ordering::SeqCst);
        assert_eq!(calls(), 1);
        reader.open_data_key(&p, &env, &kc, &dc).unwrap();
        assert_eq!(calls(), 2, "the reader unwrapped the KEK");
        let (_, mine) = reader.new_data_key(&p, &id, &kc, &dc).unwrap();
        assert_eq!(calls(), 3, "the unwrapped KEK was not reused to wrap");
        assert_ne!(mine.wrapped_kek(), env.wrapped_kek());
    }

    #[test]
    fn zero_lifetime_never_caches_and_too_long_is_refused() {
        let (kms, _clock, cache) = setup(0);
        let p = Principal::new("p").unwrap();
        let id = KeyId::new("k").unwrap();
        let c = EncryptionContext::new();
        let (dek, env) = cache.new_data_key(&p, &id, &c, &c).unwrap();
        assert_eq!(cache.open_data_key(&p, &env, &c, &c).unwrap(), dek);
        cache.new_data_key(&p, &id, &c, &c).unwrap();
        assert_eq!(kms.calls.load(Ordering::SeqCst), 3);
        let opts = CacheOptions::default().with_lifetime(MAX_KEK_LIFETIME + Duration::from_secs(1));
        assert!(matches!(
            KeyCache::new(kms.clone(), opts),
            Err(Error::InvalidArgument(_))
        ));
        KeyCache::new(kms, CacheOptions::default().with_lifetime(MAX_KEK_LIFETIME)).unwrap();
    }

    #[test]
    fn envelope_encoding_is_bounded_and_tamper_evident() {
        let (_kms, _clock, cache) = setup(600);
        let p = Principal::new("p").unwrap();
        let id = KeyId::new("k").unwrap();
        let kc = EncryptionContext::new().with("project", "p");
        let dc = EncryptionContext::new().with("file", "f");
        let (dek, env) = cache.new_data_key(&p, &id, &kc, &dc).unwrap();
        let b = env.to_bytes();
        assert_eq!(&b[..5], b"CVDE\x01");
        assert_eq!(b.len(), 5 + 4 + env.wrapped_kek().to_bytes().len() + 16 + 48);
        assert_eq!(DataKeyEnvelope::from_bytes(&b).unwrap(), env);
        assert_eq!((env.kms_name(), env.key_id(), env.key_version()), ("mem", &id, 1));
        assert!(!format!("{env:?}").contains("wrapped_dek"));
        for n in 0..b.len() {
            assert!(DataKeyEnvelope::from_bytes(&b[..n]).is_err());
        }
        for i in 0..b.len() * 8 {
            let mut t = b.clone();
            t[i / 8] ^= 1 << (i % 8);
            if let Ok(e) = DataKeyEnvelope::from_bytes(&t) {
                let r = cache.open_data_key(&p, &e, &kc, &dc);
                assert!(r.is_err(), "bit {i} flipped and the envelope still opened");
            }
        }
        assert_eq!(cache.open_data_key(&p, &env, &kc, &dc).unwrap(), dek);
        let other = EncryptionContext::new().with("file", "g");
        assert!(matches!(
            cache.open_data_key(&p, &env, &kc, &other),
            Err(Error::Integrity { .. })
        ));
    }
}
