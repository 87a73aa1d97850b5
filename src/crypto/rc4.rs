//! RC4 with the first 3072 keystream bytes dropped (RC4-drop[3072]).
//!
//! RC4 has known keystream biases, strongest in the first bytes (RFC 7465 prohibits it in TLS; Mironov
//! 2002 recommends dropping at least the first 3072 bytes). colvault keeps it only for legacy data:
//! readable always, written only with an explicit opt-in; every chunk gets its own HKDF-derived key and
//! a keyed-BLAKE3 MAC (encrypt-then-MAC), so it is authenticated like the other algorithms.

use rc4::{KeyInit, Rc4, StreamCipher};

use super::keys::SecretKey;
use crate::error::{Error, Result};

/// Keystream bytes dropped before use.
pub const DROP: usize = 3072;

/// XORs the RC4-drop[3072] keystream of `key` into `buf`.
pub fn apply_keystream(key: &SecretKey, buf: &mut [u8]) -> Result<()> {
    apply_keystream_raw(key.expose(), DROP, buf)
}

/// XORs the RC4 keystream of `key`, after dropping `drop` bytes, into `buf`.
pub(crate) fn apply_keystream_raw(key: &[u8], drop: usize, buf: &mut [u8]) -> Result<()> {
    let mut c = Rc4::new_from_slice(key).map_err(|_| Error::Crypto("RC4 key length"))?;
    let mut skip = [0u8; 256];
    let mut left = drop;
    while left > 0 {
        let n = left.min(skip.len());
        c.apply_keystream(&mut skip[..n]);
        left -= n;
    }
    c.apply_keystream(buf);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    /// RFC 6229 section 2, key 0x0102030405 (40 bits): offsets 0 and 16, and 3072 and 4096 (the
    /// latter two read through the drop-3072 path colvault uses).
    #[test]
    fn rfc6229_key_0102030405() {
        let key = hex!("0102030405");
        let mut at0 = [0u8; 32];
        apply_keystream_raw(&key, 0, &mut at0).unwrap();
        assert_eq!(at0[..16], hex!("b2396305f03dc027ccc3524a0a1118a8"));
        assert_eq!(at0[16..], hex!("6982944f18fc82d589c403a47a0d0919"));
        let mut at3072 = [0u8; 1040];
        apply_keystream_raw(&key, DROP, &mut at3072).unwrap();
        assert_eq!(at3072[..16], hex!("ec0e11c479dc329dc8da7968fe965681"));
        assert_eq!(at3072[1024..], hex!("ff25b58995996707e51fbdf08b34d875"));
    }
}
