//! Tests of sealing and opening chunks.

use std::sync::atomic::Ordering;

use super::column::ColumnKeys;
use super::layout::plaintext_len_with;
use super::*;
use crate::crypto::algorithm::Algorithm;
use crate::crypto::keys::SecretKey;
use crate::crypto::provider::{default_provider, CipherProvider, CtrKey, GcmKey};
use crate::error::{Error, Result};
use proptest::prelude::*;

fn keys(alg: Algorithm, dek: &SecretKey, seg: usize) -> ColumnKeys {
    let mut k = ColumnKeys::new(default_provider(), alg, dek, FileId([3; 16]), 7).unwrap();
    k.seg_len = seg;
    k
}

#[test]
fn length_arithmetic() {
    for tag in [16usize, 32] {
        for seg in [16usize, 64, 1 << 20] {
            for n in [0usize, 1, 15, 16, 17, 63, 64, 65, 128, 1000, 3 * seg, 3 * seg + 1] {
                let k = if n == 0 { 1 } else { n.div_ceil(seg) };
                let sealed = n + k * tag;
                assert_eq!(
                    plaintext_len_with(tag, seg, sealed),
                    Some(n),
                    "tag {tag} seg {seg} n {n}"
                );
            }
            for bad in [0usize, 1, tag - 1, tag + seg + tag - 1] {
                if bad != tag && (bad < tag || bad % (seg + tag) <= tag && bad % (seg + tag) != 0) {
                    assert_eq!(plaintext_len_with(tag, seg, bad), None, "tag {tag} seg {seg} bad {bad}");
                }
            }
        }
    }
}

#[test]
fn round_trip_each_algorithm_and_size() {
    let dek = SecretKey::generate().unwrap();
    for alg in Algorithm::ALL {
        for n in [0usize, 1, 31, 64, 65, 1000] {
            let k = keys(alg, &dek, 64);
            let plain: Vec<u8> = (0..n).map(|i| (i * 7 + 1) as u8).collect();
            let mut data = plain.clone();
            let tags = k.seal(2, ChunkKind::Data, &mut data, false).unwrap();
            assert_eq!(tags.len(), k.segments(n) * alg.tag_len());
            if alg.is_encrypted() && n > 8 {
                assert_ne!(data, plain, "{alg} encrypts");
            }
            k.open(2, ChunkKind::Data, &mut data, &tags, false).unwrap();
            assert_eq!(data, plain, "{alg} n={n}");
        }
    }
}

/// Opening a chunk segment by segment gives the same plaintext as opening it whole; a flipped
/// byte fails exactly its segment; a tag, index or length that is not the segment's fails.
#[test]
fn segments_open_one_at_a_time() {
    let dek = SecretKey::generate().unwrap();
    let file = FileId([9; 16]);
    let n = 2 * SEGMENT_LEN + 1234;
    let plain: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    for alg in Algorithm::ALL {
        let sealer = ChunkSealer::for_file(default_provider(), alg, &dek, file, 4).unwrap();
        let opener = ChunkOpener::new(alg, &dek, file, 4).unwrap();
        let mut sealed = plain.clone();
        let tags = sealer.seal_detached(6, ChunkKind::Data, &mut sealed).unwrap();
        if alg == Algorithm::Rc4 {
            assert!(!opener.opens_segments());
            let mut seg = sealed[..SEGMENT_LEN].to_vec();
            assert!(opener
                .open_segment(6, ChunkKind::Data, n, 0, &mut seg, &tags[..32])
                .is_err());
            continue;
        }
        assert!(opener.opens_segments(), "{alg}");
        let t = alg.tag_len();
        let seg_of = |i: usize| (i * SEGMENT_LEN, ((i + 1) * SEGMENT_LEN).min(n));
        for i in 0..3 {
            let (a, b) = seg_of(i);
            let mut seg = sealed[a..b].to_vec();
            opener
                .open_segment(6, ChunkKind::Data, n, i as u32, &mut seg, &tags[i * t..(i + 1) * t])
                .unwrap();
            assert_eq!(seg, plain[a..b], "{alg} segment {i}");

            let mut flipped = sealed[a..b].to_vec();
            flipped[17] ^= 1;
            let e = opener.open_segment(6, ChunkKind::Data, n, i as u32, &mut flipped, &tags[i * t..(i + 1) * t]);
            assert!(
                matches!(e, Err(Error::Integrity { .. })),
                "{alg} flipped segment {i}: {e:?}"
            );
            assert!(flipped.iter().all(|&x| x == 0), "{alg}: a failed segment is wiped");
        }
        // Segment 1's bytes under segment 0's tag, as segment 0, and as the last segment; a
        // short segment, an index past the end, another row group.
        let fails = |rg: u32, plain_len: usize, index: u32, bytes: &[u8], tag: &[u8]| {
            let mut seg = bytes.to_vec();
            opener
                .open_segment(rg, ChunkKind::Data, plain_len, index, &mut seg, tag)
                .is_err()
        };
        let (a, b) = seg_of(1);
        let (seg1, tag0, tag1) = (&sealed[a..b], &tags[..t], &tags[t..2 * t]);
        assert!(fails(6, n, 1, seg1, tag0), "{alg}: another segment's tag");
        assert!(fails(6, n, 0, seg1, tag1), "{alg}: another index");
        assert!(fails(6, 2 * SEGMENT_LEN, 1, seg1, tag1), "{alg}: as the last segment");
        assert!(fails(6, n, 1, &seg1[..seg1.len() - 1], tag1), "{alg}: a short segment");
        assert!(fails(6, n, 3, seg1, tag1), "{alg}: an index past the end");
        assert!(fails(7, n, 1, seg1, tag1), "{alg}: another row group");
        assert!(!fails(6, n, 1, seg1, tag1), "{alg}: the segment itself opens");
    }
}

