//! The log file: creating it, locking it, reading frames from its end, scanning and verifying it
//! from its start, appending (cutting an incomplete final frame first), and reading it verified.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::SystemTime;

use super::frame::{chain_key, chain_mac, decode_record, encode_record};
use super::{
    AuditAction, AuditEntry, AuditHead, AuditOutcome, AuditRecord, AUDIT_FORMAT_VERSION, AUDIT_MAGIC, FILE_HEADER_LEN,
    MAC_LEN, MAX_AUDIT_RECORD_LEN,
};
use crate::crypto::{ct_eq, SecretKey};
use crate::error::{Error, Result};

pub(super) fn io(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::io(format!("{what} audit log {}", path.display()), e)
}

pub(super) fn bad(path: &Path, detail: impl std::fmt::Display) -> Error {
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
pub(super) fn frame_ending_at(path: &Path, f: &mut File, end: u64) -> Result<(u64, Vec<u8>, [u8; MAC_LEN])> {
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
pub(super) fn open_for_append(path: &Path, chain: &SecretKey, time: SystemTime) -> Result<(File, AuditHead)> {
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
