//! The hash-chained audit log of a [`super::LocalKms`] keystore (`<keystore>.audit`).
//!
//! One record per administrative action and per key use (generate, decrypt, re-wrap), successful or
//! refused. A record names the action, key id, version, principal and outcome; it never holds key
//! material. Each record carries
//!
//! ```text
//! mac_i = BLAKE3-keyed(K_audit, mac_{i-1} || record_i)        (mac_0 = 32 zero bytes)
//! K_audit = HKDF-SHA256(audit key, "colvault v1 audit chain key")
//! ```
//!
//! where the audit key is 32 random bytes kept inside the sealed keystore, so only holders of the root
//! secret can extend or verify the chain. The sealed keystore also records the sequence number and
//! MAC of the record of its last administrative change (the head); verification checks the chain and
//! that the head is in it, so editing, reordering, or truncating the log before the last administrative
//! change is detected. Records after the head can be cut off unnoticed (a limitation stated in
//! SECURITY.md: anchoring them would need a keystore write per key use or refusal).
//!
//! An administrative change is an [`AuditOutcome::Intent`] record (appended before the keystore
//! write; the head the new keystore records) and an outcome record that resolves it (appended after
//! the write), so no record ever claims a change that did not take effect. `LocalKms` resolves an
//! intent left without an outcome by a crash at the next open, from the keystore's generation
//! ([`unresolved_intents`]). Appenders check the last frame against the one before it (sequence and
//! MAC) before chaining to it.
//!
//! Key uses fail closed: a use whose record cannot be appended is refused. A call refused because the
//! keystore itself cannot be opened (wrong root secret, a tampered or rolled-back file) leaves no
//! record, since the audit key is inside the keystore.
//!
//! # File layout
//!
//! ```text
//! file   = "CVAL" u8(1) frame*
//! frame  = u32 n || record (n bytes, n <= 8192) || mac (32 bytes) || u32 n
//! record = u64 seq || u64 secs || u32 nanos || u8 action
//!          || u8 has_key [|| str key id] || u32 version (0 = none)
//!          || u8 has_principal [|| str principal] || u8 outcome || str detail
//!          || str error message (empty unless a failure) [|| u64 x]
//! outcome = 0 success, 1 failure, 2 intent (x = keystore generation about to be written),
//!           3 success of intent x, 4 failure of intent x (x = the intent's seq)
//! ```
//!
//! (`str` = `u32` length then UTF-8; all integers big-endian.) The trailing length lets an appender find
//! the last MAC without reading the whole file.

mod file;
mod frame;
mod intents;
#[cfg(test)]
mod tests;

use std::time::SystemTime;

use super::types::{KeyId, Principal};

pub(crate) use self::file::{append, append_resolving, create, flock, read_verified, repair};
pub(crate) use self::intents::unresolved_intents;

/// The first bytes of an audit log file.
pub const AUDIT_MAGIC: [u8; 4] = *b"CVAL";
/// The audit log format version.
pub const AUDIT_FORMAT_VERSION: u8 = 1;
const FILE_HEADER_LEN: u64 = 5;
/// The largest encoded record.
pub const MAX_AUDIT_RECORD_LEN: usize = 8192;
const MAX_DETAIL_LEN: usize = 2048;
const MAC_LEN: usize = 32;

/// What an audit record records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditAction {
    /// The keystore was created.
    CreateKeystore,
    /// The root secret was changed.
    ChangeRootSecret,
    /// A key was created.
    CreateKey,
    /// A key was enabled.
    Enable,
    /// A key was disabled.
    Disable,
    /// A key's deletion was scheduled.
    ScheduleDeletion,
    /// A key's scheduled deletion was cancelled.
    CancelDeletion,
    /// A key was deleted (its material destroyed).
    DeleteKey,
    /// A key was rotated.
    Rotate,
    /// A key version was destroyed.
    DestroyVersion,
    /// A principal was granted use of a key.
    Grant,
    /// A principal's grant was revoked.
    Revoke,
    /// A data key was generated (a key use).
    GenerateDataKey,
    /// A data key was unwrapped (a key use).
    DecryptDataKey,
    /// A wrapped key was re-wrapped (a key use).
    Rewrap,
    /// An incomplete final record, left by an append that a crash cut short, was cut from the log
    /// (the detail says how many bytes). Written by the next appender; see [`LocalKms::audit_log`].
    ///
    /// [`LocalKms::audit_log`]: super::LocalKms::audit_log
    RepairTail,
}

