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
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut d = Decoder::new(buf, "file envelope");
        let major = d.u8()?;
        let minor = d.u8()?;
        if major != VERSION_MAJOR {
            return Err(Error::UnsupportedVersion {
                found: format!("{major}.{minor}"),
                supported: VERSION_MAJOR,
            });
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
        let mut newer = bytes.clone();
        newer[0] = 2;
        assert!(matches!(
            Envelope::decode(&newer),
            Err(Error::UnsupportedVersion { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(Envelope::decode(&bytes[..cut]).is_err());
        }
    }
}
