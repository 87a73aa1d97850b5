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

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::SystemTime;

use super::types::{decode_time, encode_time, KeyId, Principal};
use crate::codec::{Decoder, Encoder};
use crate::crypto::{ct_eq, derive_key, Purpose, SecretKey};
use crate::error::{Error, Result};

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

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn encode_record(
    seq: u64,
    time: SystemTime,
    entry: &AuditEntry,
    outcome: &AuditOutcome,
    resolves: Option<u64>,
) -> Result<Vec<u8>> {
    let mut e = Encoder::new();
    e.u64(seq);
    encode_time(&mut e, time)?;
    e.u8(entry.action.code());
    match &entry.key {
        Some(k) => e.u8(1).str(k.as_str()),
        None => e.u8(0),
    };
    e.u32(entry.version.unwrap_or(0));
    match &entry.principal {
        Some(p) => e.u8(1).str(p.as_str()),
        None => e.u8(0),
    };
    let detail = truncate_utf8(&entry.detail, MAX_DETAIL_LEN);
    match (outcome, resolves) {
        (AuditOutcome::Success, None) => e.u8(0).str(detail).str(""),
        (AuditOutcome::Failure(m), None) => e.u8(1).str(detail).str(truncate_utf8(m, MAX_DETAIL_LEN)),
        (AuditOutcome::Intent { generation }, _) => e.u8(2).str(detail).str("").u64(*generation),
        (AuditOutcome::Success, Some(i)) => e.u8(3).str(detail).str("").u64(i),
        (AuditOutcome::Failure(m), Some(i)) => e.u8(4).str(detail).str(truncate_utf8(m, MAX_DETAIL_LEN)).u64(i),
    };
    Ok(e.finish())
}

fn decode_record(bytes: &[u8]) -> Result<AuditRecord> {
    const WHAT: &str = "audit record";
    let mut d = Decoder::new(bytes, WHAT);
    let seq = d.u64()?;
    let time = decode_time(&mut d, WHAT)?;
    let code = d.u8()?;
    let action = AuditAction::from_code(code).ok_or_else(|| Error::malformed(WHAT, format!("action {code}")))?;
    let key = match d.u8()? {
        0 => None,
        1 => Some(KeyId::decode(&mut d)?),
        b => return Err(Error::malformed(WHAT, format!("key flag {b}"))),
    };
    let version = match d.u32()? {
        0 => None,
        v => Some(v),
    };
    let principal = match d.u8()? {
        0 => None,
        1 => Some(Principal::decode(&mut d)?),
        b => return Err(Error::malformed(WHAT, format!("principal flag {b}"))),
    };
    let flag = d.u8()?;
    let detail = d.str(MAX_DETAIL_LEN)?.to_owned();
    let message = d.str(MAX_DETAIL_LEN)?;
    let (outcome, resolves) = match flag {
        0 if message.is_empty() => (AuditOutcome::Success, None),
        1 => (AuditOutcome::Failure(message.to_owned()), None),
        2 if message.is_empty() => (AuditOutcome::Intent { generation: d.u64()? }, None),
        3 if message.is_empty() => (AuditOutcome::Success, Some(d.u64()?)),
        4 => (AuditOutcome::Failure(message.to_owned()), Some(d.u64()?)),
        _ => return Err(Error::malformed(WHAT, format!("outcome {flag}"))),
    };
    if matches!(resolves, Some(i) if i >= seq) {
        return Err(Error::malformed(WHAT, "an outcome resolves a later record"));
    }
    d.finish()?;
    Ok(AuditRecord {
        seq,
        time,
        action,
        key,
        version,
        principal,
        detail,
        outcome,
        resolves,
    })
}

fn chain_mac(mac_key: &SecretKey, prev: &[u8; MAC_LEN], record: &[u8]) -> [u8; MAC_LEN] {
    // Wiped on drop: the keyed hasher holds the chain key (blake3's `zeroize` feature).
    let mut h = zeroize::Zeroizing::new(blake3::Hasher::new_keyed(mac_key.expose()));
    h.update(prev);
    h.update(record);
    *h.finalize().as_bytes()
}

