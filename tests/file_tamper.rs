//! Tampering: every single-bit flip of a small file, every truncation, and chunks moved between
//! files or positions must make a full read fail with a typed error, for every algorithm (`none`
//! included: its checksums must catch accidental corruption). Never a panic, never data.

mod common;
#[path = "common/data.rs"]
mod data;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use colvault::format::TRAILER_LEN;
use colvault::{Algorithm, Compression, Error, FileReader};
use common::Fixture;
use data::{options, reader_options, reader_options_as_claimed, write_file};

/// The errors a damaged file may give: integrity and format errors, and key errors where the damage
/// lands in a key reference (a key id that does not exist, is not allowed, or is not granted).
fn acceptable(e: &Error) -> bool {
    matches!(
        e,
        Error::Integrity { .. }
            | Error::Malformed { .. }
            | Error::NotColvault(_)
            | Error::UnsupportedVersion { .. }
            | Error::UnknownAlgorithmId { .. }
            | Error::KeyNotAllowed { .. }
            | Error::UnknownKey { .. }
            | Error::AccessDenied { .. }
            | Error::AlgorithmMismatch { .. }
    )
}

/// What a full read of a damaged file did.
enum Outcome {
    /// A typed error from the acceptable list.
    Refused,
    /// Some other error.
    WrongError(String),
    /// Ok, with this many rows.
    Data(usize),
    /// A panic, with its message.
    Panic(String),
}

fn full_read(fx: &Fixture, file: Vec<u8>) -> Outcome {
    let opts = reader_options_as_claimed(fx, &file);
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<usize, Error> {
        let r = FileReader::open(file, opts)?;
        let batches = r.scan().build()?.read_all()?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }));
    match r {
        Ok(Ok(rows)) => Outcome::Data(rows),
        Ok(Err(e)) if acceptable(&e) => Outcome::Refused,
        Ok(Err(e)) => Outcome::WrongError(format!("{e:?}")),
        Err(p) => Outcome::Panic(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

/// Six rows in two columns.
fn small_batch() -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3, 40, 50, 60])),
            Arc::new(StringArray::from(vec![
                Some("ab"),
                None,
                Some("cd"),
                Some("ef"),
                Some("g"),
                None,
            ])),
        ],
    )
    .unwrap()
}

/// A small file: two columns, two row groups of three rows.
fn small_file(fx: &Fixture, alg: Algorithm) -> Vec<u8> {
    let b = small_batch();
    write_file(b.schema(), &[b], options(fx, alg).max_row_group_rows(3).build()).unwrap()
}

/// The same with the column "name" under a key of its own (a second key entry).
fn small_file_with_column_key(fx: &Fixture, alg: Algorithm) -> Vec<u8> {
    let b = small_batch();
    let opts = options(fx, alg)
        .max_row_group_rows(3)
        .column_key("name", fx.new_key())
        .build();
    write_file(b.schema(), &[b], opts).unwrap()
}

/// Names the part of the file at `offset`, for failure messages.
fn region(fx: &Fixture, file: &[u8], offset: usize) -> String {
    let len = file.len();
    let t = &file[len - TRAILER_LEN..];
    let env_len = u32::from_be_bytes(t[0..4].try_into().unwrap()) as usize;
    let body_len = u32::from_be_bytes(t[4..8].try_into().unwrap()) as usize;
    let env_start = len - TRAILER_LEN - body_len - env_len;
    if offset < 4 {
        return "leading magic".into();
    }
    if offset >= len - TRAILER_LEN {
        return format!("trailer byte {}", offset - (len - TRAILER_LEN));
    }
    if offset >= env_start + env_len {
        return format!("sealed footer body byte {}", offset - env_start - env_len);
    }
    if offset >= env_start {
        return envelope_field(&file[env_start..env_start + env_len], offset - env_start);
    }
    let r = FileReader::open(file.to_vec(), reader_options_as_claimed(fx, file)).unwrap();
    let mut at = 4usize;
    for rg in 0..r.num_row_groups() {
        for (leaf, l) in r.chunk_lengths(rg).into_iter().enumerate() {
            if offset < at + l as usize {
                return format!("chunk rg {rg} leaf {leaf} byte {}", offset - at);
            }
            at += l as usize;
        }
    }
    "outside every part".into()
}

