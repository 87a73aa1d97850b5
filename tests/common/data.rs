//! Test data helpers shared by the file-format tests: writing and reading colvault files, a plain
//! Parquet round trip to compare against, a precise batch comparison, and a deterministic generator
//! of Arrow arrays of (almost) any type. Include with `#[path = "common/data.rs"] mod data;` next to
//! `mod common;`.
#![allow(dead_code)]

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BinaryViewArray, BooleanArray, DictionaryArray, FixedSizeBinaryArray,
    FixedSizeListArray, GenericBinaryArray, GenericListArray, GenericListViewArray, GenericStringArray, MapArray,
    PrimitiveArray, RecordBatch, StringViewArray, StructArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::*;
use bytes::Bytes;
use colvault::kms::KeyId;
use colvault::{Algorithm, Error, FileReader, FileWriter, ReaderOptions, WriterOptions, WriterOptionsBuilder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::common::Fixture;

/// Writer options for `alg` with the fixture's project key (RC4 allowed).
pub fn options(fx: &Fixture, alg: Algorithm) -> WriterOptionsBuilder {
    let b = if alg.is_encrypted() {
        WriterOptions::encrypted(alg, fx.access(), fx.cmk.clone())
    } else {
        WriterOptions::plaintext()
    };
    b.allow_legacy_rc4(true)
}

/// Writes `batches` into a colvault file.
pub fn write_file(schema: SchemaRef, batches: &[RecordBatch], opts: WriterOptions) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut w = FileWriter::try_new(&mut out, schema, opts)?;
    for b in batches {
        w.write(b)?;
    }
    let meta = w.close()?;
    assert_eq!(
        meta.file_len,
        out.len() as u64,
        "FileMetadata::file_len differs from the bytes written"
    );
    Ok(out)
}

/// Writes `batches` with `alg` and row groups of at most `rg_rows` rows; panics on a writer error.
pub fn write_simple(
    fx: &Fixture,
    alg: Algorithm,
    schema: SchemaRef,
    batches: &[RecordBatch],
    rg_rows: usize,
) -> Vec<u8> {
    let opts = options(fx, alg).max_row_group_rows(rg_rows).build();
    write_file(schema, batches, opts).unwrap_or_else(|e| panic!("{alg}: writing failed: {e}"))
}

/// Reader options expecting `alg` under the fixture's project key.
pub fn reader_options(fx: &Fixture, alg: Algorithm) -> ReaderOptions {
    reader_options_allowing(fx, alg, [fx.cmk.clone()])
}

/// Reader options expecting `alg` under any of `cmks`, with the fixture's key access.
pub fn reader_options_allowing(fx: &Fixture, alg: Algorithm, cmks: impl IntoIterator<Item = KeyId>) -> ReaderOptions {
    if alg.is_encrypted() {
        ReaderOptions::encrypted(alg, fx.access(), cmks)
    } else {
        ReaderOptions::plaintext()
    }
}

/// For tests of damaged and hostile files only: expects the algorithm the file's envelope names
/// (AES-256-GCM when it does not decode) and allows the fixture's key and every key the envelope
/// names, so the checks behind the expectation are what the damage meets. Real readers take their
/// expectation from the project's settings, never from the file.
pub fn reader_options_as_claimed(fx: &Fixture, file: &[u8]) -> ReaderOptions {
    let file = file.to_vec();
    let Ok((info, _)) = colvault::read::read_envelope(&file) else {
        return reader_options(fx, Algorithm::Aes256Gcm);
    };
    let named = info
        .envelope
        .keys
        .iter()
        .filter_map(|k| colvault::kms::DataKeyEnvelope::from_bytes(&k.wrapped).ok())
        .map(|e| e.key_id().clone());
    reader_options_allowing(
        fx,
        info.envelope.algorithm,
        std::iter::once(fx.cmk.clone()).chain(named),
    )
}

/// Opens `file`, expecting `alg`, and reads every row: the reader's schema and the batches.
pub fn read_file(fx: &Fixture, alg: Algorithm, file: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>), Error> {
    let r = FileReader::open(file, reader_options(fx, alg))?;
    let schema = r.schema();
    let batches = r.scan().build()?.read_all()?;
    Ok((schema, batches))
}