fn chain_key(audit_key: &SecretKey) -> Result<SecretKey> {
    derive_key(audit_key, Purpose::AuditChain, &[])
}

fn io(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::io(format!("{what} audit log {}", path.display()), e)
}

fn bad(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::integrity(format!("audit log {}: {detail}", path.display()))
}

/// Takes an advisory lock on `file` (exclusive or shared; `flock` on Unix, `LockFileEx` on Windows),
/// released when the file is closed. Locks taken through different open files conflict, also within one
/// process.
pub(crate) fn flock(file: &File, exclusive: bool) -> std::io::Result<()> {
    if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    }
}

/// Creates an empty log; fails if the file exists.
pub(crate) fn create(path: &Path) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| io(path, "creating", e))?;
    let mut header = AUDIT_MAGIC.to_vec();
    header.push(AUDIT_FORMAT_VERSION);
    f.write_all(&header).map_err(|e| io(path, "writing", e))?;
    f.sync_all().map_err(|e| io(path, "syncing", e))
}

/// The frame that ends at byte `end` of an open log (found by its trailing length): where it
/// starts, its record and its MAC. Lengths are checked; the MAC is not.
fn frame_ending_at(path: &Path, f: &mut File, end: u64) -> Result<(u64, Vec<u8>, [u8; MAC_LEN])> {
    if end < FILE_HEADER_LEN + 4 {
        return Err(bad(path, "a frame runs into the file header"));
    }
    let mut n = [0u8; 4];
    f.seek(SeekFrom::Start(end - 4)).map_err(|e| io(path, "reading", e))?;
    f.read_exact(&mut n).map_err(|e| io(path, "reading", e))?;
    let n = u32::from_be_bytes(n) as usize;
    let whole = (n + MAC_LEN + 8) as u64;
    if !(8..=MAX_AUDIT_RECORD_LEN).contains(&n) || whole > end - FILE_HEADER_LEN {
        return Err(bad(
            path,
            format!("the frame ending at byte {end} has a length out of range"),
        ));
    }
    let start = end - whole;
    let mut frame = vec![0u8; n + MAC_LEN + 4];
    f.seek(SeekFrom::Start(start)).map_err(|e| io(path, "reading", e))?;
    f.read_exact(&mut frame).map_err(|e| io(path, "reading", e))?;
    if frame[..4] != (n as u32).to_be_bytes() {
        return Err(bad(
            path,
            format!("the frame ending at byte {end} has lengths that disagree"),
        ));
    }
    let mac: [u8; MAC_LEN] = frame[4 + n..4 + n + MAC_LEN].try_into().expect("MAC_LEN bytes");
    frame.truncate(4 + n);
    frame.drain(..4);
    Ok((start, frame, mac))
}

/// The (seq, mac) of the last record of an open log, read from its end and verified against the
/// record before it: its sequence number follows that record's and its MAC chains to that record's
/// MAC. So an appender never chains to a junk frame (which would leave the log unverifiable for good,
/// since every later MAC would depend on it); a frame that fails is for [`scan`] to judge.
fn tail(path: &Path, f: &mut File, chain: &SecretKey) -> Result<AuditHead> {
    let len = f.seek(SeekFrom::End(0)).map_err(|e| io(path, "reading", e))?;
    if len < FILE_HEADER_LEN {
        return Err(bad(path, "shorter than its header"));
    }
    if len == FILE_HEADER_LEN {
        return Ok(AuditHead::default());
    }
    let (start, record, mac) = frame_ending_at(path, f, len)?;
    let seq = decode_record(&record).map_err(|e| bad(path, e))?.seq;
    let prev = if start == FILE_HEADER_LEN {
        AuditHead::default()
    } else {
        let (_, prev_record, prev_mac) = frame_ending_at(path, f, start)?;
        AuditHead {
            seq: decode_record(&prev_record).map_err(|e| bad(path, e))?.seq,
            mac: prev_mac,
        }
    };
    if seq != prev.seq + 1 || !ct_eq(&chain_mac(chain, &prev.mac, &record), &mac) {
        return Err(bad(path, "the last record does not chain to the one before it"));
    }
    Ok(AuditHead { seq, mac })
}

