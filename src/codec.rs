//! A small, explicit binary codec: big-endian integers and length-prefixed byte strings with bounds.
//!
//! Every structure colvault writes (wrapped keys, envelopes, footers, manifests, keystores) is encoded
//! with it, so its bytes are defined by `format-spec/` and not by any crate's version. Decoding never
//! allocates more than the input holds: every length is checked against both a per-field bound and
//! the bytes remaining before anything is allocated.

use crate::error::{Error, Result};

/// Lowercase hexadecimal of `bytes` (ids, digests and tags in names and messages; never key material).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends fields to a byte vector.
#[derive(Default, Debug)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Raw bytes of a length both sides know.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// A byte string prefixed by its length as u32.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).expect("a field longer than 4 GiB is never encoded");
        self.u32(len).raw(v)
    }
    /// A UTF-8 string prefixed by its length as u32.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    /// The encoded bytes so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields from a byte slice, with bounds.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Decoder<'a> {
    /// A decoder over `buf`; `what` names the structure in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Decoder { buf, pos: 0, what }
    }
    fn err(&self, detail: impl Into<String>) -> Error {
        Error::malformed(self.what, detail)
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// The next `n` bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "needs {n} bytes at offset {}, only {} remain",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    /// Big-endian u16.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    /// Big-endian u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    /// Big-endian u64.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// A u32-length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.err(format!("a field of {len} bytes exceeds its bound of {max}")));
        }
        self.raw(len)
    }
    /// A u32-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: usize) -> Result<&'a str> {
        let b = self.bytes(max)?;
        std::str::from_utf8(b).map_err(|_| self.err("a string is not valid UTF-8"))
    }
    /// A count of items that each take at least `min_item_len` bytes, checked against `max` and
    /// against what the remaining input could hold, so a forged count cannot cause a large allocation.
    pub fn count(&mut self, max: usize, min_item_len: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(self.err(format!("a count of {n} exceeds its bound of {max}")));
        }
        if n.saturating_mul(min_item_len.max(1)) > self.remaining() {
            return Err(self.err(format!(
                "a count of {n} items cannot fit in the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }
    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.err(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut e = Encoder::new();
        e.u8(1).u16(2).u32(3).u64(4).bytes(b"abc").str("zé").raw(&[9, 9]);
        let buf = e.finish();
        let mut d = Decoder::new(&buf, "test");
        assert_eq!(d.u8().unwrap(), 1);
        assert_eq!(d.u16().unwrap(), 2);
        assert_eq!(d.u32().unwrap(), 3);
        assert_eq!(d.u64().unwrap(), 4);
        assert_eq!(d.bytes(3).unwrap(), b"abc");
        assert_eq!(d.str(10).unwrap(), "zé");
        assert_eq!(d.array::<2>().unwrap(), [9, 9]);
        d.finish().unwrap();

        // A length over its bound, a length past the end, a count that cannot fit, trailing bytes.
        let mut e = Encoder::new();
        e.bytes(b"abcd");
        let buf = e.finish();
        assert!(Decoder::new(&buf, "t").bytes(3).is_err());
        assert!(Decoder::new(&[0, 0, 0, 9, 1], "t").bytes(100).is_err());
        assert!(Decoder::new(&[0xff, 0xff, 0xff, 0xff], "t")
            .count(usize::MAX, 1)
            .is_err());
        let d = Decoder::new(&[1], "t");
        assert!(d.finish().is_err());
    }
}
