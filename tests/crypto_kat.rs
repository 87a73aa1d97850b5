//! Known-answer tests that pin the primitives behind colvault's constructions to their published
//! vectors. (RFC 5869 HKDF is pinned in `src/crypto/kdf.rs`, RFC 6229 RC4 in `src/crypto/rc4.rs`, and
//! RFC 5297 AES-SIV in `src/kms/wrap.rs`, where the crate-private functions live.) Every AES test
//! runs against every cipher provider colvault ships.

use colvault::crypto::{providers, SecretKey};
use hex_literal::hex;

/// NIST SP 800-38A, F.5.5 CTR-AES256.Encrypt. The counter block f0f1...feff carries across a byte
/// boundary after the first block, which checks the 128-bit big-endian increment.
#[test]
fn sp800_38a_f55_ctr_aes256() {
    let key = SecretKey::from_slice(&hex!(
        "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
    ))
    .unwrap();
    let counter = hex!("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
    let plain = hex!(
        "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
         30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710"
    );
    let cipher = hex!(
        "601ec313775789a5b7a7f504bbf3d228 f443e3ca4d62b59aca84e990cacaf5c5
         2b0930daa23de94ce87017ba2d84988d dfc9c58db67aada613c2dd08457941a6"
    );
    for p in providers() {
        let ctr = p.aes256_ctr(&key).unwrap();
        let mut buf = plain;
        ctr.apply_keystream(&counter, &mut buf).unwrap();
        assert_eq!(buf, cipher, "{}", p.name());
        // The parallel slicing used for large buffers gives the same bytes (one block per slice).
        let mut buf = plain;
        colvault::crypto::ctr_apply_parallel(&*ctr, &counter, &mut buf, 16).unwrap();
        assert_eq!(buf, cipher, "{}", p.name());
    }
}

/// The GCM specification's test case 16 (AES-256, 96-bit IV, with AAD), as used in NIST's GCM
/// validation vectors (McGrew and Viega, "The Galois/Counter Mode of Operation", appendix B).
#[test]
fn gcm_aes256_test_case_16() {
    let key = SecretKey::from_slice(&hex!(
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
    ))
    .unwrap();
    let iv = hex!("cafebabefacedbaddecaf888");
    let aad = hex!("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let plain = hex!(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
    );
    let cipher = hex!(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
    );
    let tag = hex!("76fc6ece0f4e1768cddf8853bb2d551b");
    for p in providers() {
        let gcm = p.aes256_gcm(&key).unwrap();
        let mut buf = plain;
        assert_eq!(gcm.seal_in_place(&iv, &aad, &mut buf).unwrap(), tag, "{}", p.name());
        assert_eq!(buf, cipher, "{}", p.name());
        gcm.open_in_place(&iv, &aad, &mut buf, &tag).unwrap();
        assert_eq!(buf, plain, "{}", p.name());
        let mut bad = tag;
        bad[15] ^= 1;
        let mut buf = cipher;
        assert!(gcm.open_in_place(&iv, &aad, &mut buf, &bad).is_err(), "{}", p.name());
    }
}

/// GCM test cases 13 and 14 (AES-256, zero key and IV): empty plaintext, and one zero block.
#[test]
fn gcm_aes256_test_cases_13_14() {
    let key = SecretKey::from_slice(&[0u8; 32]).unwrap();
    for p in providers() {
        let gcm = p.aes256_gcm(&key).unwrap();
        let iv = [0u8; 12];
        assert_eq!(
            gcm.seal_in_place(&iv, &[], &mut []).unwrap(),
            hex!("530f8afbc74536b9a963b4f1c4cb738b"),
            "{}",
            p.name()
        );
        let mut block = [0u8; 16];
        assert_eq!(
            gcm.seal_in_place(&iv, &[], &mut block).unwrap(),
            hex!("d0d1c8a799996bf0265b98b5d48ab919"),
            "{}",
            p.name()
        );
        assert_eq!(block, hex!("cea7403d4d606b6e074ec5d3baf39d18"), "{}", p.name());
    }
}

/// The providers agree byte for byte beyond the published vectors: long and odd lengths (which
/// take the wide vector paths and their tails), CTR counters that wrap all 128 bits, and GCM
/// output that each provider opens from the other.
#[test]
fn providers_agree() {
    let [a, b] = providers();
    let key = SecretKey::generate().unwrap();
    let lens = [0usize, 1, 15, 16, 17, 255, 256, 257, 4095, 65_536 + 7, (1 << 20) + 33];
    let counters = [
        [0u8; 16],
        [0xff; 16],
        hex!("0000000000000000fffffffffffffff0"),
        hex!("fffffffffffffffffffffffffffffffe"),
    ];
    for &len in &lens {
        let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        for counter in counters {
            let (mut x, mut y) = (plain.clone(), plain.clone());
            a.aes256_ctr(&key).unwrap().apply_keystream(&counter, &mut x).unwrap();
            b.aes256_ctr(&key).unwrap().apply_keystream(&counter, &mut y).unwrap();
            assert_eq!(x, y, "CTR, {len} bytes from counter {counter:02x?}");
            assert!(len < 16 || x != plain, "CTR changed nothing");
        }
        let nonce = [len as u8; 12];
        let (ga, gb) = (a.aes256_gcm(&key).unwrap(), b.aes256_gcm(&key).unwrap());
        let (mut x, mut y) = (plain.clone(), plain.clone());
        let ta = ga.seal_in_place(&nonce, b"aad", &mut x).unwrap();
        let tb = gb.seal_in_place(&nonce, b"aad", &mut y).unwrap();
        assert_eq!((&x, ta), (&y, tb), "GCM, {len} bytes");
        let sealed = x.clone();
        gb.open_in_place(&nonce, b"aad", &mut x, &ta).unwrap();
        ga.open_in_place(&nonce, b"aad", &mut y, &tb).unwrap();
        assert_eq!((&x, &y), (&plain, &plain), "GCM open, {len} bytes");
        let mut bad = ta;
        bad[0] ^= 0x80;
        assert!(gb.open_in_place(&nonce, b"aad", &mut sealed.clone(), &bad).is_err());
        assert!(ga.open_in_place(&nonce, b"aad", &mut sealed.clone(), &bad).is_err());
    }
}