impl AuditAction {
    const ALL: [AuditAction; 16] = [
        AuditAction::CreateKeystore,
        AuditAction::ChangeRootSecret,
        AuditAction::CreateKey,
        AuditAction::Enable,
        AuditAction::Disable,
        AuditAction::ScheduleDeletion,
        AuditAction::CancelDeletion,
        AuditAction::DeleteKey,
        AuditAction::Rotate,
        AuditAction::DestroyVersion,
        AuditAction::Grant,
        AuditAction::Revoke,
        AuditAction::GenerateDataKey,
        AuditAction::DecryptDataKey,
        AuditAction::Rewrap,
        AuditAction::RepairTail,
    ];

    /// The byte that encodes it (1 to 16, in the order of the variants).
    pub fn code(self) -> u8 {
        Self::ALL
            .iter()
            .position(|a| *a == self)
            .expect("every action is listed") as u8
            + 1
    }

    /// The action encoded by `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// Whether it is an administrative action (as opposed to a key use).
    pub fn is_administrative(self) -> bool {
        !matches!(
            self,
            AuditAction::GenerateDataKey | AuditAction::DecryptDataKey | AuditAction::Rewrap
        )
    }
}

/// How an audited action ended, or, for an administrative change, that it is about to be committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditOutcome {
    /// It succeeded (for an administrative change: its keystore generation is committed; the record
    /// names the intent it resolves in [`AuditRecord::resolves`]).
    Success,
    /// It was refused or failed; the error message (which never holds key material). For an
    /// administrative change with an intent, the keystore write did not take effect.
    Failure(String),
    /// An administrative change about to be committed as keystore generation `generation`: written
    /// before the keystore, and always followed by a record that resolves it (its outcome), if need
    /// be by the next opener of the keystore, which compares the keystore's generation with it. An
    /// intent alone never claims that anything happened.
    Intent {
        /// The keystore generation the change writes.
        generation: u64,
    },
}

/// One verified audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When it happened, by the KMS's clock.
    pub time: SystemTime,
    /// What happened.
    pub action: AuditAction,
    /// The key concerned, if any.
    pub key: Option<KeyId>,
    /// The key version concerned, if any (for a re-wrap, the new version).
    pub version: Option<u32>,
    /// The principal that used the key, or that was granted or revoked.
    pub principal: Option<Principal>,
    /// Further facts (for instance the deletion window, or the version a re-wrap came from).
    pub detail: String,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// For the outcome of an administrative change: the sequence number of the
    /// [`AuditOutcome::Intent`] record it resolves.
    pub resolves: Option<u64>,
}

/// What the caller of [`append`] fills in; the log adds the sequence number.
#[derive(Clone, Debug)]
pub(crate) struct AuditEntry {
    pub action: AuditAction,
    pub key: Option<KeyId>,
    pub version: Option<u32>,
    pub principal: Option<Principal>,
    pub detail: String,
}

impl AuditEntry {
    pub(crate) fn new(action: AuditAction, key: Option<&KeyId>, principal: Option<&Principal>) -> Self {
        AuditEntry {
            action,
            key: key.cloned(),
            version: None,
            principal: principal.cloned(),
            detail: String::new(),
        }
    }
}

/// The position and MAC of a record: what the sealed keystore holds of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct AuditHead {
    pub seq: u64,
    pub mac: [u8; MAC_LEN],
}