/// What [`scan`] found: the head of the log's whole frames, where they end, and the file's length.
struct Scan {
    head: AuditHead,
    whole_end: u64,
    len: u64,
}

/// Reads and verifies the log from its start (chain, sequence numbers, record encoding), handing
/// each verified record and its MAC to `each`, and stops at the end or at a final frame that is
/// incomplete: fewer bytes than its leading length announces, which is what an append cut short by
/// a crash leaves (one `write` of a whole frame). Any other damage is [`Error::Integrity`]. `chain`
/// is the chain key; the caller holds a lock on `f`.
fn scan(
    path: &Path,
    f: &mut File,
    chain: &SecretKey,
    mut each: impl FnMut(AuditRecord, &[u8; MAC_LEN]) -> Result<()>,
) -> Result<Scan> {
    let len = f.seek(SeekFrom::End(0)).map_err(|e| io(path, "reading", e))?;
    f.seek(SeekFrom::Start(0)).map_err(|e| io(path, "reading", e))?;
    let mut r = std::io::BufReader::new(&mut *f);
    let mut header = [0u8; FILE_HEADER_LEN as usize];
    r.read_exact(&mut header)
        .map_err(|_| bad(path, "shorter than its header"))?;
    if header[..4] != AUDIT_MAGIC || header[4] != AUDIT_FORMAT_VERSION {
        return Err(bad(path, "bad magic or format version"));
    }
    let mut head = AuditHead::default();
    let mut pos = FILE_HEADER_LEN;
    let mut frame = Vec::new();
    while len - pos >= 4 {
        let mut n = [0u8; 4];
        r.read_exact(&mut n).map_err(|e| io(path, "reading", e))?;
        let n = u32::from_be_bytes(n) as usize;
        if !(8..=MAX_AUDIT_RECORD_LEN).contains(&n) {
            return Err(bad(path, format!("the frame at byte {pos} has length {n}")));
        }
        let whole = (n + MAC_LEN + 8) as u64;
        if len - pos < whole {
            break;
        }
        frame.resize(n + MAC_LEN + 4, 0);
        r.read_exact(&mut frame).map_err(|e| io(path, "reading", e))?;
        let (record, rest) = frame.split_at(n);
        let mac: [u8; MAC_LEN] = rest[..MAC_LEN].try_into().expect("MAC_LEN bytes");
        let seq = head.seq + 1;
        if rest[MAC_LEN..] != (n as u32).to_be_bytes() {
            return Err(bad(path, format!("record {seq}'s lengths disagree")));
        }
        if !ct_eq(&chain_mac(chain, &head.mac, record), &mac) {
            return Err(bad(
                path,
                format!("record {seq} fails its MAC (edited, reordered or removed records)"),
            ));
        }
        let rec = decode_record(record).map_err(|e| bad(path, e))?;
        if rec.seq != seq {
            return Err(bad(path, format!("record {seq} claims sequence number {}", rec.seq)));
        }
        each(rec, &mac)?;
        head = AuditHead { seq, mac };
        pos += whole;
    }
    Ok(Scan {
        head,
        whole_end: pos,
        len,
    })
}