/// The same data through plain Parquet (`ArrowWriter` and `ParquetRecordBatchReader`), for comparison.
pub fn parquet_round_trip(
    schema: SchemaRef,
    batches: &[RecordBatch],
    rg_rows: usize,
) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let mut buf = Vec::new();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rg_rows))
        .build();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| format!("parquet writer: {e}"))?;
    for b in batches {
        w.write(b).map_err(|e| format!("parquet write: {e}"))?;
    }
    w.close().map_err(|e| format!("parquet close: {e}"))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(Bytes::from(buf)).map_err(|e| format!("parquet reader: {e}"))?;
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(|e| format!("parquet reader: {e}"))?;
    let got = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("parquet read: {e}"))?;
    Ok((schema, got))
}

/// Compares what was written with what was read: schema (with schema and field metadata), row
/// count, and each column's values; the error says exactly which part differs.
pub fn compare(
    schema: &SchemaRef,
    input: &[RecordBatch],
    got_schema: &SchemaRef,
    got: &[RecordBatch],
) -> Result<(), String> {
    if got_schema != schema {
        return Err(format!("schema differs: {}", schema_diff(schema, got_schema)));
    }
    // Batches carry the fields with their metadata; like parquet's reader (see
    // `ParquetRecordBatchReader`: "the schema metadata will be stripped here"), schema-level metadata
    // is only on the reader's schema, so a batch may have none.
    for b in got {
        let bs = b.schema();
        if bs.fields() != schema.fields() || !(bs.metadata().is_empty() || bs.metadata() == schema.metadata()) {
            return Err(format!(
                "a batch's schema differs: {}",
                schema_diff(schema, &b.schema())
            ));
        }
    }
    let schema = &Arc::new(Schema::new(schema.fields().clone()));
    let input: Vec<RecordBatch> = input
        .iter()
        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()).expect("same fields"))
        .collect();
    let got: Vec<RecordBatch> = got
        .iter()
        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()).expect("same fields"))
        .collect();
    let want = arrow::compute::concat_batches(schema, &input).map_err(|e| format!("concat input: {e}"))?;
    let have = arrow::compute::concat_batches(schema, &got).map_err(|e| format!("concat output: {e}"))?;
    if want.num_rows() != have.num_rows() {
        return Err(format!("{} rows written, {} read", want.num_rows(), have.num_rows()));
    }
    for (i, f) in schema.fields().iter().enumerate() {
        let (a, b) = (want.column(i), have.column(i));
        if let Err(e) = b.to_data().validate_full() {
            return Err(format!(
                "column {:?} ({}) read back invalid: {e}",
                f.name(),
                f.data_type()
            ));
        }
        if a.to_data() != b.to_data() {
            let first = (0..a.len())
                .find(|&r| a.slice(r, 1).to_data() != b.slice(r, 1).to_data())
                .map(|r| {
                    format!(
                        "first differing row {r}: written {:?}, read {:?}",
                        a.slice(r, 1),
                        b.slice(r, 1)
                    )
                })
                .unwrap_or_else(|| "no single row differs (buffers or nulls differ)".into());
            return Err(format!("column {:?} ({}) differs; {first}", f.name(), f.data_type()));
        }
    }
    if want != have {
        return Err("batches differ although every column is equal".into());
    }
    Ok(())
}

/// What differs between two schemas, field by field.
pub fn schema_diff(a: &Schema, b: &Schema) -> String {
    let mut out = Vec::new();
    if a.metadata() != b.metadata() {
        out.push(format!(
            "schema metadata: written {:?}, read {:?}",
            a.metadata(),
            b.metadata()
        ));
    }
    if a.fields().len() != b.fields().len() {
        out.push(format!(
            "{} fields written, {} read",
            a.fields().len(),
            b.fields().len()
        ));
    }
    for (fa, fb) in a.fields().iter().zip(b.fields()) {
        if fa != fb {
            out.push(format!("field {:?}: written {fa:?}, read {fb:?}", fa.name()));
        }
    }
    if out.is_empty() {
        out.push("(no field-level difference found)".into());
    }
    out.join("; ")
}

