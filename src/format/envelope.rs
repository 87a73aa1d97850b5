//! The plaintext key envelope: algorithm, file id, key references and wrapped keys, commitment,
//! footer nonce. Plaintext so a reader can find its keys; authenticated as the footer body's AAD.

use crate::codec::{Decoder, Encoder};
use crate::crypto::{Algorithm, FileId, COMMITMENT_LEN};
use crate::error::{Error, Result};

use super::VERSION_MAJOR;

/// Whose data key a [`KeyEntry`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// The file's data key: footer and every column without a key of its own.
    File,
    /// The data key of one top-level field with its own CMK.
    Column(u32),
}

/// One wrapped data key with its commitment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// Whose key it is.
    pub role: KeyRole,
    /// The wrapped key (a serialized [`crate::kms::DataKeyEnvelope`]: KMS name, CMK id and version,
    /// wrapped KEK, wrapped DEK).
    pub wrapped: Vec<u8>,
    /// HKDF(DEK, "colvault commit v1").
    pub commitment: [u8; COMMITMENT_LEN],
}

/// The plaintext envelope of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Minor version of the writer.
    pub minor: u8,
    /// The algorithm of every chunk and of the footer.
    pub algorithm: Algorithm,
    /// The file's random id.
    pub file_id: FileId,
    /// The KMS that holds the keys ("" for `none`).
    pub kms: String,
    /// Wrapped data keys: none for `none`, the file key first otherwise.
    pub keys: Vec<KeyEntry>,
    /// The nonce of the footer body's GCM seal (zero for `none`).
    pub footer_nonce: [u8; 12],
}

const MAX_KMS_NAME: usize = 64;
const MAX_WRAPPED: usize = 4096;
const MAX_KEYS: usize = 4097;

impl Envelope {
    /// The bytes of the envelope.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.u8(VERSION_MAJOR)
            .u8(self.minor)
            .u8(self.algorithm.id())
            .raw(&self.file_id.0)
            .u8(0)
            .str(&self.kms);
        e.u16(self.keys.len() as u16);
        for k in &self.keys {
            match k.role {
                KeyRole::File => e.u8(0).u32(u32::MAX),
                KeyRole::Column(c) => e.u8(1).u32(c),
            };
            e.bytes(&k.wrapped).raw(&k.commitment);
        }
        e.raw(&self.footer_nonce);
        e.finish()
    }

    /// Parses an envelope, refusing a newer major version before anything else.
    ///
    /// The version bytes are not authenticated until the footer body opens (they are part of its
    /// AAD), and the envelope is found through the trailer's unauthenticated lengths. So a version
    /// other than this build's is reported as a newer format only when the bytes look like one:
    /// a major version above ours but small, a small minor, and no sign of a version-1 envelope
    /// (the same bytes with only the version changed, or a version-1 header shifted by a damaged
    /// trailer length). Anything else is damage ([`Error::Integrity`]), not a reason to upgrade.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut d = Decoder::new(buf, "file envelope");
        let major = d.u8()?;
        let minor = d.u8()?;
        if major != VERSION_MAJOR {
            if looks_newer(buf, major, minor) {
                return Err(Error::UnsupportedVersion {
                    found: format!("{major}.{minor}"),
                    supported: VERSION_MAJOR,
                });
            }
            return Err(Error::integrity(format!(
                "file envelope (it reads as format version {major}.{minor}, which is not a colvault version: the \
                 trailer or the envelope is damaged)"
            )));
        }
        let algorithm = Algorithm::from_id(d.u8()?)?;
        let file_id = FileId(d.array()?);
        let flags = d.u8()?;
        if flags != 0 {
            return Err(Error::malformed("file envelope", format!("unknown flags {flags:#04x}")));
        }
        let kms = d.str(MAX_KMS_NAME)?.to_string();
        let n = d.u16()? as usize;
        if n > MAX_KEYS || n * (1 + 4 + 4 + COMMITMENT_LEN) > d.remaining() {
            return Err(Error::malformed("file envelope", format!("{n} key entries cannot fit")));
        }
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let role = match (d.u8()?, d.u32()?) {
                (0, u32::MAX) if i == 0 => KeyRole::File,
                (1, c) if i > 0 && c != u32::MAX => KeyRole::Column(c),
                (r, c) => {
                    return Err(Error::malformed(
                        "file envelope",
                        format!("key entry {i}: role {r} column {c}"),
                    ))
                }
            };
            let wrapped = d.bytes(MAX_WRAPPED)?.to_vec();
            let commitment = d.array()?;
            keys.push(KeyEntry {
                role,
                wrapped,
                commitment,
            });
        }
        let footer_nonce = d.array()?;
        d.finish()?;
        if algorithm.is_encrypted() == keys.is_empty() {
            return Err(Error::malformed(
                "file envelope",
                format!("algorithm {algorithm} with {} key entries", keys.len()),
            ));
        }
        Ok(Envelope {
            minor,
            algorithm,
            file_id,
            kms,
            keys,
            footer_nonce,
        })
    }
}

