//! colvault's own encoding of an Arrow schema, used in file footers and table manifests.
//!
//! Readers used to take the Arrow schema from Arrow IPC bytes, and `arrow-ipc` panics on many
//! malformed-but-verifiable schemas (a list without a child, an unknown time unit ...). A reader of
//! hostile input must not depend on that, so colvault encodes schemas itself: a small tagged tree
//! whose decoder checks every tag, every count against the bytes left, every nesting level against
//! [`MAX_DEPTH`] and the structural rules of each type before it builds a [`Schema`]. The byte
//! layout is specified in `format-spec/file.md` ("Schema encoding").
//!
//! ```
//! use std::sync::Arc;
//! use arrow::datatypes::{DataType, Field, Schema};
//! use colvault::format::schema;
//!
//! let s = Schema::new(vec![
//!     Field::new("id", DataType::Int64, false),
//!     Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
//! ]);
//! let bytes = schema::encode(&s)?;
//! assert_eq!(schema::decode(&bytes)?, s);
//! # Ok::<(), colvault::Error>(())
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, IntervalUnit, Schema, TimeUnit};

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};

/// The deepest nesting of types a schema may have (a top-level primitive column has depth 1).
pub const MAX_DEPTH: usize = 64;
/// The most fields (at every level together) a schema may have.
pub const MAX_FIELDS: usize = 1 << 16;
/// The most key-value pairs of metadata on one field or on the schema.
const MAX_METADATA: usize = 1 << 12;
const MAX_NAME: usize = 1 << 16;
const MAX_VALUE: usize = 1 << 20;
const MAX_TZ: usize = 256;
/// The version byte that starts an encoded schema.
const SCHEMA_VERSION: u8 = 1;

const WHAT: &str = "schema";

mod tag {
    pub const NULL: u8 = 0;
    pub const BOOLEAN: u8 = 1;
    pub const INT8: u8 = 2;
    pub const INT16: u8 = 3;
    pub const INT32: u8 = 4;
    pub const INT64: u8 = 5;
    pub const UINT8: u8 = 6;
    pub const UINT16: u8 = 7;
    pub const UINT32: u8 = 8;
    pub const UINT64: u8 = 9;
    pub const FLOAT16: u8 = 10;
    pub const FLOAT32: u8 = 11;
    pub const FLOAT64: u8 = 12;
    pub const TIMESTAMP: u8 = 13;
    pub const DATE32: u8 = 14;
    pub const DATE64: u8 = 15;
    pub const TIME32: u8 = 16;
    pub const TIME64: u8 = 17;
    pub const DURATION: u8 = 18;
    pub const INTERVAL: u8 = 19;
    pub const BINARY: u8 = 20;
    pub const LARGE_BINARY: u8 = 21;
    pub const BINARY_VIEW: u8 = 22;
    pub const FIXED_SIZE_BINARY: u8 = 23;
    pub const UTF8: u8 = 24;
    pub const LARGE_UTF8: u8 = 25;
    pub const UTF8_VIEW: u8 = 26;
    pub const LIST: u8 = 27;
    pub const LARGE_LIST: u8 = 28;
    pub const FIXED_SIZE_LIST: u8 = 29;
    pub const STRUCT: u8 = 30;
    pub const MAP: u8 = 31;
    pub const DICTIONARY: u8 = 32;
    pub const DECIMAL32: u8 = 33;
    pub const DECIMAL64: u8 = 34;
    pub const DECIMAL128: u8 = 35;
    pub const DECIMAL256: u8 = 36;
    pub const LIST_VIEW: u8 = 37;
    pub const LARGE_LIST_VIEW: u8 = 38;
    pub const RUN_END_ENCODED: u8 = 39;
}

/// Encodes `schema`. Fails with [`Error::InvalidArgument`] for a type colvault does not store
/// (unions), a schema deeper than [`MAX_DEPTH`] or with more than [`MAX_FIELDS`] fields, or top-level
/// fields whose names are empty or repeated (see [`check_field_names`]), so that nothing is
/// written that a reader would refuse or could not address by name.
pub fn encode(schema: &Schema) -> Result<Vec<u8>> {
    check_field_names(schema)?;
    let mut e = Encoder::new();
    let mut budget = MAX_FIELDS;
    e.u8(SCHEMA_VERSION);
    encode_fields(&mut e, schema.fields(), 1, &mut budget)?;
    encode_metadata(&mut e, schema.metadata())?;
    Ok(e.finish())
}

