//! [`WriterOptions`], their [`WriterOptionsBuilder`] and the page [`Compression`] codec.

use parquet::basic::{Compression as PqCompression, ZstdLevel};

use crate::access::KeyAccess;
use crate::crypto::{random_array, Algorithm, CipherProvider, FileId, SecretKey};
use crate::error::{Error, Result};
use crate::kms::KeyId;

/// The codec of column chunk pages (compressed before they are encrypted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// Snappy.
    Snappy,
    /// LZ4 (raw block format).
    Lz4,
    /// Zstandard at the given level (1 to 22).
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(1)
    }
}

impl Compression {
    pub(super) fn to_parquet(self) -> Result<PqCompression> {
        Ok(match self {
            Compression::None => PqCompression::UNCOMPRESSED,
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::Lz4 => PqCompression::LZ4_RAW,
            Compression::Zstd(l) => PqCompression::ZSTD(
                ZstdLevel::try_new(l)
                    .map_err(|_| Error::InvalidArgument(format!("zstd level {l} is not in 1..=22")))?,
            ),
        })
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;
    /// `none`, `snappy`, `lz4`, `zstd` or `zstd:LEVEL`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        Ok(match s.as_str() {
            "none" | "uncompressed" => Compression::None,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd(1),
            other => match other.strip_prefix("zstd:").and_then(|l| l.parse().ok()) {
                Some(l) => Compression::Zstd(l),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown compression {s:?}: expected none, snappy, lz4, zstd or zstd:LEVEL"
                    )))
                }
            },
        })
    }
}

/// Options of a [`FileWriter`].
///
/// There is no default: start from [`WriterOptions::encrypted`] (an algorithm, key access and the
/// CMK that wraps each file's data key) or from [`WriterOptions::plaintext`], which says in the
/// code that the data is stored without encryption. Either gives a [`WriterOptionsBuilder`] for
/// the rest (codec, row groups, column keys ...).
///
/// ```compile_fail,E0599
/// // No default that silently means plaintext.
/// let opts = colvault::WriterOptions::default();
/// ```
/// ```compile_fail,E0599
/// // No builder without a choice about encryption either.
/// let opts = colvault::WriterOptions::builder().build();
/// ```
#[derive(Clone, Debug)]
pub struct WriterOptions {
    pub(super) algorithm: Algorithm,
    pub(super) allow_legacy_rc4: bool,
    pub(super) keys: Option<(KeyAccess, KeyId)>,
    pub(super) column_keys: Vec<(String, KeyId)>,
    pub(super) compression: Compression,
    pub(super) max_row_group_rows: usize,
    pub(super) max_row_group_bytes: usize,
    pub(super) dictionary: bool,
    pub(super) statistics: bool,
    #[cfg(feature = "insecure-test-vectors")]
    deterministic: Option<DeterministicKeys>,
    pub(super) provider: Option<&'static dyn CipherProvider>,
}

/// Fixed key material for reproducible test vectors (cargo feature `insecure-test-vectors`, absent
/// from default builds). Never use it for real data: it reuses keys and nonces by design.
#[cfg(feature = "insecure-test-vectors")]
#[derive(Clone, Debug)]
pub struct DeterministicKeys {
    /// The file id.
    pub file_id: FileId,
    /// The file DEK.
    pub dek: SecretKey,
    /// The wrapped DEK to record (made once, with the real KMS path).
    pub wrapped_dek: Vec<u8>,
    /// The footer nonce.
    pub footer_nonce: [u8; 12],
}

/// A fresh DEK and its wrapped form.
type WrappedDek = (SecretKey, Vec<u8>);

/// Builds [`WriterOptions`]; made by [`WriterOptions::encrypted`] or [`WriterOptions::plaintext`].
///
/// ```
/// use colvault::{Algorithm, Compression, WriterOptions};
/// let opts = WriterOptions::plaintext()
///     .compression(Compression::Snappy)
///     .max_row_group_rows(100_000)
///     .build();
/// assert_eq!(opts.algorithm(), Algorithm::None);
/// ```
#[derive(Clone, Debug)]
pub struct WriterOptionsBuilder(WriterOptions);

impl WriterOptions {
    fn with(algorithm: Algorithm, keys: Option<(KeyAccess, KeyId)>) -> WriterOptionsBuilder {
        WriterOptionsBuilder(WriterOptions {
            algorithm,
            allow_legacy_rc4: false,
            keys,
            column_keys: Vec::new(),
            compression: Compression::default(),
            max_row_group_rows: 1 << 20,
            max_row_group_bytes: 128 << 20,
            dictionary: true,
            statistics: true,
            #[cfg(feature = "insecure-test-vectors")]
            deterministic: None,
            provider: None,
        })
    }