/// The largest major (and minor) version a newer colvault is taken to write; a version byte
/// beyond it is damage.
const MAX_PLAUSIBLE_VERSION: u8 = 15;

/// Whether an envelope that starts with `major.minor` (not ours) plausibly comes from a newer
/// colvault rather than from damage (see [`Envelope::decode`]).
fn looks_newer(buf: &[u8], major: u8, minor: u8) -> bool {
    if major <= VERSION_MAJOR || major > MAX_PLAUSIBLE_VERSION || minor > MAX_PLAUSIBLE_VERSION {
        return false;
    }
    // Only the version byte changed: the rest is a valid version-1 envelope.
    let mut v1 = buf.to_vec();
    v1[0] = VERSION_MAJOR;
    if Envelope::decode(&v1).is_ok() {
        return false;
    }
    // A trailer length off by a little: a version-1 envelope header lies further in.
    !(1..buf.len()).any(|i| v1_header_at(&buf[i..]))
}

/// Whether `buf` starts like a version-1 envelope: major 1, a small minor, a known algorithm, a
/// file id, zero flags and a KMS name (empty exactly for `none`). Random or newer-format bytes
/// match all of this by chance with negligible probability.
fn v1_header_at(buf: &[u8]) -> bool {
    let mut d = Decoder::new(buf, "file envelope");
    let mut header = || -> Result<bool> {
        if d.u8()? != VERSION_MAJOR || d.u8()? > MAX_PLAUSIBLE_VERSION {
            return Ok(false);
        }
        let algorithm = Algorithm::from_id(d.u8()?)?;
        d.array::<16>()?;
        if d.u8()? != 0 {
            return Ok(false);
        }
        let kms = d.str(MAX_KMS_NAME)?;
        Ok(kms.is_empty() != algorithm.is_encrypted()
            && kms
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'))
    };
    header().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version() {
        let env = Envelope {
            minor: 0,
            algorithm: Algorithm::Aes256Gcm,
            file_id: FileId([5; 16]),
            kms: "local".into(),
            keys: vec![
                KeyEntry {
                    role: KeyRole::File,
                    wrapped: vec![1, 2, 3],
                    commitment: [9; 32],
                },
                KeyEntry {
                    role: KeyRole::Column(3),
                    wrapped: vec![4],
                    commitment: [8; 32],
                },
            ],
            footer_nonce: [7; 12],
        };
        let bytes = env.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
        // A newer version: its own (here unknown) layout after the version bytes.
        let newer = [2u8, 0, 0xff, 0xff, 0xff];
        assert!(matches!(
            Envelope::decode(&newer),
            Err(Error::UnsupportedVersion { .. })
        ));
        // Damage, not a newer version: only the version byte changed, a version that never
        // existed, or a version-1 envelope shifted by a damaged trailer length.
        let mut flipped = bytes.clone();
        flipped[0] = 2;
        let mut shifted = vec![9u8];
        shifted.extend_from_slice(&bytes);
        for bad in [flipped, vec![0, 1, 1, 0], shifted, bytes[1..].to_vec()] {
            assert!(
                matches!(Envelope::decode(&bad), Err(Error::Integrity { .. })),
                "{:?}",
                Envelope::decode(&bad)
            );
        }
        for cut in 0..bytes.len() {
            assert!(Envelope::decode(&bytes[..cut]).is_err());
        }
    }
}