/// Opens the log for an append under an exclusive lock and returns it with its head. If the last
/// frame cannot be read, the log is verified from its start; an incomplete final frame (an append
/// cut short by a crash) is cut off and the cut is recorded as [`AuditAction::RepairTail`]. Other
/// damage is [`Error::Integrity`] and changes nothing.
fn open_for_append(path: &Path, chain: &SecretKey, time: SystemTime) -> Result<(File, AuditHead)> {
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| io(path, "opening", e))?;
    flock(&f, true).map_err(|e| io(path, "locking", e))?;
    let head = match tail(path, &mut f, chain) {
        Ok(head) => head,
        Err(_) => {
            // The scan reads the whole log, so its error (if any) says more than the tail's.
            let found = scan(path, &mut f, chain, |_, _| Ok(()))?;
            if found.whole_end == found.len {
                found.head
            } else if frame_ending_at(path, &mut f, found.len).is_ok_and(|(start, record, _)| {
                start >= found.whole_end && decode_record(&record).is_ok_and(|r| r.seq > found.head.seq)
            }) {
                // A torn append leaves a prefix of one frame; this "incomplete" frame is followed by
                // whole records, so a length was damaged: cutting would remove records that were
                // written, perhaps ones the keystore anchors. Refuse, as for any other damage.
                return Err(bad(
                    path,
                    format!(
                        "the frame at byte {} has a damaged length (whole records follow it)",
                        found.whole_end
                    ),
                ));
            } else {
                f.set_len(found.whole_end)
                    .and_then(|()| f.sync_data())
                    .map_err(|e| io(path, "repairing", e))?;
                let mut entry = AuditEntry::new(AuditAction::RepairTail, None, None);
                entry.detail = format!(
                    "cut {} bytes of an incomplete final record (an append cut short, e.g. by a crash)",
                    found.len - found.whole_end
                );
                write_frame(
                    path,
                    &mut f,
                    chain,
                    found.head,
                    time,
                    &entry,
                    &AuditOutcome::Success,
                    None,
                )?
            }
        }
    };
    Ok((f, head))
}

/// Appends the record after `prev` to an open, locked log and syncs it.
#[allow(clippy::too_many_arguments)]
fn write_frame(
    path: &Path,
    f: &mut File,
    chain: &SecretKey,
    prev: AuditHead,
    time: SystemTime,
    entry: &AuditEntry,
    outcome: &AuditOutcome,
    resolves: Option<u64>,
) -> Result<AuditHead> {
    let seq = prev.seq + 1;
    let record = encode_record(seq, time, entry, outcome, resolves)?;
    debug_assert!(record.len() <= MAX_AUDIT_RECORD_LEN);
    let mac = chain_mac(chain, &prev.mac, &record);
    let n = (record.len() as u32).to_be_bytes();
    let mut frame = Vec::with_capacity(record.len() + MAC_LEN + 8);
    frame.extend_from_slice(&n);
    frame.extend_from_slice(&record);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&n);
    f.write_all(&frame).map_err(|e| io(path, "appending to", e))?;
    f.sync_data().map_err(|e| io(path, "syncing", e))?;
    Ok(AuditHead { seq, mac })
}

/// Appends one record under an exclusive lock on the log (cutting an incomplete final record first,
/// see [`open_for_append`]), syncs it, and returns its head.
pub(crate) fn append(
    path: &Path,
    audit_key: &SecretKey,
    time: SystemTime,
    entry: &AuditEntry,
    outcome: &AuditOutcome,
) -> Result<AuditHead> {
    append_resolving(path, audit_key, time, entry, outcome, None)
}

/// [`append`] of a record that resolves the intent record `resolves` (its outcome).
pub(crate) fn append_resolving(
    path: &Path,
    audit_key: &SecretKey,
    time: SystemTime,
    entry: &AuditEntry,
    outcome: &AuditOutcome,
    resolves: Option<u64>,
) -> Result<AuditHead> {
    let chain = chain_key(audit_key)?;
    let (mut f, prev) = open_for_append(path, &chain, time)?;
    write_frame(path, &mut f, &chain, prev, time, entry, outcome, resolves)
}

