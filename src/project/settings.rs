//! The settings file: a sealed copy on storage of what the catalog records about a project.
//!
//! ```text
//! settings file = bytes(4096) body || u8 kind || bytes(4096) envelope || tag (32)
//!   kind 0 (plaintext project):  envelope empty, tag = BLAKE3(body)
//!   kind 1 (encrypted project):  envelope = a data key wrapped under the project CMK with context
//!                                {project, table = "", aux = "settings"},
//!                                tag = keyed BLAKE3(HKDF(key, "colvault v1 settings mac key", project id),
//!                                                  u64 len(body) || body)
//! file name     = "project-" || hex(BLAKE3(body)[..16]) || ".cv"   (adopted projects: "project.cv")
//! ```
//! The catalog records BLAKE3(body) and the generation; a reader takes the file the catalog names and
//! checks it against the catalog before using any key. Files are named by their content, so a new
//! settings state is written beside the old one and the catalog swap is the commit point: a crash
//! before the swap leaves an unused file, never a project that cannot be opened.

use crate::codec::{Decoder, Encoder};
use crate::crypto::Algorithm;
use crate::error::{Error, Result};
use crate::kms::KeyId;

use super::StoredSettings;

/// The settings file of projects created before the catalog (read when adopting them).
pub(crate) const LEGACY_FILE: &str = "project.cv";
const MAGIC: [u8; 4] = *b"CVPJ";
const VERSION: u8 = 1;

/// The name of the settings file whose body has digest `digest`.
pub(crate) fn file_name(digest: &[u8; 32]) -> String {
    format!("project-{}.cv", crate::codec::hex(&digest[..16]))
}

/// The parts of a settings file.
pub(crate) struct SettingsFile<'a> {
    pub body: &'a [u8],
    pub kind: u8,
    pub envelope: &'a [u8],
    pub tag: [u8; 32],
}

impl<'a> SettingsFile<'a> {
    pub(crate) fn parse(raw: &'a [u8]) -> Result<Self> {
        let mut d = Decoder::new(raw, "project settings");
        let body = d.bytes(4096)?;
        let kind = d.u8()?;
        let envelope = d.bytes(4096)?;
        let tag: [u8; 32] = d.array()?;
        d.finish()?;
        Ok(SettingsFile {
            body,
            kind,
            envelope,
            tag,
        })
    }

    pub(crate) fn encode(body: &[u8], kind: u8, envelope: &[u8], tag: &[u8; 32]) -> Vec<u8> {
        let mut e = Encoder::new();
        e.bytes(body).u8(kind).bytes(envelope).raw(tag);
        e.finish()
    }
}

/// The MAC of a settings body under `key` (keyed BLAKE3 over the length-prefixed body).
pub(crate) fn mac(key: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = zeroize::Zeroizing::new(blake3::Hasher::new_keyed(key));
    h.update(&(body.len() as u64).to_be_bytes()).update(body);
    *h.finalize().as_bytes()
}

impl StoredSettings {
    /// The body bytes.
    pub(crate) fn encode_body(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.raw(&MAGIC).u8(VERSION);
        e.str(&self.name)
            .str(&self.project_id)
            .u8(self.algorithm.id())
            .str(&self.kms);
        e.str(self.cmk.as_ref().map(|k| k.as_str()).unwrap_or(""));
        e.u8(self.default_key as u8)
            .u8(self.allow_legacy_rc4 as u8)
            .u64(self.created_ms)
            .u64(self.generation);
        match &self.migrating_from {
            None => e.u8(0),
            Some((alg, cmk)) => e.u8(1).u8(alg.id()).str(cmk.as_ref().map(|k| k.as_str()).unwrap_or("")),
        };
        e.finish()
    }

    /// BLAKE3 of the body: what the catalog records.
    pub(crate) fn digest(&self) -> [u8; 32] {
        *blake3::hash(&self.encode_body()).as_bytes()
    }

    pub(crate) fn decode_body(body: &[u8]) -> Result<Self> {
        let mut d = Decoder::new(body, "project settings");
        if d.array::<4>()? != MAGIC {
            return Err(Error::NotColvault("not a colvault project settings file".into()));
        }
        let v = d.u8()?;
        if v != VERSION {
            return Err(Error::UnsupportedVersion {
                found: v.to_string(),
                supported: VERSION,
            });
        }
        let name = d.str(27)?.to_string();
        let project_id = d.str(64)?.to_string();
        let algorithm = Algorithm::from_id(d.u8()?)?;
        let kms = d.str(64)?.to_string();
        let cmk = d.str(64)?;
        let cmk = if cmk.is_empty() { None } else { Some(KeyId::new(cmk)?) };
        let default_key = d.u8()? != 0;
        let allow_legacy_rc4 = d.u8()? != 0;
        let created_ms = d.u64()?;
        let generation = d.u64()?;
        let migrating_from = match d.u8()? {
            0 => None,
            1 => {
                let alg = Algorithm::from_id(d.u8()?)?;
                let k = d.str(64)?;
                Some((alg, if k.is_empty() { None } else { Some(KeyId::new(k)?) }))
            }
            f => return Err(Error::malformed("project settings", format!("migration flag {f}"))),
        };
        d.finish()?;
        Ok(StoredSettings {
            name,
            project_id,
            algorithm,
            kms,
            cmk,
            default_key,
            allow_legacy_rc4,
            created_ms,
            generation,
            migrating_from,
        })
    }
}