/// Refuses a schema whose top-level fields have an empty name or share a name: columns are
/// projected, keyed and imported by name. Every writer (data files and table manifests) encodes its
/// schema through [`encode`], so this is the one place the rule is checked.
pub fn check_field_names(schema: &Schema) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if f.name().trim().is_empty() {
            return Err(Error::InvalidArgument(format!(
                "column {} has an empty name: every column needs a name",
                i + 1
            )));
        }
        if !seen.insert(f.name().as_str()) {
            return Err(Error::InvalidArgument(format!(
                "column name {:?} appears more than once: column names must be unique",
                f.name()
            )));
        }
    }
    Ok(())
}

/// Decodes a schema written by [`encode`], with every bound checked before any allocation.
pub fn decode(bytes: &[u8]) -> Result<Schema> {
    let mut d = Decoder::new(bytes, WHAT);
    let version = d.u8()?;
    if version != SCHEMA_VERSION {
        return Err(Error::malformed(WHAT, format!("unknown schema encoding {version}")));
    }
    let mut budget = MAX_FIELDS;
    let fields = decode_fields(&mut d, 1, &mut budget)?;
    let metadata = decode_metadata(&mut d)?;
    d.finish()?;
    Ok(Schema::new_with_metadata(fields, metadata))
}

fn too_deep() -> Error {
    Error::malformed(WHAT, format!("types nest deeper than {MAX_DEPTH} levels"))
}

fn too_many() -> Error {
    Error::malformed(WHAT, format!("more than {MAX_FIELDS} fields"))
}

fn sorted_metadata(m: &HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort();
    v
}

fn encode_metadata(e: &mut Encoder, m: &HashMap<String, String>) -> Result<()> {
    if m.len() > MAX_METADATA {
        return Err(Error::InvalidArgument(format!(
            "{} metadata entries on one field or schema exceed the bound of {MAX_METADATA}",
            m.len()
        )));
    }
    e.u32(m.len() as u32);
    for (k, v) in sorted_metadata(m) {
        if k.len() > MAX_NAME || v.len() > MAX_VALUE {
            return Err(Error::InvalidArgument(format!("the metadata entry {k:?} is too long")));
        }
        e.str(k).str(v);
    }
    Ok(())
}

fn decode_metadata(d: &mut Decoder<'_>) -> Result<HashMap<String, String>> {
    let n = d.count(MAX_METADATA, 8)?;
    let mut m = HashMap::with_capacity(n);
    for _ in 0..n {
        let k = d.str(MAX_NAME)?.to_owned();
        let v = d.str(MAX_VALUE)?.to_owned();
        if m.insert(k, v).is_some() {
            return Err(Error::malformed(WHAT, "a metadata key appears twice"));
        }
    }
    Ok(m)
}

fn encode_fields(e: &mut Encoder, fields: &Fields, depth: usize, budget: &mut usize) -> Result<()> {
    e.u32(fields.len() as u32);
    for f in fields {
        encode_field(e, f, depth, budget)?;
    }
    Ok(())
}

fn decode_fields(d: &mut Decoder<'_>, depth: usize, budget: &mut usize) -> Result<Fields> {
    // A field takes at least 4 (name) + 1 (nullable) + 1 (tag) + 4 (metadata count) bytes.
    let n = d.count(MAX_FIELDS, 10)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(decode_field(d, depth, budget)?);
    }
    Ok(out.into())
}

fn encode_field(e: &mut Encoder, f: &Field, depth: usize, budget: &mut usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::InvalidArgument(format!(
            "the field {:?} nests types deeper than {MAX_DEPTH} levels",
            f.name()
        )));
    }
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| Error::InvalidArgument(format!("a schema may have at most {MAX_FIELDS} fields")))?;
    if f.name().len() > MAX_NAME {
        return Err(Error::InvalidArgument(
            "a field name is longer than 65,536 bytes".into(),
        ));
    }
    e.str(f.name()).u8(f.is_nullable() as u8);
    encode_type(e, f.data_type(), f.name(), depth, budget)?;
    encode_metadata(e, f.metadata())
}

fn decode_field(d: &mut Decoder<'_>, depth: usize, budget: &mut usize) -> Result<Arc<Field>> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    *budget = budget.checked_sub(1).ok_or_else(too_many)?;
    let name = d.str(MAX_NAME)?.to_owned();
    let nullable = match d.u8()? {
        0 => false,
        1 => true,
        b => return Err(Error::malformed(WHAT, format!("nullable flag {b}"))),
    };
    let dt = decode_type(d, depth, budget)?;
    let metadata = decode_metadata(d)?;
    Ok(Arc::new(Field::new(name, dt, nullable).with_metadata(metadata)))
}