/// A colvault round trip of `batches`; on failure, the message also says whether plain Parquet
/// round trips the same data.
pub fn check_round_trip(
    fx: &Fixture,
    alg: Algorithm,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    rg_rows: usize,
) -> Result<(), String> {
    let opts = options(fx, alg).max_row_group_rows(rg_rows).build();
    let result = match write_file(schema.clone(), batches, opts) {
        Err(e) => Err(format!("colvault write failed: {e}")),
        Ok(file) => match read_file(fx, alg, file) {
            Err(e) => Err(format!("colvault read failed: {e}")),
            Ok((got_schema, got)) => compare(schema, batches, &got_schema, &got),
        },
    };
    result.map_err(|e| {
        let pq = match parquet_round_trip(schema.clone(), batches, rg_rows) {
            Ok((s, g)) => match compare(schema, batches, &s, &g) {
                Ok(()) => "plain parquet round trips this data exactly".to_string(),
                Err(pe) => format!("plain parquet does not round trip it either: {pe}"),
            },
            Err(pe) => format!("plain parquet fails too: {pe}"),
        };
        format!("{alg}, row groups of {rg_rows}: {e}\n  ({pq})")
    })
}

/// Splits `n` rows into batches at the given cut points (0-row batches where cuts repeat).
pub fn split(batch: &RecordBatch, cuts: &[usize]) -> Vec<RecordBatch> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(batch.num_rows())).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([batch.num_rows()]) {
        out.push(batch.slice(at, c - at));
        at = c;
    }
    out
}

/// A small deterministic PRNG (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    /// Random bits, with the edges of the range (all zero, all one, min and max) more often.
    pub fn edgy(&mut self) -> u64 {
        match self.below(10) {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << 63,
            3 => (1 << 63) - 1,
            4 => 1,
            _ => self.next_u64(),
        }
    }
    fn string(&mut self, max_len: u64) -> String {
        const PARTS: [&str; 8] = ["a", "b", "z", "0", " ", "é", "日本", "🦀"];
        let n = self.below(max_len + 1);
        (0..n).map(|_| PARTS[self.below(PARTS.len() as u64) as usize]).collect()
    }
    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let n = self.below(max_len + 1);
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

fn null_buffer(len: usize, null_p: f64, rng: &mut Rng) -> Option<NullBuffer> {
    if null_p <= 0.0 {
        return None;
    }
    Some(NullBuffer::from(
        (0..len).map(|_| !rng.chance(null_p)).collect::<Vec<bool>>(),
    ))
}

fn valid(nulls: &Option<NullBuffer>, i: usize) -> bool {
    nulls.as_ref().map(|n| n.is_valid(i)).unwrap_or(true)
}

fn prim<T: ArrowPrimitiveType>(
    dt: &DataType,
    len: usize,
    nulls: Option<NullBuffer>,
    mut f: impl FnMut() -> T::Native,
) -> ArrayRef {
    let values: Vec<T::Native> = (0..len).map(|_| f()).collect();
    Arc::new(PrimitiveArray::<T>::new(values.into(), nulls).with_data_type(dt.clone()))
}

fn float_bits64(rng: &mut Rng) -> f64 {
    const EDGES: [f64; 9] = [
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        5e-324,
    ];
    if rng.chance(0.3) {
        EDGES[rng.below(EDGES.len() as u64) as usize]
    } else {
        (rng.next_u64() as i64 as f64) / 1e6
    }
}

/// 10^p as i128 (p <= 38).
fn pow10(p: u8) -> i128 {
    10i128.pow(p as u32)
}

fn lengths(len: usize, nulls: &Option<NullBuffer>, max: u64, rng: &mut Rng) -> Vec<usize> {
    (0..len)
        .map(|i| {
            if valid(nulls, i) {
                rng.below(max + 1) as usize
            } else {
                0
            }
        })
        .collect()
}

fn dictionary<K: ArrowDictionaryKeyType>(
    value_type: &DataType,
    len: usize,
    nulls: Option<NullBuffer>,
    rng: &mut Rng,
) -> ArrayRef {
    let size = 1 + rng.below(5) as usize;
    let values = gen_array(value_type, size, 0.0, rng);
    let keys: Vec<K::Native> = (0..len)
        .map(|_| K::Native::from_usize(rng.below(size as u64) as usize).expect("key fits"))
        .collect();
    let keys = PrimitiveArray::<K>::new(keys.into(), nulls);
    Arc::new(DictionaryArray::<K>::try_new(keys, values).expect("valid dictionary"))
}