/// Names the envelope field at `at` (layout of `format::Envelope::encode`, and of a wrapped key
/// inside a key entry: magic, format version, KMS name, key id, ...).
fn envelope_field(env: &[u8], at: usize) -> String {
    let u32_at = |o: usize| u32::from_be_bytes(env[o..o + 4].try_into().unwrap()) as usize;
    let mut fields: Vec<(String, usize)> = vec![
        ("major version".into(), 1),
        ("minor version".into(), 1),
        ("algorithm id".into(), 1),
        ("file id".into(), 16),
        ("flags".into(), 1),
    ];
    let kms_len = u32_at(20);
    fields.push(("KMS name (length and bytes)".into(), 4 + kms_len));
    let mut o = 24 + kms_len;
    let n = u16::from_be_bytes(env[o..o + 2].try_into().unwrap()) as usize;
    fields.push(("key entry count".into(), 2));
    o += 2;
    for i in 0..n {
        fields.push((format!("key entry {i} role and column"), 5));
        o += 5;
        let wlen = u32_at(o);
        fields.push((format!("key entry {i} wrapped key length"), 4));
        o += 4;
        // The wrapped key is a data key envelope: magic and version, the wrapped KEK (length, then
        // magic and version, KMS name, key id, version, nonce, ciphertext), DEK nonce, wrapped DEK.
        let kek_len = u32_at(o + 5);
        let kms = u32_at(o + 9 + 5);
        fields.push((format!("key entry {i} data key envelope: magic and version"), 5));
        fields.push((format!("key entry {i} wrapped KEK length"), 4));
        fields.push((format!("key entry {i} wrapped KEK: magic and version"), 5));
        fields.push((
            format!("key entry {i} wrapped KEK: KMS name (length and bytes)"),
            4 + kms,
        ));
        fields.push((
            format!("key entry {i} wrapped KEK: key id, version, nonce, ciphertext"),
            kek_len - 9 - kms,
        ));
        fields.push((format!("key entry {i} DEK nonce and wrapped DEK"), wlen - 9 - kek_len));
        o += wlen;
        fields.push((format!("key entry {i} commitment"), 32));
        o += 32;
    }
    fields.push(("footer nonce".into(), 12));
    let mut start = 0;
    for (name, len) in fields {
        if at < start + len {
            return format!("envelope byte {at}: {name}, byte {}", at - start);
        }
        start += len;
    }
    format!("envelope byte {at}")
}

