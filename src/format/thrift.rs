//! A bounds check of Thrift compact-protocol bytes (Parquet's `FileMetaData` and page headers)
//! before the `parquet` crate decodes them.
//!
//! The `parquet` crate sizes some vectors from the element count a Thrift list declares (the row
//! groups of `FileMetaData`, for one) before reading the elements, so a few bytes can ask for a
//! terabyte, and an allocation that large aborts the process instead of failing. The walker here
//! reads the same bytes without allocating, and refuses any list, set or map that declares more
//! elements than bytes remain (every element takes at least one byte), any length beyond the
//! input, and nesting deeper than [`MAX_DEPTH`]. Whatever it accepts, the decoder can only size
//! its vectors from counts bounded by the input's length.

use crate::error::{Error, Result};

/// Deepest nesting of structs, lists and maps accepted (Parquet's metadata nests about 6 deep).
pub const MAX_DEPTH: usize = 64;

const T_STOP: u8 = 0;
const T_TRUE: u8 = 1;
const T_FALSE: u8 = 2;
const T_BYTE: u8 = 3;
const T_I16: u8 = 4;
const T_I32: u8 = 5;
const T_I64: u8 = 6;
const T_DOUBLE: u8 = 7;
const T_BINARY: u8 = 8;
const T_LIST: u8 = 9;
const T_SET: u8 = 10;
const T_MAP: u8 = 11;
const T_STRUCT: u8 = 12;
const T_UUID: u8 = 13;

/// A cursor over compact-protocol bytes.
pub(crate) struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Walker { buf, pos: 0, what }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    fn err(&self, detail: impl Into<String>) -> Error {
        Error::malformed(self.what, format!("{} (at byte {})", detail.into(), self.pos))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.err("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        if n > self.remaining() as u64 {
            return Err(self.err(format!("a length of {n} bytes runs past the end")));
        }
        self.pos += n as usize;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("a varint longer than 10 bytes"))
    }

    fn zigzag(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn count(&mut self, n: u64) -> Result<u64> {
        if n > self.remaining() as u64 {
            return Err(self.err(format!(
                "a collection of {n} elements in {} remaining bytes",
                self.remaining()
            )));
        }
        Ok(n)
    }

    /// Skips one value of compact type `ty` (inside a collection, booleans take a byte).
    fn value(&mut self, ty: u8, depth: usize, in_collection: bool) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH}")));
        }
        match ty {
            T_TRUE | T_FALSE if !in_collection => Ok(()),
            T_TRUE | T_FALSE | T_BYTE => self.skip(1),
            T_I16 | T_I32 | T_I64 => self.varint().map(drop),
            T_DOUBLE => self.skip(8),
            T_UUID => self.skip(16),
            T_BINARY => {
                let n = self.varint()?;
                self.skip(n)
            }
            T_LIST | T_SET => {
                let header = self.byte()?;
                let elem = header & 0x0f;
                let n = match header >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                let n = self.count(n)?;
                for _ in 0..n {
                    self.value(elem, depth + 1, true)?;
                }
                Ok(())
            }
            T_MAP => {
                let n = self.varint()?;
                let n = self.count(n)?;
                if n == 0 {
                    return Ok(());
                }
                let kv = self.byte()?;
                for _ in 0..n {
                    self.value(kv >> 4, depth + 1, true)?;
                    self.value(kv & 0x0f, depth + 1, true)?;
                }
                Ok(())
            }
            T_STRUCT => self.fields(depth + 1, |_, _, _| Ok(false)),
            t => Err(self.err(format!("unknown compact type {t}"))),
        }
    }

    /// Walks the fields of a struct up to its stop byte. `visit(id, type, walker)` may consume a
    /// field itself (returning true); otherwise it is skipped.
    pub(crate) fn fields(
        &mut self,
        depth: usize,
        mut visit: impl FnMut(i16, u8, &mut Walker<'a>) -> Result<bool>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH}")));
        }
        let mut last: i16 = 0;
        loop {
            let header = self.byte()?;
            let ty = header & 0x0f;
            if ty == T_STOP {
                return Ok(());
            }
            let id = match header >> 4 {
                0 => i16::try_from(self.zigzag()?).map_err(|_| self.err("a field id out of range"))?,
                delta => last.wrapping_add(i16::from(delta)),
            };
            last = id;
            if !visit(id, ty, self)? {
                self.value(ty, depth, false)?;
            }
        }
    }

    /// Reads an i32 field value.
    pub(crate) fn i32(&mut self, ty: u8) -> Result<i32> {
        if ty != T_I32 {
            return Err(self.err(format!("an i32 field of compact type {ty}")));
        }
        i32::try_from(self.zigzag()?).map_err(|_| self.err("an i32 out of range"))
    }

    /// Walks a nested struct field, visiting its fields.
    pub(crate) fn nested(
        &mut self,
        ty: u8,
        depth: usize,
        visit: impl FnMut(i16, u8, &mut Walker<'a>) -> Result<bool>,
    ) -> Result<()> {
        if ty != T_STRUCT {
            return Err(self.err(format!("a struct field of compact type {ty}")));
        }
        self.fields(depth + 1, visit)
    }
}

/// Checks a Thrift-encoded Parquet `FileMetaData` (see the module documentation).
pub fn check_file_metadata(buf: &[u8]) -> Result<()> {
    Walker::new(buf, "parquet metadata").fields(0, |_, _, _| Ok(false))
}

/// What a Parquet page header declares, as far as memory goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageSizes {
    /// Length of the header itself.
    pub header_len: usize,
    /// `compressed_page_size`: the bytes after the header.
    pub compressed: i32,
    /// `uncompressed_page_size`: what decompression makes of them.
    pub uncompressed: i32,
    /// `num_values` of a data page (v1 or v2), or of a dictionary page; 0 if absent.
    pub num_values: i32,
}

/// Reads the sizes a Parquet `PageHeader` at the start of `buf` declares (checking the whole
/// header as [`check_file_metadata`] does).
pub fn page_sizes(buf: &[u8]) -> Result<PageSizes> {
    let mut w = Walker::new(buf, "parquet page header");
    let mut s = PageSizes::default();
    w.fields(0, |id, ty, w| {
        match id {
            2 => s.uncompressed = w.i32(ty)?,
            3 => s.compressed = w.i32(ty)?,
            // data_page_header, dictionary_page_header, data_page_header_v2: num_values is field 1.
            5 | 7 | 8 => w.nested(ty, 0, |id, ty, w| {
                if id == 1 {
                    s.num_values = w.i32(ty)?;
                    return Ok(true);
                }
                Ok(false)
            })?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    s.header_len = w.position();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_list_longer_than_its_input() {
        // struct { 4: list<struct> of 2^31-1 elements } then stop.
        let mut b = vec![0x49, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07];
        b.push(0);
        assert!(matches!(check_file_metadata(&b), Err(Error::Malformed { .. })));
        // The same list with 1 element (an empty struct) is fine.
        assert!(check_file_metadata(&[0x49, 0x1c, 0x00, 0x00]).is_ok());
    }

    #[test]
    fn refuses_deep_nesting_and_truncation() {
        let mut b = vec![0x1c; 100];
        b.extend(vec![0; 100]);
        assert!(check_file_metadata(&b).is_err());
        assert!(check_file_metadata(&[0x15]).is_err());
        assert!(check_file_metadata(&[]).is_err());
    }
}
