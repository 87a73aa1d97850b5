//! Finding the intent records that no outcome resolves (left by a crash between an intent and its
//! outcome), verified against the keystore's anchor.

use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::time::SystemTime;

use super::file::{bad, frame_ending_at, io, open_for_append};
use super::frame::{chain_key, chain_mac, decode_record};
use super::{AuditHead, AuditOutcome, AuditRecord, FILE_HEADER_LEN};
use crate::crypto::{ct_eq, SecretKey};
use crate::error::{Error, Result};

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