/// Flips every bit of a small file in turn; each must make a full read fail with a typed error.
fn every_bit_flip(alg: Algorithm, column_key: bool) {
    let fx = Fixture::new();
    let file = if column_key {
        small_file_with_column_key(&fx, alg)
    } else {
        small_file(&fx, alg)
    };
    assert!(
        file.len() <= 4096,
        "{alg}: the test file should be small, it is {} bytes",
        file.len()
    );
    // The untouched file reads.
    assert!(
        matches!(full_read(&fx, file.clone()), Outcome::Data(6)),
        "{alg}: the intact file must read"
    );

    let mut failures = Vec::new();
    for bit in 0..file.len() * 8 {
        let mut damaged = file.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        let what = match full_read(&fx, damaged) {
            Outcome::Refused => continue,
            Outcome::WrongError(e) => format!("untyped or unexpected error {e}"),
            Outcome::Data(rows) => format!("read succeeded with {rows} rows"),
            Outcome::Panic(m) => format!("PANIC: {m}"),
        };
        failures.push(format!(
            "bit {bit} (byte {}, bit {}; {}): {what}",
            bit / 8,
            bit % 8,
            region(&fx, &file, bit / 8)
        ));
    }
    assert!(
        failures.is_empty(),
        "{alg}: {} of {} single-bit flips of a {}-byte file were not refused with a typed error:\n{}",
        failures.len(),
        file.len() * 8,
        file.len(),
        failures.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn every_bit_flip_none() {
    every_bit_flip(Algorithm::None, false);
}

#[test]
fn every_bit_flip_aes256gcm() {
    every_bit_flip(Algorithm::Aes256Gcm, false);
}

#[test]
fn every_bit_flip_aes256ctr() {
    every_bit_flip(Algorithm::Aes256Ctr, false);
}

#[test]
fn every_bit_flip_rc4() {
    every_bit_flip(Algorithm::Rc4, false);
}

#[test]
fn every_bit_flip_aes256gcm_with_column_key() {
    every_bit_flip(Algorithm::Aes256Gcm, true);
}

/// Every truncation, and a byte appended, make a full read fail with a typed error.
#[test]
fn truncation_at_every_length() {
    for alg in Algorithm::ALL {
        let fx = Fixture::new();
        let file = small_file(&fx, alg);
        let mut failures = Vec::new();
        for n in 0..file.len() {
            let what = match full_read(&fx, file[..n].to_vec()) {
                Outcome::Refused => continue,
                Outcome::WrongError(e) => format!("untyped or unexpected error {e}"),
                Outcome::Data(rows) => format!("read succeeded with {rows} rows"),
                Outcome::Panic(m) => format!("PANIC: {m}"),
            };
            failures.push(format!("truncated to {n} bytes: {what}"));
        }
        for extra in [&[0u8][..], b"CVLT", &file[file.len() - 16..]] {
            let mut longer = file.clone();
            longer.extend_from_slice(extra);
            if !matches!(full_read(&fx, longer), Outcome::Refused) {
                failures.push(format!("{} bytes appended: not refused", extra.len()));
            }
            let mut longer = extra.to_vec();
            longer.extend_from_slice(&file);
            if !matches!(full_read(&fx, longer), Outcome::Refused) {
                failures.push(format!("{} bytes prepended: not refused", extra.len()));
            }
        }
        assert!(
            failures.is_empty(),
            "{alg} ({} bytes):\n{}",
            file.len(),
            failures.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

// ---- chunks moved between files and positions ----

fn two_int_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, false),
    ]))
}

/// Eight rows of two required Int64 columns, plainly encoded and uncompressed so that every chunk
/// of every such file has the same length whatever the values.
fn int_file(fx: &Fixture, alg: Algorithm, base: i64) -> Vec<u8> {
    let a: Vec<i64> = (0..8).map(|i| base + i * 3).collect();
    let b: Vec<i64> = (0..8).map(|i| base * 7 - i).collect();
    let batch = RecordBatch::try_new(
        two_int_schema(),
        vec![Arc::new(Int64Array::from(a)), Arc::new(Int64Array::from(b))],
    )
    .unwrap();
    let opts = options(fx, alg)
        .max_row_group_rows(4)
        .compression(Compression::None)
        .dictionary(false)
        .build();
    write_file(batch.schema(), &[batch], opts).unwrap()
}

/// (offset, length) of every chunk, row group major.
fn chunk_spans(fx: &Fixture, file: &[u8]) -> Vec<(usize, usize)> {
    let r = FileReader::open(file.to_vec(), reader_options_as_claimed(fx, file)).unwrap();
    let mut at = 4usize;
    let mut out = Vec::new();
    for rg in 0..r.num_row_groups() {
        for l in r.chunk_lengths(rg) {
            out.push((at, l as usize));
            at += l as usize;
        }
    }
    out
}

fn expect_integrity(fx: &Fixture, file: Vec<u8>, what: &str) {
    let opts = reader_options_as_claimed(fx, &file);
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<usize, Error> {
        let r = FileReader::open(file, opts)?;
        let batches = r.scan().build()?.read_all()?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }));
    match r {
        Err(_) => panic!("{what}: the read panicked"),
        Ok(Ok(rows)) => panic!("{what}: the read succeeded with {rows} rows"),
        Ok(Err(e)) => assert!(
            matches!(e, Error::Integrity { .. }),
            "{what}: expected Error::Integrity, got {e:?}"
        ),
    }
}