/// Large chunks with the real segment length: several segments, and CTR's fused pieces (sealed in
/// pieces, verified in one pass), round trip for every algorithm.
#[test]
fn multi_segment_round_trip() {
    let dek = SecretKey::generate().unwrap();
    let n = 2 * SEGMENT_LEN + SEGMENT_LEN / 2 + 5;
    let plain: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
    for alg in Algorithm::ALL {
        let sealer = ChunkSealer::for_file(default_provider(), alg, &dek, FileId([9; 16]), 1).unwrap();
        let opener = ChunkOpener::new(alg, &dek, FileId([9; 16]), 1).unwrap();
        let mut buf = plain.clone();
        sealer.seal(4, ChunkKind::Data, &mut buf).unwrap();
        assert_eq!(buf.len(), sealed_len(alg, n));
        opener.open(4, ChunkKind::Data, &mut buf).unwrap();
        assert!(buf == plain, "{alg}");
    }
}

/// Any flipped bit of ciphertext or tag fails to open, for every algorithm, and the buffer
/// handed back is wiped.
#[test]
fn every_bit_flip_fails() {
    let dek = SecretKey::generate().unwrap();
    for alg in Algorithm::ALL {
        let opener = ChunkOpener::new(alg, &dek, FileId([1; 16]), 0).unwrap();
        let sealer = ChunkSealer::for_file(default_provider(), alg, &dek, FileId([1; 16]), 0).unwrap();
        let mut sealed = b"0123456789abcdefghij-some column bytes".to_vec();
        sealer.seal(0, ChunkKind::Data, &mut sealed).unwrap();
        for bit in 0..sealed.len() * 8 {
            let mut c = sealed.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            let err = opener.open(0, ChunkKind::Data, &mut c).unwrap_err();
            assert!(matches!(err, Error::Integrity { .. }), "{alg} bit {bit}: {err}");
            assert!(
                c.is_empty(),
                "{alg}: the buffer is wiped and emptied after a failed open"
            );
        }
        // Truncation and extension.
        for cut in 0..sealed.len() {
            let mut c = sealed[..cut].to_vec();
            assert!(opener.open(0, ChunkKind::Data, &mut c).is_err(), "{alg} cut {cut}");
        }
        let mut c = sealed.clone();
        c.push(0);
        assert!(opener.open(0, ChunkKind::Data, &mut c).is_err());
        let mut c = sealed.clone();
        opener.open(0, ChunkKind::Data, &mut c).unwrap();
    }
}

