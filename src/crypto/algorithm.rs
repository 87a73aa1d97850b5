//! The encryption algorithms of a project, with their stable numeric ids.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// How column chunks, statistics and footers of a file are protected.
///
/// The numeric id is written into files and manifests and never changes. Each id fixes the cipher
/// *and* its integrity mechanism, so a reader that knows the id knows which MAC to expect and a file
/// cannot ask for a weaker one.
///
/// | name     | id | cipher                 | integrity                                   |
/// |----------|----|------------------------|---------------------------------------------|
/// | `none`   | 0  | none                   | BLAKE3 checksum (accidental corruption only) |
/// | `aes256` | 1  | AES-256-GCM, segmented | GCM tag (SP 800-38D)                        |
/// | `aesctr` | 2  | AES-256-CTR            | keyed BLAKE3, encrypt-then-MAC               |
/// | `rc4`    | 3  | RC4, drop 3072 (legacy)| keyed BLAKE3, encrypt-then-MAC               |
///
/// ```
/// use colvault::crypto::Algorithm;
/// let a: Algorithm = "AESCTR".parse()?;
/// assert_eq!(a, Algorithm::Aes256Ctr);
/// assert_eq!(a.id(), 2);
/// assert!("aes128".parse::<Algorithm>().is_err());
/// # Ok::<(), colvault::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// No encryption; checksums catch accidental corruption only.
    None,
    /// AES-256-GCM over 1 MiB segments ("AES256" in project settings).
    Aes256Gcm,
    /// AES-256-CTR with a keyed-BLAKE3 MAC ("AESCTR").
    Aes256Ctr,
    /// RC4 with the first 3072 keystream bytes dropped and a keyed-BLAKE3 MAC ("RC4"): legacy, read
    /// always, written only with an explicit opt-in (RFC 7465 prohibits RC4 in TLS).
    Rc4,
}

/// The integrity mechanism an [`Algorithm`] fixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// An unkeyed BLAKE3 checksum: detects accidental corruption, not tampering.
    Checksum,
    /// The AEAD's own tag (GCM, 16 bytes).
    Aead,
    /// Keyed BLAKE3 (32-byte tag) over a length-prefixed input, encrypt-then-MAC.
    KeyedBlake3,
}

impl Algorithm {
    /// Every algorithm, in id order.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::None,
        Algorithm::Aes256Gcm,
        Algorithm::Aes256Ctr,
        Algorithm::Rc4,
    ];

    /// The stable numeric id written into files.
    pub const fn id(self) -> u8 {
        match self {
            Algorithm::None => 0,
            Algorithm::Aes256Gcm => 1,
            Algorithm::Aes256Ctr => 2,
            Algorithm::Rc4 => 3,
        }
    }

    /// The algorithm with this id.
    pub fn from_id(id: u8) -> Result<Self> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.id() == id)
            .ok_or(Error::UnknownAlgorithmId { id })
    }

    /// The name used in project settings and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::None => "none",
            Algorithm::Aes256Gcm => "aes256",
            Algorithm::Aes256Ctr => "aesctr",
            Algorithm::Rc4 => "rc4",
        }
    }

    /// The integrity mechanism this id fixes.
    pub const fn integrity(self) -> Integrity {
        match self {
            Algorithm::None => Integrity::Checksum,
            Algorithm::Aes256Gcm => Integrity::Aead,
            Algorithm::Aes256Ctr | Algorithm::Rc4 => Integrity::KeyedBlake3,
        }
    }

    /// The length of the tag appended to each segment of a sealed chunk.
    pub const fn tag_len(self) -> usize {
        match self.integrity() {
            Integrity::Aead => 16,
            Integrity::Checksum | Integrity::KeyedBlake3 => 32,
        }
    }

    /// Whether data is encrypted (everything but [`Algorithm::None`]).
    pub const fn is_encrypted(self) -> bool {
        !matches!(self, Algorithm::None)
    }

    /// Whether writing with this algorithm needs the legacy opt-in.
    pub const fn is_legacy(self) -> bool {
        matches!(self, Algorithm::Rc4)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// Accepts `none`, `aes256`, `aesctr` and `rc4`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::UnknownAlgorithm { name: s.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_stable() {
        for (a, id, name) in [
            (Algorithm::None, 0, "none"),
            (Algorithm::Aes256Gcm, 1, "aes256"),
            (Algorithm::Aes256Ctr, 2, "aesctr"),
            (Algorithm::Rc4, 3, "rc4"),
        ] {
            assert_eq!(a.id(), id);
            assert_eq!(Algorithm::from_id(id).unwrap(), a);
            assert_eq!(name.parse::<Algorithm>().unwrap(), a);
            assert_eq!(name.to_uppercase().parse::<Algorithm>().unwrap(), a);
        }
        assert!(matches!(
            Algorithm::from_id(4),
            Err(Error::UnknownAlgorithmId { id: 4 })
        ));
        let err = "aes-128".parse::<Algorithm>().unwrap_err().to_string();
        for name in ["none", "aes256", "aesctr", "rc4"] {
            assert!(err.contains(name), "{err}");
        }
    }
}