/// The intent records at or after `anchor` (the record the sealed keystore holds) that no later
/// record resolves, verified: the log is walked back from its end to the anchor by the frames'
/// trailing lengths (so the cost is the number of records since the last administrative change, not
/// the log's size), the anchor's MAC must be the keystore's, and every record after it must chain to
/// it. An incomplete final record is cut first, as an append would. The caller holds the keystore's
/// exclusive lock, so no intent is being written meanwhile.
///
/// A success that resolves an intent after the anchor is a change the keystore does not hold: the
/// keystore was rolled back, and that is [`Error::KeystoreRollback`] (`anchor_generation` is the
/// keystore's generation, for the message).
pub(crate) fn unresolved_intents(
    path: &Path,
    audit_key: &SecretKey,
    anchor: AuditHead,
    anchor_generation: u64,
    time: SystemTime,
) -> Result<Vec<AuditRecord>> {
    let chain = chain_key(audit_key)?;
    let (mut f, _) = open_for_append(path, &chain, time)?;
    let len = f.seek(SeekFrom::End(0)).map_err(|e| io(path, "reading", e))?;
    // Walk back to the anchor.
    let mut frames: Vec<u64> = Vec::new(); // frame starts, last first
    let mut pos = len;
    loop {
        if pos == FILE_HEADER_LEN {
            if anchor.seq == 0 {
                break;
            }
            return Err(bad(
                path,
                format!(
                    "record {} (the keystore's last administrative change) is missing",
                    anchor.seq
                ),
            ));
        }
        let (start, record, _) = frame_ending_at(path, &mut f, pos)?;
        let seq = decode_record(&record).map_err(|e| bad(path, e))?.seq;
        if seq < anchor.seq {
            return Err(bad(
                path,
                format!(
                    "record {} (the keystore's last administrative change) is missing",
                    anchor.seq
                ),
            ));
        }
        frames.push(start);
        if seq == anchor.seq {
            break;
        }
        pos = start;
    }
    frames.reverse();
    // Verify forward from the anchor.
    let mut prev = AuditHead::default();
    let mut intents: Vec<AuditRecord> = Vec::new();
    let mut resolved: Vec<u64> = Vec::new();
    for (i, start) in frames.iter().enumerate() {
        let end = frames.get(i + 1).copied().unwrap_or(len);
        let (_, record, mac) = frame_ending_at(path, &mut f, end)?;
        let rec = decode_record(&record).map_err(|e| bad(path, e))?;
        let is_anchor = i == 0 && anchor.seq > 0;
        let ok = if is_anchor {
            rec.seq == anchor.seq && ct_eq(&mac, &anchor.mac)
        } else {
            rec.seq == prev.seq + 1 && ct_eq(&chain_mac(&chain, &prev.mac, &record), &mac)
        };
        if !ok {
            return Err(bad(
                path,
                format!("the record at byte {start} does not chain to the keystore's last administrative change"),
            ));
        }
        prev = AuditHead { seq: rec.seq, mac };
        if let Some(r) = rec.resolves {
            // A change committed after the keystore's last one: the log goes on past the keystore,
            // so the keystore file is an older copy (restored from a backup or snapshot).
            if r != anchor.seq && rec.outcome == AuditOutcome::Success {
                let generation = intents
                    .iter()
                    .find(|i| i.seq == r)
                    .and_then(|i| match i.outcome {
                        AuditOutcome::Intent { generation } => Some(generation),
                        _ => None,
                    })
                    .unwrap_or(0);
                return Err(Error::KeystoreRollback {
                    kms: format!(
                        "{} (its audit log records administrative change {r}, committed after the keystore's last)",
                        path.display()
                    ),
                    expected: generation,
                    found: anchor_generation,
                });
            }
            resolved.push(r);
        }
        if matches!(rec.outcome, AuditOutcome::Intent { .. }) {
            intents.push(rec);
        }
    }
    intents.retain(|r| !resolved.contains(&r.seq));
    Ok(intents)
}

/// Cuts an incomplete final record, if there is one, as the next [`append`] would.
pub(crate) fn repair(path: &Path, audit_key: &SecretKey, time: SystemTime) -> Result<()> {
    open_for_append(path, &chain_key(audit_key)?, time).map(drop)
}