    /// Files encrypted with `algorithm`, each file's fresh data key wrapped under `cmk` through
    /// `access`. `algorithm` must be an encryption algorithm (not [`Algorithm::None`]: a writer
    /// refuses that; say [`plaintext`](Self::plaintext) instead). The rest are the defaults of
    /// [`plaintext`](Self::plaintext).
    pub fn encrypted(algorithm: Algorithm, access: KeyAccess, cmk: KeyId) -> WriterOptionsBuilder {
        Self::with(algorithm, Some((access, cmk)))
    }

    /// Files stored without encryption (BLAKE3 checksums catch accidental corruption only), with
    /// the defaults: zstd level 1, row groups of 1,048,576 rows or 128 MiB, dictionary encoding and
    /// chunk statistics on.
    pub fn plaintext() -> WriterOptionsBuilder {
        Self::with(Algorithm::None, None)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// The compression codec.
    pub fn compression(&self) -> Compression {
        self.compression
    }
    /// Maximum rows per row group.
    pub fn max_row_group_rows(&self) -> usize {
        self.max_row_group_rows
    }

    /// The file id, and the file's DEK with its wrapped form when encrypted (the CMK it is
    /// wrapped under is recorded in `key_ids`).
    pub(super) fn file_keys(&self, key_ids: &mut Vec<KeyId>) -> Result<(FileId, Option<WrappedDek>)> {
        #[cfg(feature = "insecure-test-vectors")]
        if let Some(d) = &self.deterministic {
            let keys = self
                .algorithm
                .is_encrypted()
                .then(|| (d.dek.clone(), d.wrapped_dek.clone()));
            return Ok((d.file_id, keys));
        }
        let file_id = FileId::random()?;
        if !self.algorithm.is_encrypted() {
            return Ok((file_id, None));
        }
        let (access, cmk) = self.keys.as_ref().ok_or_else(|| Error::KeysRequired {
            algorithm: self.algorithm.to_string(),
        })?;
        key_ids.push(cmk.clone());
        Ok((file_id, Some(access.new_data_key(cmk, &file_id, None)?)))
    }

    /// The nonce of the footer: fresh and random for every file.
    pub(super) fn footer_nonce(&self) -> Result<[u8; 12]> {
        #[cfg(feature = "insecure-test-vectors")]
        if let Some(d) = &self.deterministic {
            return Ok(d.footer_nonce);
        }
        random_array()
    }
}

impl WriterOptionsBuilder {
    /// Allows writing RC4 (legacy; RFC 7465). Without it an RC4 writer is refused.
    pub fn allow_legacy_rc4(mut self, allow: bool) -> Self {
        self.0.allow_legacy_rc4 = allow;
        self
    }
    /// Gives the top-level field `field` its own CMK: an independent DEK wrapped under `cmk`.
    pub fn column_key(mut self, field: impl Into<String>, cmk: KeyId) -> Self {
        self.0.column_keys.push((field.into(), cmk));
        self
    }
    /// The page codec.
    pub fn compression(mut self, c: Compression) -> Self {
        self.0.compression = c;
        self
    }
    /// Maximum rows per row group (at least 1).
    pub fn max_row_group_rows(mut self, n: usize) -> Self {
        self.0.max_row_group_rows = n.max(1);
        self
    }
    /// Maximum encoded bytes buffered per row group before it is flushed (at least 1 MiB).
    pub fn max_row_group_bytes(mut self, n: usize) -> Self {
        self.0.max_row_group_bytes = n.max(1 << 20);
        self
    }
    /// Dictionary encoding on or off.
    pub fn dictionary(mut self, on: bool) -> Self {
        self.0.dictionary = on;
        self
    }
    /// Column chunk statistics on or off (they allow row-group pruning).
    pub fn statistics(mut self, on: bool) -> Self {
        self.0.statistics = on;
        self
    }
    /// The AES implementation that seals this file's chunks, instead of the process-wide
    /// [`default_provider`]. Every provider writes the same bytes; see [`crate::crypto::ring`].
    ///
    /// ```
    /// use colvault::{crypto::ring::Ring, WriterOptions};
    /// let opts = WriterOptions::plaintext().cipher_provider(&Ring).build();
    /// ```
    pub fn cipher_provider(mut self, provider: &'static dyn CipherProvider) -> Self {
        self.0.provider = Some(provider);
        self
    }
    /// Test vectors only (cargo feature `insecure-test-vectors`, absent from default builds):
    /// fixed file id, DEK, wrapped DEK and footer nonce, so output is reproducible byte for byte.
    /// This reuses (key, nonce) pairs across files by design.
    #[cfg(feature = "insecure-test-vectors")]
    #[doc(hidden)]
    pub fn insecure_deterministic_for_test_vectors(mut self, algorithm: Algorithm, keys: DeterministicKeys) -> Self {
        self.0.algorithm = algorithm;
        self.0.deterministic = Some(keys);
        self
    }
    /// The options.
    pub fn build(self) -> WriterOptions {
        self.0
    }
}
