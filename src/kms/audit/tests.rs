use super::frame::encode_record;
use super::*;
use crate::crypto::SecretKey;
use crate::error::Error;
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