/// Reads and verifies the whole log: the chain of MACs, consecutive sequence numbers, and that
/// `head` (from the sealed keystore) is one of its records. Any failure is [`Error::Integrity`].
pub(crate) fn read_verified(path: &Path, audit_key: &SecretKey, head: AuditHead) -> Result<Vec<AuditRecord>> {
    let mut f = File::open(path).map_err(|e| io(path, "opening", e))?;
    flock(&f, false).map_err(|e| io(path, "locking", e))?;
    let mut out = Vec::new();
    let mut head_seen = head.seq == 0;
    let found = scan(path, &mut f, &chain_key(audit_key)?, |r, mac| {
        if r.seq == head.seq {
            if !ct_eq(mac, &head.mac) {
                return Err(bad(
                    path,
                    format!("record {} is not the one the keystore recorded", r.seq),
                ));
            }
            head_seen = true;
        }
        out.push(r);
        Ok(())
    })?;
    if found.whole_end != found.len {
        return Err(bad(
            path,
            format!(
                "its last {} bytes are an incomplete record (an append cut short); the next key use or \
                 audit log read cuts them",
                found.len - found.whole_end
            ),
        ));
    }
    if !head_seen {
        return Err(bad(
            path,
            format!(
                "it ends at record {} before the last administrative action (record {}): truncated",
                out.len(),
                head.seq
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(action: AuditAction) -> AuditEntry {
        AuditEntry::new(
            action,
            Some(&KeyId::new("k1").unwrap()),
            Some(&Principal::new("p").unwrap()),
        )
    }

    #[test]
    fn codes_round_trip() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::from_code(a.code()), Some(a));
        }
        assert_eq!(AuditAction::from_code(0), None);
        assert_eq!(AuditAction::from_code(17), None);
        assert!(AuditAction::Grant.is_administrative());
        assert!(!AuditAction::DecryptDataKey.is_administrative());
    }

    #[test]
    fn chain_verifies_and_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.audit");
        create(&path).unwrap();
        assert!(create(&path).is_err(), "never overwrites a log");
        let key = SecretKey::generate().unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h1 = append(&path, &key, t, &entry(AuditAction::CreateKey), &AuditOutcome::Success).unwrap();
        let h2 = append(&path, &key, t, &entry(AuditAction::Disable), &AuditOutcome::Success).unwrap();
        let fail = AuditOutcome::Failure("key k1 is disabled".into());
        let h3 = append(&path, &key, t, &entry(AuditAction::DecryptDataKey), &fail).unwrap();
        assert_eq!((h1.seq, h2.seq, h3.seq), (1, 2, 3));
        let recs = read_verified(&path, &key, h2).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].outcome, fail);
        assert_eq!(recs[1].action, AuditAction::Disable);

        // The wrong key, and a head that is not in the log.
        assert!(read_verified(&path, &SecretKey::generate().unwrap(), h2).is_err());
        let mut forged = h2;
        forged.mac[0] ^= 1;
        assert!(matches!(
            read_verified(&path, &key, forged),
            Err(Error::Integrity { .. })
        ));

        let good = std::fs::read(&path).unwrap();
        // Every single-byte change is detected.
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x20;
            std::fs::write(&path, &b).unwrap();
            assert!(
                matches!(read_verified(&path, &key, h2), Err(Error::Integrity { .. })),
                "byte {i}"
            );
        }
        // Truncation before the head is detected; after it, it is not (documented).
        let frame3 = good.len() - (h3_len(&good));
        std::fs::write(&path, &good[..frame3]).unwrap();
        assert_eq!(read_verified(&path, &key, h2).unwrap().len(), 2);
        assert!(read_verified(&path, &key, h3).is_err());
        std::fs::write(&path, &good[..frame3 - 10]).unwrap();
        assert!(read_verified(&path, &key, h1).is_err());
    }

    /// An append cut short (a SIGKILL between pages of its one `write`) leaves a strict prefix of a
    /// frame. The next append cuts it, records the cut, and the log verifies again.
    #[test]
    fn incomplete_final_frames_are_cut_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.audit");
        create(&path).unwrap();
        let key = SecretKey::generate().unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        append(&path, &key, t, &entry(AuditAction::CreateKey), &AuditOutcome::Success).unwrap();
        let h2 = append(&path, &key, t, &entry(AuditAction::Grant), &AuditOutcome::Success).unwrap();
        let two = std::fs::read(&path).unwrap();
        append(
            &path,
            &key,
            t,
            &entry(AuditAction::DecryptDataKey),
            &AuditOutcome::Success,
        )
        .unwrap();
        let three = std::fs::read(&path).unwrap();
        for kept in 1..three.len() - two.len() {
            std::fs::write(&path, &three[..two.len() + kept]).unwrap();
            // Unreadable as it stands...
            assert!(read_verified(&path, &key, h2).is_err(), "{kept} bytes of frame 3");
            // ...and the next append repairs it.
            let h = append(&path, &key, t, &entry(AuditAction::Rewrap), &AuditOutcome::Success).unwrap();
            assert_eq!(h.seq, 4, "{kept} bytes of frame 3");
            let recs = read_verified(&path, &key, h2).unwrap();
            let actions: Vec<_> = recs.iter().map(|r| r.action).collect();
            assert_eq!(
                actions,
                [
                    AuditAction::CreateKey,
                    AuditAction::Grant,
                    AuditAction::RepairTail,
                    AuditAction::Rewrap
                ],
                "{kept} bytes of frame 3"
            );
            assert!(
                recs[2].detail.starts_with(&format!("cut {kept} bytes ")),
                "{}",
                recs[2].detail
            );
        }
        // A whole log needs no repair: `repair` leaves it byte for byte.
        std::fs::write(&path, &three).unwrap();
        repair(&path, &key, t).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), three);
        // `repair` on its own cuts and records like an append.
        std::fs::write(&path, &three[..three.len() - 1]).unwrap();
        repair(&path, &key, t).unwrap();
        let recs = read_verified(&path, &key, h2).unwrap();
        assert_eq!(recs.last().unwrap().action, AuditAction::RepairTail);
        assert_eq!(recs.len(), 3);
    }

    /// Only an incomplete *final* frame is cut: damage to whole frames, or the wrong key, is an
    /// integrity error that changes nothing, and the key use it was for is refused.
    #[test]
    fn damage_is_never_repaired_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.audit");
        create(&path).unwrap();
        let key = SecretKey::generate().unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for a in [AuditAction::CreateKey, AuditAction::Grant, AuditAction::DecryptDataKey] {
            append(&path, &key, t, &entry(a), &AuditOutcome::Success).unwrap();
        }
        let good = std::fs::read(&path).unwrap();
        let frame1 = FILE_HEADER_LEN as usize;
        let cases: [(&str, Vec<u8>, &SecretKey); 5] = [
            (
                "record 2's leading length raised past the end, whole records after it",
                {
                    let mut b = good.clone();
                    let n1 = u32::from_be_bytes(good[frame1..frame1 + 4].try_into().unwrap()) as usize;
                    b[frame1 + n1 + MAC_LEN + 8 + 2] ^= 0x04;
                    b
                },
                &key,
            ),
            (
                "a flipped byte in record 1, last frame cut",
                {
                    let mut b = good[..good.len() - 3].to_vec();
                    b[frame1 + 12] ^= 1;
                    b
                },
                &key,
            ),
            (
                "a wrong leading length in record 2, last frame cut",
                {
                    let mut b = good[..good.len() - 3].to_vec();
                    let n1 = u32::from_be_bytes(good[frame1..frame1 + 4].try_into().unwrap()) as usize;
                    b[frame1 + n1 + MAC_LEN + 8] ^= 0x40;
                    b
                },
                &key,
            ),
            (
                "garbage after the last whole frame",
                {
                    let mut b = good.clone();
                    b.extend_from_slice(&[0xff; 12]);
                    b
                },
                &key,
            ),
            (
                "the wrong key, last frame cut",
                good[..good.len() - 3].to_vec(),
                &SecretKey::generate().unwrap(),
            ),
        ];
        for (what, bytes, k) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let got = append(&path, k, t, &entry(AuditAction::Rewrap), &AuditOutcome::Success);
            assert!(matches!(got, Err(Error::Integrity { .. })), "{what}: {got:?}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: the log is unchanged");
        }
        // The positive control: the same cut with nothing else wrong is repaired.
        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        append(&path, &key, t, &entry(AuditAction::Rewrap), &AuditOutcome::Success).unwrap();
    }

    /// A whole junk frame at the end (well-formed, its sequence number next, but a MAC forged without
    /// the key) is never chained to: the append is refused with an integrity error and changes
    /// nothing, so once the junk is removed the log verifies and takes appends again. (Before, the
    /// appender took the last MAC at face value and chained to it, and every later record depended on
    /// the junk: the log could never verify again.)
    #[test]
    fn a_junk_final_frame_is_never_chained_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.audit");
        create(&path).unwrap();
        let key = SecretKey::generate().unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        append(&path, &key, t, &entry(AuditAction::CreateKey), &AuditOutcome::Success).unwrap();
        let h2 = append(&path, &key, t, &entry(AuditAction::Grant), &AuditOutcome::Success).unwrap();
        let good = std::fs::read(&path).unwrap();
        let record = encode_record(3, t, &entry(AuditAction::Disable), &AuditOutcome::Success, None).unwrap();
        let n = (record.len() as u32).to_be_bytes();
        let mut junk = good.clone();
        junk.extend_from_slice(&n);
        junk.extend_from_slice(&record);
        junk.extend_from_slice(&[0x42; MAC_LEN]);
        junk.extend_from_slice(&n);
        std::fs::write(&path, &junk).unwrap();
        let got = append(&path, &key, t, &entry(AuditAction::Rewrap), &AuditOutcome::Success);
        assert!(matches!(got, Err(Error::Integrity { .. })), "{got:?}");
        assert_eq!(std::fs::read(&path).unwrap(), junk, "nothing chained to the junk");
        // Removing the junk restores a log that verifies and takes appends.
        std::fs::write(&path, &good).unwrap();
        let h3 = append(&path, &key, t, &entry(AuditAction::Rewrap), &AuditOutcome::Success).unwrap();
        assert_eq!(h3.seq, 3);
        assert_eq!(read_verified(&path, &key, h2).unwrap().len(), 3);
    }

    /// Intents and their outcomes: the walk from the keystore's anchor finds the intents that no
    /// record resolves, and refuses an anchor that is not in the log.
    #[test]
    fn unresolved_intents_are_found_from_the_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.audit");
        create(&path).unwrap();
        let key = SecretKey::generate().unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let i1 = append(
            &path,
            &key,
            t,
            &entry(AuditAction::Disable),
            &AuditOutcome::Intent { generation: 2 },
        )
        .unwrap();
        assert_eq!(unresolved_intents(&path, &key, i1, 1, t).unwrap().len(), 1);
        append_resolving(
            &path,
            &key,
            t,
            &entry(AuditAction::Disable),
            &AuditOutcome::Success,
            Some(i1.seq),
        )
        .unwrap();
        append(
            &path,
            &key,
            t,
            &entry(AuditAction::DecryptDataKey),
            &AuditOutcome::Success,
        )
        .unwrap();
        assert!(unresolved_intents(&path, &key, i1, 1, t).unwrap().is_empty());
        let i2 = append(
            &path,
            &key,
            t,
            &entry(AuditAction::Enable),
            &AuditOutcome::Intent { generation: 3 },
        )
        .unwrap();
        let open = unresolved_intents(&path, &key, i1, 1, t).unwrap();
        assert_eq!(open.iter().map(|r| r.seq).collect::<Vec<_>>(), [i2.seq]);
        assert_eq!(open[0].outcome, AuditOutcome::Intent { generation: 3 });
        let recs = read_verified(&path, &key, i1).unwrap();
        assert_eq!(recs[1].resolves, Some(i1.seq));
        let mut forged = i1;
        forged.mac[0] ^= 1;
        assert!(matches!(
            unresolved_intents(&path, &key, forged, 1, t),
            Err(Error::Integrity { .. })
        ));
        let missing = AuditHead { seq: 9, mac: i1.mac };
        assert!(matches!(
            unresolved_intents(&path, &key, missing, 1, t),
            Err(Error::Integrity { .. })
        ));
    }

    fn h3_len(file: &[u8]) -> usize {
        let n = u32::from_be_bytes(file[file.len() - 4..].try_into().unwrap()) as usize;
        n + MAC_LEN + 8
    }
}