fn unit_byte(u: &TimeUnit) -> u8 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

fn decode_unit(d: &mut Decoder<'_>) -> Result<TimeUnit> {
    Ok(match d.u8()? {
        0 => TimeUnit::Second,
        1 => TimeUnit::Millisecond,
        2 => TimeUnit::Microsecond,
        3 => TimeUnit::Nanosecond,
        b => return Err(Error::malformed(WHAT, format!("time unit {b}"))),
    })
}

fn encode_type(e: &mut Encoder, dt: &DataType, name: &str, depth: usize, budget: &mut usize) -> Result<()> {
    use DataType as T;
    let simple = match dt {
        T::Null => Some(tag::NULL),
        T::Boolean => Some(tag::BOOLEAN),
        T::Int8 => Some(tag::INT8),
        T::Int16 => Some(tag::INT16),
        T::Int32 => Some(tag::INT32),
        T::Int64 => Some(tag::INT64),
        T::UInt8 => Some(tag::UINT8),
        T::UInt16 => Some(tag::UINT16),
        T::UInt32 => Some(tag::UINT32),
        T::UInt64 => Some(tag::UINT64),
        T::Float16 => Some(tag::FLOAT16),
        T::Float32 => Some(tag::FLOAT32),
        T::Float64 => Some(tag::FLOAT64),
        T::Date32 => Some(tag::DATE32),
        T::Date64 => Some(tag::DATE64),
        T::Binary => Some(tag::BINARY),
        T::LargeBinary => Some(tag::LARGE_BINARY),
        T::BinaryView => Some(tag::BINARY_VIEW),
        T::Utf8 => Some(tag::UTF8),
        T::LargeUtf8 => Some(tag::LARGE_UTF8),
        T::Utf8View => Some(tag::UTF8_VIEW),
        _ => None,
    };
    if let Some(t) = simple {
        e.u8(t);
        return Ok(());
    }
    match dt {
        T::Timestamp(unit, tz) => {
            let tz = tz.as_deref();
            if tz.is_some_and(|tz| tz.len() > MAX_TZ) {
                return Err(Error::InvalidArgument(format!(
                    "the time zone of field {name:?} is too long"
                )));
            }
            e.u8(tag::TIMESTAMP).u8(unit_byte(unit)).u8(tz.is_some() as u8);
            if let Some(tz) = tz {
                e.str(tz);
            }
        }
        T::Time32(unit) => {
            e.u8(tag::TIME32).u8(unit_byte(unit));
        }
        T::Time64(unit) => {
            e.u8(tag::TIME64).u8(unit_byte(unit));
        }
        T::Duration(unit) => {
            e.u8(tag::DURATION).u8(unit_byte(unit));
        }
        T::Interval(unit) => {
            let b = match unit {
                IntervalUnit::YearMonth => 0,
                IntervalUnit::DayTime => 1,
                IntervalUnit::MonthDayNano => 2,
            };
            e.u8(tag::INTERVAL).u8(b);
        }
        T::FixedSizeBinary(n) => {
            e.u8(tag::FIXED_SIZE_BINARY).u32(*n as u32);
        }
        T::List(f) | T::LargeList(f) => {
            e.u8(if matches!(dt, T::List(_)) {
                tag::LIST
            } else {
                tag::LARGE_LIST
            });
            encode_field(e, f, depth + 1, budget)?;
        }
        T::ListView(f) | T::LargeListView(f) => {
            e.u8(if matches!(dt, T::ListView(_)) {
                tag::LIST_VIEW
            } else {
                tag::LARGE_LIST_VIEW
            });
            encode_field(e, f, depth + 1, budget)?;
        }
        T::RunEndEncoded(ends, values) => {
            e.u8(tag::RUN_END_ENCODED);
            encode_field(e, ends, depth + 1, budget)?;
            encode_field(e, values, depth + 1, budget)?;
        }
        T::FixedSizeList(f, n) => {
            e.u8(tag::FIXED_SIZE_LIST).u32(*n as u32);
            encode_field(e, f, depth + 1, budget)?;
        }
        T::Struct(fields) => {
            e.u8(tag::STRUCT);
            encode_fields(e, fields, depth + 1, budget)?;
        }
        T::Map(f, sorted) => {
            if !matches!(f.data_type(), T::Struct(kv) if kv.len() == 2) {
                return Err(Error::InvalidArgument(format!(
                    "the map field {name:?} must have entries that are a struct of a key and a value"
                )));
            }
            e.u8(tag::MAP).u8(*sorted as u8);
            encode_field(e, f, depth + 1, budget)?;
        }
        T::Dictionary(k, v) => {
            e.u8(tag::DICTIONARY);
            encode_type(e, k, name, depth + 1, budget)?;
            encode_type(e, v, name, depth + 1, budget)?;
        }
        T::Decimal32(p, s) | T::Decimal64(p, s) | T::Decimal128(p, s) | T::Decimal256(p, s) => {
            let t = match dt {
                T::Decimal32(..) => tag::DECIMAL32,
                T::Decimal64(..) => tag::DECIMAL64,
                T::Decimal128(..) => tag::DECIMAL128,
                _ => tag::DECIMAL256,
            };
            e.u8(t).u8(*p).u8(*s as u8);
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "field {name:?} has type {other}, which colvault does not store"
            )))
        }
    }
    Ok(())
}