#[test]
fn chunk_from_another_file_or_position_is_refused() {
    for alg in Algorithm::ALL {
        let fx = Fixture::new();
        let file = int_file(&fx, alg, 100);
        let spans = chunk_spans(&fx, &file);
        assert_eq!(spans.len(), 4, "{alg}: expected 2 row groups x 2 columns");
        let len = spans[0].1;
        assert!(
            spans.iter().all(|s| s.1 == len),
            "{alg}: test construction: chunk lengths differ: {spans:?}"
        );
        assert!(
            matches!(full_read(&fx, file.clone()), Outcome::Data(8)),
            "{alg}: the intact file must read"
        );

        // Other files, same schema, algorithm and key: different values, and (for the encrypted
        // algorithms, where the ciphertext still differs) the very same values.
        let mut others = vec![(int_file(&fx, alg, 5000), "other values")];
        if alg.is_encrypted() {
            others.push((int_file(&fx, alg, 100), "the same values"));
        }
        for (other, label) in &others {
            let ospans = chunk_spans(&fx, other);
            assert_eq!(ospans, spans, "{alg}: test construction: layouts differ");
            for (i, &(off, l)) in spans.iter().enumerate() {
                let mut f = file.clone();
                f[off..off + l].copy_from_slice(&other[off..off + l]);
                assert_ne!(f, file, "{alg}: test construction: the copy changed nothing");
                expect_integrity(&fx, f, &format!("{alg}: chunk {i} copied from a file with {label}"));
            }
        }

        // Swaps inside the file: across row groups (same column), across columns (same row group),
        // and both.
        for (i, j) in [(0, 2), (1, 3), (0, 1), (2, 3), (0, 3), (1, 2)] {
            let (oi, oj) = (spans[i].0, spans[j].0);
            let mut f = file.clone();
            let ci = file[oi..oi + len].to_vec();
            let cj = file[oj..oj + len].to_vec();
            assert_ne!(ci, cj, "{alg}: test construction: chunks {i} and {j} are identical");
            f[oi..oi + len].copy_from_slice(&cj);
            f[oj..oj + len].copy_from_slice(&ci);
            expect_integrity(&fx, f, &format!("{alg}: chunks {i} and {j} swapped"));
        }

        // One chunk duplicated over another (the file keeps its length and layout).
        let mut f = file.clone();
        let c0 = file[spans[0].0..spans[0].0 + len].to_vec();
        f[spans[3].0..spans[3].0 + len].copy_from_slice(&c0);
        expect_integrity(&fx, f, &format!("{alg}: chunk 0 written over chunk 3"));
    }
}

/// A damaged chunk is detected when that chunk is read, and a projection that does not read it
/// still works (the damage is in another column's chunk, which is never read).
#[test]
fn damage_is_found_where_it_is_read() {
    for alg in Algorithm::ALL {
        let fx = Fixture::new();
        let file = int_file(&fx, alg, 100);
        let spans = chunk_spans(&fx, &file);
        let mut f = file.clone();
        // Damage column b of row group 1 (chunk 3).
        f[spans[3].0 + spans[3].1 / 2] ^= 0x40;
        let r = FileReader::open(f, reader_options(&fx, alg)).unwrap();
        let a = r.scan().project(vec![0]).build().unwrap().read_all().unwrap();
        assert_eq!(a.iter().map(|b| b.num_rows()).sum::<usize>(), 8, "{alg}");
        let b0 = r
            .scan()
            .project(vec![1])
            .row_groups(vec![0])
            .build()
            .unwrap()
            .read_all();
        assert!(b0.is_ok(), "{alg}: row group 0 of column b is intact: {b0:?}");
        let b1 = r
            .scan()
            .project(vec![1])
            .row_groups(vec![1])
            .build()
            .unwrap()
            .read_all();
        assert!(
            matches!(b1, Err(Error::Integrity { .. })),
            "{alg}: damaged chunk read without an integrity error: {b1:?}"
        );
    }
}