/// A chunk cannot be moved to another position, kind, column or file, nor opened with another
/// algorithm or DEK.
#[test]
fn binding() {
    let dek = SecretKey::generate().unwrap();
    let other = SecretKey::generate().unwrap();
    for alg in Algorithm::ALL {
        let sealer = ChunkSealer::for_file(default_provider(), alg, &dek, FileId([1; 16]), 4).unwrap();
        let mut sealed = vec![42u8; 100];
        sealer.seal(3, ChunkKind::Data, &mut sealed).unwrap();
        let same = ChunkOpener::new(alg, &dek, FileId([1; 16]), 4).unwrap();
        let mut c = sealed.clone();
        same.open(3, ChunkKind::Data, &mut c).unwrap();
        let try_open = |o: &ChunkOpener, rg, kind| {
            let mut c = sealed.clone();
            o.open(rg, kind, &mut c).is_err()
        };
        assert!(try_open(&same, 2, ChunkKind::Data), "{alg}: other row group");
        assert!(try_open(&same, 3, ChunkKind::Metadata), "{alg}: other kind");
        for o in [
            ChunkOpener::new(alg, &dek, FileId([1; 16]), 5).unwrap(),
            ChunkOpener::new(alg, &dek, FileId([2; 16]), 4).unwrap(),
        ] {
            assert!(try_open(&o, 3, ChunkKind::Data), "{alg}: other column or file");
        }
        if alg.is_encrypted() {
            let o = ChunkOpener::new(alg, &other, FileId([1; 16]), 4).unwrap();
            assert!(try_open(&o, 3, ChunkKind::Data), "{alg}: other key");
        }
        for other_alg in Algorithm::ALL.into_iter().filter(|a| *a != alg) {
            let o = ChunkOpener::new(other_alg, &dek, FileId([1; 16]), 4).unwrap();
            assert!(try_open(&o, 3, ChunkKind::Data), "{alg} opened as {other_alg}");
        }
    }
}

#[test]
fn segments_cannot_be_reordered_or_dropped() {
    let dek = SecretKey::generate().unwrap();
    for alg in Algorithm::ALL {
        let k = keys(alg, &dek, 64);
        let mut data = vec![9u8; 64 * 3];
        let tags = k.seal(0, ChunkKind::Data, &mut data, false).unwrap();
        let t = alg.tag_len();
        // Swap segments 0 and 1 together with their tags.
        let mut swapped = data.clone();
        swapped[..64].copy_from_slice(&data[64..128]);
        swapped[64..128].copy_from_slice(&data[..64]);
        let mut swapped_tags = tags.clone();
        swapped_tags[..t].copy_from_slice(&tags[t..2 * t]);
        swapped_tags[t..2 * t].copy_from_slice(&tags[..t]);
        assert!(
            k.open(0, ChunkKind::Data, &mut swapped, &swapped_tags, false).is_err(),
            "{alg} reorder"
        );
        // Drop the last segment: the new last one was not sealed as last.
        let mut short = data[..128].to_vec();
        assert!(
            k.open(0, ChunkKind::Data, &mut short, &tags[..2 * t], false).is_err(),
            "{alg} drop"
        );
    }
}

#[test]
fn sealing_a_position_twice_is_refused() {
    let dek = SecretKey::generate().unwrap();
    let s = ChunkSealer::for_file(default_provider(), Algorithm::Aes256Gcm, &dek, FileId([1; 16]), 0).unwrap();
    s.seal(0, ChunkKind::Data, &mut vec![1, 2, 3]).unwrap();
    s.seal(0, ChunkKind::Metadata, &mut vec![1, 2, 3]).unwrap();
    s.seal(1, ChunkKind::Data, &mut vec![1, 2, 3]).unwrap();
    let err = s.seal(0, ChunkKind::Data, &mut vec![1, 2, 3]).unwrap_err();
    assert!(matches!(err, Error::NonceReuse { .. }), "{err}");
}

/// Two sealers given the same data key and column draw different file ids, so the same
/// plaintext at the same position seals to different bytes under different keys: no
/// (key, nonce) pair is shared. (Before, the caller chose the file id and could repeat it.)
#[test]
fn sealers_with_one_dek_never_share_a_nonce() {
    let dek = SecretKey::generate().unwrap();
    for alg in [Algorithm::Aes256Gcm, Algorithm::Aes256Ctr, Algorithm::Rc4] {
        let a = ChunkSealer::new(alg, &dek, 0).unwrap();
        let b = ChunkSealer::new(alg, &dek, 0).unwrap();
        assert_ne!(a.file_id(), b.file_id(), "{alg}");
        let (mut x, mut y) = (vec![0u8; 64], vec![0u8; 64]);
        a.seal(0, ChunkKind::Data, &mut x).unwrap();
        b.seal(0, ChunkKind::Data, &mut y).unwrap();
        assert_ne!(x, y, "{alg}: two sealers produced the same ciphertext");
        let opener = ChunkOpener::new(alg, &dek, b.file_id(), 0).unwrap();
        assert!(opener.open(0, ChunkKind::Data, &mut x).is_err(), "{alg}");
        opener.open(0, ChunkKind::Data, &mut y).unwrap();
        assert_eq!(y, vec![0u8; 64]);
    }
}