fn decode_type(d: &mut Decoder<'_>, depth: usize, budget: &mut usize) -> Result<DataType> {
    use DataType as T;
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    let t = d.u8()?;
    Ok(match t {
        tag::NULL => T::Null,
        tag::BOOLEAN => T::Boolean,
        tag::INT8 => T::Int8,
        tag::INT16 => T::Int16,
        tag::INT32 => T::Int32,
        tag::INT64 => T::Int64,
        tag::UINT8 => T::UInt8,
        tag::UINT16 => T::UInt16,
        tag::UINT32 => T::UInt32,
        tag::UINT64 => T::UInt64,
        tag::FLOAT16 => T::Float16,
        tag::FLOAT32 => T::Float32,
        tag::FLOAT64 => T::Float64,
        tag::DATE32 => T::Date32,
        tag::DATE64 => T::Date64,
        tag::BINARY => T::Binary,
        tag::LARGE_BINARY => T::LargeBinary,
        tag::BINARY_VIEW => T::BinaryView,
        tag::UTF8 => T::Utf8,
        tag::LARGE_UTF8 => T::LargeUtf8,
        tag::UTF8_VIEW => T::Utf8View,
        tag::TIMESTAMP => {
            let unit = decode_unit(d)?;
            let tz = match d.u8()? {
                0 => None,
                1 => Some(Arc::from(d.str(MAX_TZ)?)),
                b => return Err(Error::malformed(WHAT, format!("time zone flag {b}"))),
            };
            T::Timestamp(unit, tz)
        }
        tag::TIME32 => match decode_unit(d)? {
            u @ (TimeUnit::Second | TimeUnit::Millisecond) => T::Time32(u),
            u => return Err(Error::malformed(WHAT, format!("Time32 in {u:?}"))),
        },
        tag::TIME64 => match decode_unit(d)? {
            u @ (TimeUnit::Microsecond | TimeUnit::Nanosecond) => T::Time64(u),
            u => return Err(Error::malformed(WHAT, format!("Time64 in {u:?}"))),
        },
        tag::DURATION => T::Duration(decode_unit(d)?),
        tag::INTERVAL => T::Interval(match d.u8()? {
            0 => IntervalUnit::YearMonth,
            1 => IntervalUnit::DayTime,
            2 => IntervalUnit::MonthDayNano,
            b => return Err(Error::malformed(WHAT, format!("interval unit {b}"))),
        }),
        tag::FIXED_SIZE_BINARY => T::FixedSizeBinary(positive_i32(d.u32()?, "fixed-size binary width")?),
        tag::LIST => T::List(decode_field(d, depth + 1, budget)?),
        tag::LARGE_LIST => T::LargeList(decode_field(d, depth + 1, budget)?),
        tag::LIST_VIEW => T::ListView(decode_field(d, depth + 1, budget)?),
        tag::LARGE_LIST_VIEW => T::LargeListView(decode_field(d, depth + 1, budget)?),
        tag::RUN_END_ENCODED => {
            let ends = decode_field(d, depth + 1, budget)?;
            if !matches!(ends.data_type(), T::Int16 | T::Int32 | T::Int64) || ends.is_nullable() {
                return Err(Error::malformed(
                    WHAT,
                    "run ends must be non-null 16, 32 or 64-bit integers",
                ));
            }
            T::RunEndEncoded(ends, decode_field(d, depth + 1, budget)?)
        }
        tag::FIXED_SIZE_LIST => {
            let n = positive_i32(d.u32()?, "fixed-size list length")?;
            T::FixedSizeList(decode_field(d, depth + 1, budget)?, n)
        }
        tag::STRUCT => T::Struct(decode_fields(d, depth + 1, budget)?),
        tag::MAP => {
            let sorted = match d.u8()? {
                0 => false,
                1 => true,
                b => return Err(Error::malformed(WHAT, format!("map sorted flag {b}"))),
            };
            let entries = decode_field(d, depth + 1, budget)?;
            match entries.data_type() {
                T::Struct(kv) if kv.len() == 2 => {}
                _ => {
                    return Err(Error::malformed(
                        WHAT,
                        "map entries must be a struct of a key and a value",
                    ))
                }
            }
            T::Map(entries, sorted)
        }
        tag::DICTIONARY => {
            let k = decode_type(d, depth + 1, budget)?;
            if !k.is_dictionary_key_type() {
                return Err(Error::malformed(WHAT, format!("dictionary key type {k}")));
            }
            let v = decode_type(d, depth + 1, budget)?;
            T::Dictionary(Box::new(k), Box::new(v))
        }
        tag::DECIMAL32 | tag::DECIMAL64 | tag::DECIMAL128 | tag::DECIMAL256 => {
            let p = d.u8()?;
            let s = d.u8()? as i8;
            let max = match t {
                tag::DECIMAL32 => arrow::datatypes::DECIMAL32_MAX_PRECISION,
                tag::DECIMAL64 => arrow::datatypes::DECIMAL64_MAX_PRECISION,
                tag::DECIMAL128 => arrow::datatypes::DECIMAL128_MAX_PRECISION,
                _ => arrow::datatypes::DECIMAL256_MAX_PRECISION,
            };
            if p == 0 || p > max || s as i16 > p as i16 {
                return Err(Error::malformed(WHAT, format!("decimal precision {p} and scale {s}")));
            }
            match t {
                tag::DECIMAL32 => T::Decimal32(p, s),
                tag::DECIMAL64 => T::Decimal64(p, s),
                tag::DECIMAL128 => T::Decimal128(p, s),
                _ => T::Decimal256(p, s),
            }
        }
        other => return Err(Error::malformed(WHAT, format!("unknown type tag {other}"))),
    })
}