/// A deterministic array of `dt` with `len` rows, each null with probability `null_p` (0: no null
/// buffer at all). Children of nested types are nullable only where their field is.
pub fn gen_array(dt: &DataType, len: usize, null_p: f64, rng: &mut Rng) -> ArrayRef {
    use DataType as D;
    let nulls = null_buffer(len, null_p, rng);
    let child_p = |f: &Field| {
        if f.is_nullable() {
            null_p.clamp(0.0, 0.5).max(0.1)
        } else {
            0.0
        }
    };
    match dt {
        D::Null => new_null_array(dt, len),
        D::Boolean => Arc::new(BooleanArray::new(
            BooleanBuffer::from((0..len).map(|_| rng.chance(0.5)).collect::<Vec<_>>()),
            nulls,
        )),
        D::Int8 => prim::<Int8Type>(dt, len, nulls, || rng.edgy() as i8),
        D::Int16 => prim::<Int16Type>(dt, len, nulls, || rng.edgy() as i16),
        D::Int32 => prim::<Int32Type>(dt, len, nulls, || rng.edgy() as i32),
        D::Int64 => prim::<Int64Type>(dt, len, nulls, || rng.edgy() as i64),
        // The edges of the unsigned ranges: 0, MAX and the values just above the signed MAX.
        D::UInt8 => prim::<UInt8Type>(dt, len, nulls, || (rng.edgy() >> 56) as u8),
        D::UInt16 => prim::<UInt16Type>(dt, len, nulls, || (rng.edgy() >> 48) as u16),
        D::UInt32 => prim::<UInt32Type>(dt, len, nulls, || (rng.edgy() >> 32) as u32),
        D::UInt64 => prim::<UInt64Type>(dt, len, nulls, || rng.edgy()),
        D::Float16 => {
            // Raw half-precision bits: any pattern, NaNs and infinities included.
            let bits: Vec<u16> = (0..len).map(|_| rng.edgy() as u16).collect();
            let values =
                ScalarBuffer::<<Float16Type as ArrowPrimitiveType>::Native>::new(Buffer::from_vec(bits), 0, len);
            Arc::new(PrimitiveArray::<Float16Type>::new(values, nulls))
        }
        D::Float32 => prim::<Float32Type>(dt, len, nulls, || float_bits64(rng) as f32),
        D::Float64 => prim::<Float64Type>(dt, len, nulls, || float_bits64(rng)),
        D::Date32 => prim::<Date32Type>(dt, len, nulls, || rng.edgy() as i32),
        D::Date64 => prim::<Date64Type>(dt, len, nulls, || rng.edgy() as i64),
        D::Time32(TimeUnit::Second) => prim::<Time32SecondType>(dt, len, nulls, || rng.below(86_400) as i32),
        D::Time32(_) => prim::<Time32MillisecondType>(dt, len, nulls, || rng.below(86_400_000) as i32),
        D::Time64(TimeUnit::Microsecond) => {
            prim::<Time64MicrosecondType>(dt, len, nulls, || rng.below(86_400_000_000) as i64)
        }
        D::Time64(_) => prim::<Time64NanosecondType>(dt, len, nulls, || rng.below(86_400_000_000_000) as i64),
        D::Timestamp(TimeUnit::Second, _) => prim::<TimestampSecondType>(dt, len, nulls, || rng.edgy() as i64),
        D::Timestamp(TimeUnit::Millisecond, _) => {
            prim::<TimestampMillisecondType>(dt, len, nulls, || rng.edgy() as i64)
        }
        D::Timestamp(TimeUnit::Microsecond, _) => {
            prim::<TimestampMicrosecondType>(dt, len, nulls, || rng.edgy() as i64)
        }
        D::Timestamp(TimeUnit::Nanosecond, _) => prim::<TimestampNanosecondType>(dt, len, nulls, || rng.edgy() as i64),
        D::Duration(TimeUnit::Second) => prim::<DurationSecondType>(dt, len, nulls, || rng.edgy() as i64),
        D::Duration(TimeUnit::Millisecond) => prim::<DurationMillisecondType>(dt, len, nulls, || rng.edgy() as i64),
        D::Duration(TimeUnit::Microsecond) => prim::<DurationMicrosecondType>(dt, len, nulls, || rng.edgy() as i64),
        D::Duration(TimeUnit::Nanosecond) => prim::<DurationNanosecondType>(dt, len, nulls, || rng.edgy() as i64),
        D::Interval(IntervalUnit::YearMonth) => prim::<IntervalYearMonthType>(dt, len, nulls, || rng.edgy() as i32),
        D::Interval(IntervalUnit::DayTime) => prim::<IntervalDayTimeType>(dt, len, nulls, || {
            IntervalDayTime::new(rng.edgy() as i32, rng.edgy() as i32)
        }),
        D::Interval(IntervalUnit::MonthDayNano) => prim::<IntervalMonthDayNanoType>(dt, len, nulls, || {
            IntervalMonthDayNano::new(rng.edgy() as i32, rng.edgy() as i32, rng.edgy() as i64)
        }),
        D::Decimal32(p, _) => {
            let m = pow10(*p) as i64;
            prim::<Decimal32Type>(dt, len, nulls, || ((rng.next_u64() as i64) % m) as i32)
        }
        D::Decimal64(p, _) => {
            let m = pow10(*p);
            prim::<Decimal64Type>(dt, len, nulls, || ((rng.next_u64() as i64 as i128) % m) as i64)
        }
        D::Decimal128(p, _) => {
            let m = pow10(*p);
            prim::<Decimal128Type>(dt, len, nulls, || {
                let v = ((rng.next_u64() as i128) << 64 | rng.next_u64() as i128) % m;
                if rng.chance(0.1) {
                    m - 1
                } else {
                    v
                }
            })
        }
        D::Decimal256(p, _) => {
            // |v| < 10^(2*min(p/2, 38)) <= 10^p.
            let half = pow10((*p / 2).min(38));
            prim::<Decimal256Type>(dt, len, nulls, || {
                let a = i256::from_i128((rng.next_u64() as i128) % half);
                let b = i256::from_i128((rng.next_u64() as i128) % half);
                a.wrapping_mul(b)
            })
        }
        D::Utf8 => Arc::new(GenericStringArray::<i32>::from(
            (0..len)
                .map(|i| valid(&nulls, i).then(|| rng.string(12)))
                .collect::<Vec<_>>(),
        )),
        D::LargeUtf8 => Arc::new(GenericStringArray::<i64>::from(
            (0..len)
                .map(|i| valid(&nulls, i).then(|| rng.string(12)))
                .collect::<Vec<_>>(),
        )),
        // Views: strings both inlined (<= 12 bytes) and in data buffers.
        D::Utf8View => Arc::new(StringViewArray::from_iter(
            (0..len).map(|i| valid(&nulls, i).then(|| rng.string(20))),
        )),
        D::Binary => Arc::new(GenericBinaryArray::<i32>::from_iter(
            (0..len).map(|i| valid(&nulls, i).then(|| rng.bytes(20))),
        )),
        D::LargeBinary => Arc::new(GenericBinaryArray::<i64>::from_iter(
            (0..len).map(|i| valid(&nulls, i).then(|| rng.bytes(20))),
        )),
        D::BinaryView => Arc::new(BinaryViewArray::from_iter(
            (0..len).map(|i| valid(&nulls, i).then(|| rng.bytes(30))),
        )),
        D::FixedSizeBinary(n) => {
            let bytes: Vec<u8> = (0..len * *n as usize).map(|_| rng.next_u64() as u8).collect();
            Arc::new(FixedSizeBinaryArray::new(*n, Buffer::from_vec(bytes), nulls))
        }
        D::Struct(fields) => {
            let children = fields
                .iter()
                .map(|f| gen_array(f.data_type(), len, child_p(f), rng))
                .collect();
            Arc::new(StructArray::new(fields.clone(), children, nulls))
        }
        D::List(f) => {
            let lens = lengths(len, &nulls, 3, rng);
            let values = gen_array(f.data_type(), lens.iter().sum(), child_p(f), rng);
            Arc::new(GenericListArray::<i32>::new(
                f.clone(),
                OffsetBuffer::from_lengths(lens),
                values,
                nulls,
            ))
        }
        D::LargeList(f) => {
            let lens = lengths(len, &nulls, 3, rng);
            let values = gen_array(f.data_type(), lens.iter().sum(), child_p(f), rng);
            Arc::new(GenericListArray::<i64>::new(
                f.clone(),
                OffsetBuffer::from_lengths(lens),
                values,
                nulls,
            ))
        }
        D::ListView(f) | D::LargeListView(f) => {
            let lens = lengths(len, &nulls, 3, rng);
            let total: usize = lens.iter().sum();
            let values = gen_array(f.data_type(), total, child_p(f), rng);
            let mut offsets = Vec::with_capacity(len);
            let mut at = 0usize;
            for l in &lens {
                offsets.push(at);
                at += l;
            }
            if matches!(dt, D::ListView(_)) {
                let o: Vec<i32> = offsets.iter().map(|&o| o as i32).collect();
                let s: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
                Arc::new(GenericListViewArray::<i32>::new(
                    f.clone(),
                    o.into(),
                    s.into(),
                    values,
                    nulls,
                ))
            } else {
                let o: Vec<i64> = offsets.iter().map(|&o| o as i64).collect();
                let s: Vec<i64> = lens.iter().map(|&l| l as i64).collect();
                Arc::new(GenericListViewArray::<i64>::new(
                    f.clone(),
                    o.into(),
                    s.into(),
                    values,
                    nulls,
                ))
            }
        }
        D::FixedSizeList(f, n) => {
            let values = gen_array(f.data_type(), len * *n as usize, child_p(f), rng);
            Arc::new(FixedSizeListArray::new(f.clone(), *n, values, nulls))
        }
        D::Map(entries, sorted) => {
            let D::Struct(kv) = entries.data_type() else {
                panic!("map entries must be a struct")
            };
            let lens = lengths(len, &nulls, 3, rng);
            let total = lens.iter().sum();
            let keys = gen_array(kv[0].data_type(), total, 0.0, rng);
            let values = gen_array(kv[1].data_type(), total, child_p(&kv[1]), rng);
            let entries_array = StructArray::new(kv.clone(), vec![keys, values], None);
            Arc::new(MapArray::new(
                entries.clone(),
                OffsetBuffer::from_lengths(lens),
                entries_array,
                nulls,
                *sorted,
            ))
        }
        D::Dictionary(k, v) => match k.as_ref() {
            D::Int8 => dictionary::<Int8Type>(v, len, nulls, rng),
            D::Int16 => dictionary::<Int16Type>(v, len, nulls, rng),
            D::Int32 => dictionary::<Int32Type>(v, len, nulls, rng),
            D::Int64 => dictionary::<Int64Type>(v, len, nulls, rng),
            D::UInt8 => dictionary::<UInt8Type>(v, len, nulls, rng),
            D::UInt16 => dictionary::<UInt16Type>(v, len, nulls, rng),
            D::UInt32 => dictionary::<UInt32Type>(v, len, nulls, rng),
            D::UInt64 => dictionary::<UInt64Type>(v, len, nulls, rng),
            other => panic!("dictionary key type {other}"),
        },
        other => panic!("gen_array: no generator for {other}"),
    }
}

/// A batch of `rows` rows for `schema`, nulls with probability `null_p` where a field allows them.
pub fn gen_batch(schema: &SchemaRef, rows: usize, null_p: f64, rng: &mut Rng) -> RecordBatch {
    let columns = schema
        .fields()
        .iter()
        .map(|f| gen_array(f.data_type(), rows, if f.is_nullable() { null_p } else { 0.0 }, rng))
        .collect();
    RecordBatch::try_new(schema.clone(), columns).unwrap_or_else(|e| panic!("generated batch for {schema:?}: {e}"))
}

/// A map type with the usual field names.
pub fn map_type(key: DataType, value: DataType, value_nullable: bool) -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", key, false),
            Field::new("values", value, value_nullable),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// A list type whose item is `item` (nullable or not).
pub fn list_of(item: DataType, nullable: bool) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, nullable)))
}

/// A struct type of `(name, type, nullable)` fields.
pub fn struct_of(fields: &[(&str, DataType, bool)]) -> DataType {
    DataType::Struct(Fields::from(
        fields
            .iter()
            .map(|(n, t, null)| Field::new(*n, t.clone(), *null))
            .collect::<Vec<_>>(),
    ))
}