/// A provider whose GCM fails after a few uses: the sealer is poisoned for good.
#[derive(Debug)]
struct Flaky;
struct FlakyGcm(Box<dyn GcmKey>, std::sync::atomic::AtomicUsize);
impl GcmKey for FlakyGcm {
    fn seal_in_place(&self, n: &[u8; 12], a: &[u8], d: &mut [u8]) -> Result<[u8; 16]> {
        if self.1.fetch_add(1, Ordering::SeqCst) >= 1 {
            return Err(Error::Crypto("injected failure"));
        }
        self.0.seal_in_place(n, a, d)
    }
    fn open_in_place(&self, n: &[u8; 12], a: &[u8], d: &mut [u8], t: &[u8; 16]) -> Result<()> {
        self.0.open_in_place(n, a, d, t)
    }
}
impl CipherProvider for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn aes256_gcm(&self, key: &SecretKey) -> Result<Box<dyn GcmKey>> {
        Ok(Box::new(FlakyGcm(default_provider().aes256_gcm(key)?, 0.into())))
    }
    fn aes256_ctr(&self, key: &SecretKey) -> Result<Box<dyn CtrKey>> {
        default_provider().aes256_ctr(key)
    }
}

#[test]
fn a_failed_sealer_is_poisoned() {
    let dek = SecretKey::generate().unwrap();
    let s = ChunkSealer::for_file(&Flaky, Algorithm::Aes256Gcm, &dek, FileId([1; 16]), 0).unwrap();
    s.seal(0, ChunkKind::Data, &mut vec![1, 2, 3]).unwrap();
    let mut buf = vec![5u8; 10];
    assert!(matches!(s.seal(1, ChunkKind::Data, &mut buf), Err(Error::Crypto(_))));
    assert!(buf.iter().all(|&b| b == 0), "half-sealed data is wiped");
    assert!(s.is_poisoned());
    assert!(matches!(s.seal(2, ChunkKind::Data, &mut vec![1]), Err(Error::Poisoned)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Parallel segments give byte-identical output to the one-thread path, for every algorithm,
    /// sizes including 0 and odd lengths, and segment lengths that are not powers of two.
    #[test]
    fn parallel_equals_sequential(n in prop_oneof![Just(0usize), 0usize..5000, 5000usize..70_000], seg_blocks in 1usize..40, alg_id in 0u8..4) {
        let alg = Algorithm::from_id(alg_id).unwrap();
        let dek = SecretKey::generate().unwrap();
        let k = keys(alg, &dek, seg_blocks * 16);
        let plain: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let mut a = plain.clone();
        let mut b = plain.clone();
        let ta = k.seal(1, ChunkKind::Data, &mut a, false).unwrap();
        let tb = k.seal(1, ChunkKind::Data, &mut b, true).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&ta, &tb);
        k.open(1, ChunkKind::Data, &mut b, &tb, true).unwrap();
        prop_assert_eq!(&b, &plain);
        k.open(1, ChunkKind::Data, &mut a, &ta, false).unwrap();
        prop_assert_eq!(&a, &plain);
    }

    /// CTR slices on rayon equal one keystream call over the whole buffer.
    #[test]
    fn ctr_slices_equal_one_stream(n in 0usize..100_000, slice_blocks in 1usize..300, hi in any::<u64>(), lo in any::<u64>()) {
        let key = default_provider().aes256_ctr(&SecretKey::generate().unwrap()).unwrap();
        let mut counter = [0u8; 16];
        counter[..8].copy_from_slice(&hi.to_be_bytes());
        counter[8..].copy_from_slice(&lo.to_be_bytes());
        let mut a = vec![0u8; n];
        let mut b = vec![0u8; n];
        key.apply_keystream(&counter, &mut a).unwrap();
        ctr_apply_parallel(&*key, &counter, &mut b, slice_blocks * 16).unwrap();
        prop_assert_eq!(a, b);
    }
}
