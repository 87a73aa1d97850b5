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

/// AES-256-SIV (RFC 5297 with a 512-bit key: a 256-bit CMAC key and a 256-bit CTR key), the
/// construction every CMK and KEK wrap uses, through the wrap functions production calls. Vectors
/// from Project Wycheproof, `testvectors/aes_siv_cmac_test.json`, the `"keySize" : 512` group
/// (tcId noted on each); Wycheproof's `aad` is one associated-data header and its `ct` is the
/// 16-byte synthetic IV followed by the ciphertext.
#[test]
fn wycheproof_aes_siv_cmac_512() {
    use colvault::kms::wrap::{siv_unwrap, siv_wrap};
    struct V {
        tc: u32,
        key: [u8; 64],
        aad: &'static [u8],
        msg: &'static [u8],
        ct: &'static [u8],
    }
    let valid = [
        V {
            tc: 305,
            key: hex!("e2c5662bb18fbb411d0304e4241db073fe60a4704fee290073513038a22b4cd542580b2b4edbc37e3de01c0cb61abcad46986cdc491ce9e5ae5af223ff58b953"),
            aad: &hex!("fab912dec29a34aabfaef176"),
            msg: &hex!("0d"),
            ct: &hex!("1c6969ecb15741a9959b7a8492250e391a"),
        },
        V {
            tc: 309,
            key: hex!("673cea582bf3982ce3fba5304de8fe46e316d6804749d6db58b7ab7d64bd4e0af641997975234f8b918cca3247d67cfeac9230d15ed28f8071a85e84fa9ef211"),
            aad: &hex!("f5042d5a5b68b262274974a8"),
            msg: &hex!("9e99912c7b"),
            ct: &hex!("655ef7f09f4cff47b427e9df7fcc642664715ad14c"),
        },
        V {
            tc: 320,
            key: hex!("139383f3f82dc78e0b380027f9e5fcd2ed23716404be5c554452e4dc73d237026594491820c6b8297185cc1fa84f49a5c7d7cd05c5de090ff1c3397bc2740437"),
            aad: &hex!("d39da73ffc03ad0a9213ffc7"),
            msg: &hex!("48604944a80fadf50d55b87727934458c8"),
            ct: &hex!("a9cf73951cb39823777f35c96c845169476e2ec2317cb6b8dd8b6172fdceabff9d"),
        },
        V {
            tc: 323,
            key: hex!("cd8689f821817f59bfaa755131f2565161c7f4489f89b657ac9fa127a9768535a702d001b9b99cc11c3976467b1b45865ff417dc256ebb5079b7f1b3e08307b5"),
            aad: &hex!("b3edffbb89b373fe04da244b"),
            msg: &hex!("ebcfb2ffb681cc5dfa0c5c524c1b1cc87cc6b2bfa35dc36d15e80505118b84a072a78a157b4d1837"),
            ct: &hex!("1ac78aae2ede04eb47924d8f9f99fe75deb61bf693da7f3a2147c05f6d29d17392356fe00f82b24cdbce774fd864561548f33dd3192d806f"),
        },
        V {
            // "edge case SIV": the counter's cleared bits matter.
            tc: 326,
            key: hex!("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"),
            aad: &hex!("000102030405060708090a0b0c0d0e0f"),
            msg: &hex!("bfa1733d07afa03cb3f2eeb81bbde037"),
            ct: &hex!("000000000000000000000000000000004ce637d6ca9cdf1c2feb0d140865cddb"),
        },
        V {
            tc: 334,
            key: hex!("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"),
            aad: &hex!("000102030405060708090a0b0c0d0e0f"),
            msg: &hex!("23525ec6dfb28c323340d09538b4b015"),
            ct: &hex!("fffffffffffffffffffffffffffffffe1d9a0bf851a0dca6bd0b74fecebf654a"),
        },
    ];
    for v in &valid {
        let sealed = siv_wrap(&v.key, &[v.aad], v.msg).unwrap();
        assert_eq!(sealed, v.ct, "tcId {}", v.tc);
        let opened = siv_unwrap(&v.key, &[v.aad], v.ct, "kat").unwrap();
        assert_eq!(&opened[..], v.msg, "tcId {}", v.tc);
        // Every flipped bit of the tag or ciphertext is refused with a typed error.
        for bit in 0..v.ct.len() * 8 {
            let mut bad = v.ct.to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(
                    siv_unwrap(&v.key, &[v.aad], &bad, "kat"),
                    Err(colvault::Error::Integrity { .. })
                ),
                "tcId {} bit {bit}",
                v.tc
            );
        }
    }
}