fn positive_i32(v: u32, what: &str) -> Result<i32> {
    match i32::try_from(v) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::malformed(WHAT, format!("{what} {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, dt: DataType, nullable: bool) -> Field {
        Field::new(name, dt, nullable)
    }

    fn every_type() -> Schema {
        use DataType as T;
        let item = Arc::new(f("item", T::Int32, true));
        let entries = Arc::new(f(
            "entries",
            T::Struct(vec![f("key", T::Utf8, false), f("value", T::Float64, true)].into()),
            false,
        ));
        let mut md = HashMap::new();
        md.insert("origin".to_string(), "test".to_string());
        Schema::new_with_metadata(
            vec![
                f("n", T::Null, true),
                f("b", T::Boolean, false),
                f("i8", T::Int8, true),
                f("i16", T::Int16, true),
                f("i32", T::Int32, true),
                f("i64", T::Int64, false),
                f("u8", T::UInt8, true),
                f("u16", T::UInt16, true),
                f("u32", T::UInt32, true),
                f("u64", T::UInt64, true),
                f("f16", T::Float16, true),
                f("f32", T::Float32, true),
                f("f64", T::Float64, true),
                f("ts", T::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
                f("ts_naive", T::Timestamp(TimeUnit::Nanosecond, None), true),
                f("d32", T::Date32, true),
                f("d64", T::Date64, true),
                f("t32", T::Time32(TimeUnit::Millisecond), true),
                f("t64", T::Time64(TimeUnit::Nanosecond), true),
                f("dur", T::Duration(TimeUnit::Second), true),
                f("iv", T::Interval(IntervalUnit::MonthDayNano), true),
                f("bin", T::Binary, true),
                f("lbin", T::LargeBinary, true),
                f("vbin", T::BinaryView, true),
                f("fsb", T::FixedSizeBinary(16), true),
                f("s", T::Utf8, true).with_metadata([("k".to_string(), "v".to_string())].into()),
                f("ls", T::LargeUtf8, true),
                f("vs", T::Utf8View, true),
                f("list", T::List(item.clone()), true),
                f("llist", T::LargeList(item.clone()), true),
                f("lv", T::ListView(item.clone()), true),
                f("llv", T::LargeListView(item.clone()), true),
                f(
                    "ree",
                    T::RunEndEncoded(
                        Arc::new(f("run_ends", T::Int32, false)),
                        Arc::new(f("values", T::Utf8, true)),
                    ),
                    true,
                ),
                f("fsl", T::FixedSizeList(item, 3), true),
                f(
                    "st",
                    T::Struct(vec![f("a", T::Int64, true), f("b", T::Utf8, false)].into()),
                    true,
                ),
                f("map", T::Map(entries, false), true),
                f("dict", T::Dictionary(Box::new(T::Int32), Box::new(T::Utf8)), true),
                f("dec32", T::Decimal32(9, 2), true),
                f("dec64", T::Decimal64(18, -3), true),
                f("dec128", T::Decimal128(38, 10), true),
                f("dec256", T::Decimal256(76, 0), true),
            ],
            md,
        )
    }

    #[test]
    fn every_type_round_trips() {
        let s = every_type();
        let bytes = encode(&s).unwrap();
        assert_eq!(decode(&bytes).unwrap(), s);
        // Deterministic: metadata is sorted, so two encodings of one schema are equal.
        assert_eq!(encode(&s).unwrap(), bytes);
    }

    #[test]
    fn every_truncation_and_every_byte_flip_is_an_error_or_a_schema() {
        let bytes = encode(&every_type()).unwrap();
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        for i in 0..bytes.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= x;
                let _ = decode(&b); // must not panic
            }
        }
    }

    fn nested(depth: usize) -> Schema {
        let mut dt = DataType::Int32;
        for _ in 1..depth {
            dt = DataType::List(Arc::new(f("item", dt, true)));
        }
        Schema::new(vec![f("deep", dt, true)])
    }

    #[test]
    fn depth_is_bounded_on_both_sides() {
        let ok = nested(MAX_DEPTH);
        assert_eq!(decode(&encode(&ok).unwrap()).unwrap(), ok);
        assert!(matches!(encode(&nested(MAX_DEPTH + 1)), Err(Error::InvalidArgument(_))));

        // A hand-made encoding 100,000 lists deep is refused without recursing that deep.
        let mut e = Encoder::new();
        e.u8(SCHEMA_VERSION).u32(1);
        for _ in 0..100_000 {
            e.str("x").u8(1).u8(tag::LIST);
        }
        let err = decode(&e.finish()).unwrap_err();
        assert!(err.to_string().contains("deeper"), "{err}");
    }

    #[test]
    fn structural_rules_are_checked() {
        let bad = |build: &dyn Fn(&mut Encoder)| {
            let mut e = Encoder::new();
            e.u8(SCHEMA_VERSION).u32(1).str("x").u8(1);
            build(&mut e);
            e.u32(0).u32(0);
            decode(&e.finish()).unwrap_err()
        };
        bad(&|e| {
            e.u8(tag::TIME32).u8(3);
        });
        bad(&|e| {
            e.u8(tag::DECIMAL128).u8(39).u8(0);
        });
        bad(&|e| {
            e.u8(tag::DECIMAL128).u8(0).u8(0);
        });
        bad(&|e| {
            e.u8(tag::FIXED_SIZE_BINARY).u32(0);
        });
        bad(&|e| {
            e.u8(tag::DICTIONARY).u8(tag::UTF8).u8(tag::UTF8);
        });
        bad(&|e| {
            e.u8(tag::MAP).u8(0).str("entries").u8(0).u8(tag::INT32).u32(0);
        });
        bad(&|e| {
            e.u8(200);
        });
        // A forged field count larger than the input is refused before allocating.
        let mut e = Encoder::new();
        e.u8(SCHEMA_VERSION).u32(u32::MAX);
        assert!(decode(&e.finish()).is_err());
    }

    #[test]
    fn unsupported_types_are_refused_at_write() {
        use arrow::datatypes::{UnionFields, UnionMode};
        let u = UnionFields::try_new(vec![0], vec![f("a", DataType::Int32, true)]).unwrap();
        let s = Schema::new(vec![f("u", DataType::Union(u, UnionMode::Sparse), true)]);
        assert!(matches!(encode(&s), Err(Error::InvalidArgument(_))));
    }
}
