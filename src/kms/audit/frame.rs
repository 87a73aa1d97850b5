//! The encoding of a record and the MAC chain over records.

use std::time::SystemTime;

use super::{AuditAction, AuditEntry, AuditOutcome, AuditRecord, MAC_LEN, MAX_DETAIL_LEN};
use crate::codec::{Decoder, Encoder};
use crate::crypto::{derive_key, Purpose, SecretKey};
use crate::error::{Error, Result};
use crate::kms::types::{decode_time, encode_time, KeyId, Principal};

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

pub(super) fn encode_record(
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

pub(super) fn decode_record(bytes: &[u8]) -> Result<AuditRecord> {
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

pub(super) fn chain_mac(mac_key: &SecretKey, prev: &[u8; MAC_LEN], record: &[u8]) -> [u8; MAC_LEN] {
    // Wiped on drop: the keyed hasher holds the chain key (blake3's `zeroize` feature).
    let mut h = zeroize::Zeroizing::new(blake3::Hasher::new_keyed(mac_key.expose()));
    h.update(prev);
    h.update(record);
    *h.finalize().as_bytes()
}

pub(super) fn chain_key(audit_key: &SecretKey) -> Result<SecretKey> {
    derive_key(audit_key, Purpose::AuditChain, &[])
}
