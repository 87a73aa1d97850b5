//! Partitioned tables: a table may be partitioned by one or more top-level columns (MaxCompute's
//! `PARTITIONED BY (ds STRING)`). Each data file holds the rows of one partition (one value per
//! partition column), and each manifest records every file's partition values, sealed with the rest
//! of the manifest, so scans and SQL skip whole partitions before opening any file.
//!
//! Where the expectation comes from: the partition columns are fixed when the table is created and
//! recorded by the catalog ([`TableRecord::partition_by`]); every manifest must record the same
//! list (format 3, `format-spec/keys.md` §8) and values of the columns' types, else the manifest is
//! refused. The values themselves are trusted as sealed manifest content: whoever can seal a
//! manifest can write any rows, so a forged value gains nothing a forged file would not.
//!
//! A partition column's values are in the manifests, under the project's key: a column kept under
//! a key of its own (column keys) cannot be a partition column.
//!
//! [`TableRecord::partition_by`]: crate::catalog::TableRecord::partition_by

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Int16Array, Int32Array, Int64Array, Int8Array,
    LargeStringArray, RecordBatch, StringArray, StringViewArray, UInt16Array, UInt32Array, UInt8Array,
};
use arrow::datatypes::{DataType, Schema};
use arrow::row::{RowConverter, SortField};

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};

/// Partition columns a table may have.
pub const MAX_PARTITION_COLUMNS: usize = 16;
/// The longest string partition value, in bytes.
pub const MAX_PARTITION_VALUE: usize = 1024;
/// How a null partition value is written in a partition spec (`ds=__NULL__`).
pub const NULL_SPEC: &str = "__NULL__";

/// One file's value of one partition column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartitionValue {
    /// Null.
    Null,
    /// A boolean column's value.
    Bool(bool),
    /// An integer column's value (8 to 64-bit signed, 8 to 32-bit unsigned).
    Int(i64),
    /// A `Date32` column's value: days since 1970-01-01.
    Date(i32),
    /// A string column's value (`Utf8`, `LargeUtf8`, `Utf8View`).
    Str(String),
}

/// Whether a column of type `t` can partition a table.
pub fn is_partition_type(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Date32 | Utf8 | LargeUtf8 | Utf8View
    )
}

impl PartitionValue {
    /// Row `row` of `a` (a column of a partition type).
    pub fn from_array(a: &dyn Array, row: usize) -> Result<Self> {
        if a.is_null(row) {
            return Ok(PartitionValue::Null);
        }
        use DataType::*;
        let v = match a.data_type() {
            Boolean => PartitionValue::Bool(a.as_boolean().value(row)),
            Int8 => PartitionValue::Int(a.as_primitive::<arrow::datatypes::Int8Type>().value(row).into()),
            Int16 => PartitionValue::Int(a.as_primitive::<arrow::datatypes::Int16Type>().value(row).into()),
            Int32 => PartitionValue::Int(a.as_primitive::<arrow::datatypes::Int32Type>().value(row).into()),
            Int64 => PartitionValue::Int(a.as_primitive::<arrow::datatypes::Int64Type>().value(row)),
            UInt8 => PartitionValue::Int(a.as_primitive::<arrow::datatypes::UInt8Type>().value(row).into()),
            UInt16 => PartitionValue::Int(a.as_primitive::<arrow::datatypes::UInt16Type>().value(row).into()),
            UInt32 => PartitionValue::Int(a.as_primitive::<arrow::datatypes::UInt32Type>().value(row).into()),
            Date32 => PartitionValue::Date(a.as_primitive::<arrow::datatypes::Date32Type>().value(row)),
            Utf8 => PartitionValue::Str(a.as_string::<i32>().value(row).to_string()),
            LargeUtf8 => PartitionValue::Str(a.as_string::<i64>().value(row).to_string()),
            Utf8View => PartitionValue::Str(a.as_string_view().value(row).to_string()),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "a {other} column cannot partition a table"
                )))
            }
        };
        if let PartitionValue::Str(s) = &v {
            if s.len() > MAX_PARTITION_VALUE {
                return Err(Error::InvalidArgument(format!(
                    "a partition value is at most {MAX_PARTITION_VALUE} bytes (one has {})",
                    s.len()
                )));
            }
        }
        Ok(v)
    }

    /// Whether this value fits a column of type `t` (null fits every type).
    pub fn fits(&self, t: &DataType) -> bool {
        use DataType::*;
        match self {
            PartitionValue::Null => is_partition_type(t),
            PartitionValue::Bool(_) => *t == Boolean,
            PartitionValue::Int(v) => match t {
                Int8 => i8::try_from(*v).is_ok(),
                Int16 => i16::try_from(*v).is_ok(),
                Int32 => i32::try_from(*v).is_ok(),
                Int64 => true,
                UInt8 => u8::try_from(*v).is_ok(),
                UInt16 => u16::try_from(*v).is_ok(),
                UInt32 => u32::try_from(*v).is_ok(),
                _ => false,
            },
            PartitionValue::Date(_) => *t == Date32,
            PartitionValue::Str(s) => matches!(t, Utf8 | LargeUtf8 | Utf8View) && s.len() <= MAX_PARTITION_VALUE,
        }
    }

    /// The value as a one-element array of type `t`.
    pub fn to_array(&self, t: &DataType) -> Result<ArrayRef> {
        if !self.fits(t) {
            return Err(Error::InvalidArgument(format!(
                "partition value {self} does not fit a {t} column"
            )));
        }
        use DataType::*;
        let int = |v: &PartitionValue| match v {
            PartitionValue::Int(i) => Some(*i),
            _ => None,
        };
        let i = int(self);
        let s = match self {
            PartitionValue::Str(s) => Some(s.as_str()),
            _ => None,
        };
        // `fits` checked the ranges, so the narrowing casts below are exact.
        let a: ArrayRef = match t {
            Boolean => Arc::new(BooleanArray::from(vec![match self {
                PartitionValue::Bool(b) => Some(*b),
                _ => None,
            }])),
            Int8 => Arc::new(Int8Array::from(vec![i.map(|v| v as i8)])),
            Int16 => Arc::new(Int16Array::from(vec![i.map(|v| v as i16)])),
            Int32 => Arc::new(Int32Array::from(vec![i.map(|v| v as i32)])),
            Int64 => Arc::new(Int64Array::from(vec![i])),
            UInt8 => Arc::new(UInt8Array::from(vec![i.map(|v| v as u8)])),
            UInt16 => Arc::new(UInt16Array::from(vec![i.map(|v| v as u16)])),
            UInt32 => Arc::new(UInt32Array::from(vec![i.map(|v| v as u32)])),
            Date32 => Arc::new(Date32Array::from(vec![match self {
                PartitionValue::Date(d) => Some(*d),
                _ => None,
            }])),
            Utf8 => Arc::new(StringArray::from(vec![s])),
            LargeUtf8 => Arc::new(LargeStringArray::from(vec![s])),
            Utf8View => Arc::new(StringViewArray::from(vec![s])),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "a {other} column cannot partition a table"
                )))
            }
        };
        Ok(a)
    }

    /// Parses `text` as a value of a column of type `t` ([`NULL_SPEC`] is null; dates are
    /// `YYYY-MM-DD`).
    pub fn parse(text: &str, t: &DataType) -> Result<Self> {
        if text == NULL_SPEC {
            return Ok(PartitionValue::Null);
        }
        let bad = |why: &str| Error::InvalidArgument(format!("partition value {text:?} for a {t} column: {why}"));
        use DataType::*;
        let v = match t {
            Boolean => match text {
                "true" => PartitionValue::Bool(true),
                "false" => PartitionValue::Bool(false),
                _ => return Err(bad("expected true or false")),
            },
            Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 => {
                PartitionValue::Int(text.parse().map_err(|_| bad("expected an integer"))?)
            }
            Date32 => {
                let a = arrow::compute::cast(&StringArray::from(vec![text]), &Date32)
                    .map_err(|_| bad("expected a date, YYYY-MM-DD"))?;
                if a.is_null(0) {
                    return Err(bad("expected a date, YYYY-MM-DD"));
                }
                PartitionValue::Date(a.as_primitive::<arrow::datatypes::Date32Type>().value(0))
            }
            Utf8 | LargeUtf8 | Utf8View => PartitionValue::Str(text.to_string()),
            _ => return Err(bad("the column cannot partition a table")),
        };
        if !v.fits(t) {
            return Err(bad("out of the column's range"));
        }
        Ok(v)
    }

    pub(super) fn encode(&self, e: &mut Encoder) {
        match self {
            PartitionValue::Null => {
                e.u8(0);
            }
            PartitionValue::Bool(b) => {
                e.u8(1).u8(*b as u8);
            }
            PartitionValue::Int(v) => {
                e.u8(2).u64(*v as u64);
            }
            PartitionValue::Date(d) => {
                e.u8(3).u32(*d as u32);
            }
            PartitionValue::Str(s) => {
                e.u8(4).str(s);
            }
        }
    }

    pub(super) fn decode(d: &mut Decoder<'_>) -> Result<Self> {
        Ok(match d.u8()? {
            0 => PartitionValue::Null,
            1 => match d.u8()? {
                0 => PartitionValue::Bool(false),
                1 => PartitionValue::Bool(true),
                b => return Err(Error::malformed("manifest", format!("partition boolean {b}"))),
            },
            2 => PartitionValue::Int(d.u64()? as i64),
            3 => PartitionValue::Date(d.u32()? as i32),
            4 => PartitionValue::Str(d.str(MAX_PARTITION_VALUE)?.to_string()),
            t => return Err(Error::malformed("manifest", format!("partition value tag {t}"))),
        })
    }
}

impl fmt::Display for PartitionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionValue::Null => f.write_str(NULL_SPEC),
            PartitionValue::Bool(b) => write!(f, "{b}"),
            PartitionValue::Int(v) => write!(f, "{v}"),
            PartitionValue::Date(d) => match chrono_date(*d) {
                Some(s) => f.write_str(&s),
                None => write!(f, "date {d}"),
            },
            PartitionValue::Str(s) => f.write_str(s),
        }
    }
}

/// Days since the epoch as `YYYY-MM-DD`.
fn chrono_date(days: i32) -> Option<String> {
    let a = arrow::compute::cast(&Date32Array::from(vec![days]), &DataType::Utf8).ok()?;
    (!a.is_null(0)).then(|| a.as_string::<i32>().value(0).to_string())
}

/// One partition of a table: a value per partition column, in the table's partition order.
/// Displayed and parsed as a path, `ds=2024-01-01/region=eu` (null as [`NULL_SPEC`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    columns: Vec<String>,
    values: Vec<PartitionValue>,
}

impl Partition {
    pub(crate) fn new(columns: &[String], values: Vec<PartitionValue>) -> Self {
        Partition {
            columns: columns.to_vec(),
            values,
        }
    }

    /// Parses a partition spec `col=value/col=value` of a table partitioned by `columns` of
    /// `schema`: every partition column named once, values parsed by the column's type.
    pub fn parse(spec: &str, columns: &[String], schema: &Schema) -> Result<Self> {
        if columns.is_empty() {
            return Err(Error::InvalidArgument("the table is not partitioned".into()));
        }
        let mut given: HashMap<&str, &str> = HashMap::new();
        for part in spec.split('/') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "partition spec {spec:?}: expected column=value, joined with '/' (e.g. {}=...)",
                    columns[0]
                ))
            })?;
            if !columns.iter().any(|c| c == k) {
                return Err(Error::InvalidArgument(format!(
                    "partition spec {spec:?}: {k:?} is not a partition column (they are {})",
                    columns.join(", ")
                )));
            }
            if given.insert(k, v).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "partition spec {spec:?}: {k:?} given twice"
                )));
            }
        }
        let values = columns
            .iter()
            .map(|c| {
                let text = given.get(c.as_str()).ok_or_else(|| {
                    Error::InvalidArgument(format!("partition spec {spec:?}: no value for partition column {c:?}"))
                })?;
                let field = schema
                    .field_with_name(c)
                    .map_err(|_| Error::InvalidArgument(format!("the table has no column {c:?}")))?;
                let value = PartitionValue::parse(text, field.data_type())?;
                if value == PartitionValue::Null && !field.is_nullable() {
                    return Err(Error::InvalidArgument(format!(
                        "partition spec {spec:?}: column {c:?} is not nullable, so it has no {NULL_SPEC} partition"
                    )));
                }
                Ok(value)
            })
            .collect::<Result<_>>()?;
        Ok(Partition::new(columns, values))
    }

    /// The partition columns, in the table's order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The values, one per partition column.
    pub fn values(&self) -> &[PartitionValue] {
        &self.values
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (c, v)) in self.columns.iter().zip(&self.values).enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            write!(f, "{c}={v}")?;
        }
        Ok(())
    }
}

/// One partition of a table snapshot, with what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition.
    pub partition: Partition,
    /// Its files.
    pub files: usize,
    /// Its rows.
    pub rows: u64,
    /// Its bytes on storage.
    pub bytes: u64,
}

/// Checks the partition columns of a new table with `schema`: top-level columns of a partition
/// type, each named once, at most [`MAX_PARTITION_COLUMNS`], none with a key of its own, and at
/// least one column left that is not a partition column.
pub(crate) fn check_columns(
    columns: &[String],
    schema: &Schema,
    column_keys: &[crate::catalog::ColumnKey],
) -> Result<()> {
    if columns.len() > MAX_PARTITION_COLUMNS {
        return Err(Error::InvalidArgument(format!(
            "a table has at most {MAX_PARTITION_COLUMNS} partition columns"
        )));
    }
    for (i, c) in columns.iter().enumerate() {
        let field = schema.field_with_name(c).map_err(|_| {
            Error::InvalidArgument(format!(
                "partition column {c:?} is not a column of the table (a top-level column is needed)"
            ))
        })?;
        if !is_partition_type(field.data_type()) {
            return Err(Error::InvalidArgument(format!(
                "partition column {c:?} is {}: a partition column is a string, integer, date or boolean",
                field.data_type()
            )));
        }
        if columns[..i].contains(c) {
            return Err(Error::InvalidArgument(format!("partition column {c:?} is named twice")));
        }
        if column_keys.iter().any(|k| k.column == *c) {
            return Err(Error::InvalidArgument(format!(
                "column {c:?} has a key of its own, so it cannot partition the table: partition values are \
                 kept in the table's manifests, under the project's key"
            )));
        }
    }
    if !columns.is_empty() && columns.len() >= schema.fields().len() {
        return Err(Error::InvalidArgument(
            "a partitioned table needs a column that is not a partition column".into(),
        ));
    }
    Ok(())
}

/// Splits `batch` by the values of its columns at `indices`: one batch per partition, in the
/// order each partition first appears, with its values.
pub(crate) fn split(batch: &RecordBatch, indices: &[usize]) -> Result<Vec<(Vec<PartitionValue>, RecordBatch)>> {
    let arrow_err = |e: arrow::error::ArrowError| Error::Arrow(e.to_string());
    let columns: Vec<ArrayRef> = indices.iter().map(|&i| batch.column(i).clone()).collect();
    let values_at = |row: usize| -> Result<Vec<PartitionValue>> {
        columns.iter().map(|c| PartitionValue::from_array(c, row)).collect()
    };
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let converter = RowConverter::new(columns.iter().map(|c| SortField::new(c.data_type().clone())).collect())
        .map_err(arrow_err)?;
    let rows = converter.convert_columns(&columns).map_err(arrow_err)?;
    // One pass: each row's partition, by its row-format bytes.
    let mut groups: Vec<Vec<u32>> = Vec::new();
    let mut seen: HashMap<arrow::row::Row<'_>, usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let g = *seen.entry(row).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i as u32);
    }
    if groups.len() == 1 {
        return Ok(vec![(values_at(0)?, batch.clone())]);
    }
    groups
        .into_iter()
        .map(|rows| {
            let values = values_at(rows[0] as usize)?;
            let take = arrow::array::UInt32Array::from(rows);
            let cols = batch
                .columns()
                .iter()
                .map(|c| arrow::compute::take(c, &take, None))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(arrow_err)?;
            let b = RecordBatch::try_new(batch.schema(), cols).map_err(arrow_err)?;
            Ok((values, b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    #[test]
    fn values_round_trip_through_the_manifest_encoding_and_arrays() {
        let cases = [
            (PartitionValue::Null, DataType::Utf8),
            (PartitionValue::Bool(true), DataType::Boolean),
            (PartitionValue::Int(-5), DataType::Int16),
            (PartitionValue::Int(4_000_000_000), DataType::UInt32),
            (PartitionValue::Date(19_000), DataType::Date32),
            (PartitionValue::Str("2024-01-01".into()), DataType::Utf8View),
        ];
        for (v, t) in cases {
            let mut e = Encoder::new();
            v.encode(&mut e);
            let bytes = e.finish();
            let mut d = Decoder::new(&bytes, "manifest");
            assert_eq!(PartitionValue::decode(&mut d).unwrap(), v);
            let a = v.to_array(&t).unwrap();
            assert_eq!(PartitionValue::from_array(&a, 0).unwrap(), v);
            assert_eq!(PartitionValue::parse(&v.to_string(), &t).unwrap(), v, "{v} as {t}");
        }
        assert!(!PartitionValue::Int(300).fits(&DataType::Int8));
        assert!(PartitionValue::parse("300", &DataType::UInt8).is_err());
        assert!(PartitionValue::parse("2024-13-01", &DataType::Date32).is_err());
        let mut d = Decoder::new(&[9], "manifest");
        assert!(matches!(PartitionValue::decode(&mut d), Err(Error::Malformed { .. })));
    }

    #[test]
    fn split_groups_rows_by_partition_in_first_seen_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ds", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("b"), Some("a"), None, Some("b")])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        let parts = split(&b, &[0]).unwrap();
        let got: Vec<(Vec<PartitionValue>, Vec<i64>)> = parts
            .iter()
            .map(|(v, b)| {
                let ids = b
                    .column(1)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec();
                (v.clone(), ids)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![PartitionValue::Str("b".into())], vec![1, 4]),
                (vec![PartitionValue::Str("a".into())], vec![2]),
                (vec![PartitionValue::Null], vec![3]),
            ]
        );
    }

    #[test]
    fn specs_name_every_partition_column_once() {
        let schema = Schema::new(vec![
            Field::new("ds", DataType::Date32, false),
            Field::new("region", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]);
        let cols = vec!["ds".to_string(), "region".to_string()];
        let p = Partition::parse("region=eu/ds=2024-01-02", &cols, &schema).unwrap();
        assert_eq!(p.to_string(), "ds=2024-01-02/region=eu");
        assert_eq!(Partition::parse(&p.to_string(), &cols, &schema).unwrap(), p);
        let null = Partition::parse("ds=2024-01-02/region=__NULL__", &cols, &schema).unwrap();
        assert_eq!(null.values()[1], PartitionValue::Null);
        for bad in [
            "ds=2024-01-02",
            "ds=2024-01-02/region=eu/ds=2024-01-03",
            "v=1/ds=2024-01-02/region=eu",
            "ds",
        ] {
            assert!(matches!(
                Partition::parse(bad, &cols, &schema),
                Err(Error::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn partition_columns_are_checked() {
        let schema = Schema::new(vec![
            Field::new("ds", DataType::Utf8, false),
            Field::new("x", DataType::Float64, true),
        ]);
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_columns(&c(&["ds"]), &schema, &[]).is_ok());
        assert!(check_columns(&c(&["x"]), &schema, &[]).is_err());
        assert!(check_columns(&c(&["nope"]), &schema, &[]).is_err());
        assert!(check_columns(&c(&["ds", "ds"]), &schema, &[]).is_err());
        assert!(check_columns(&c(&["ds", "x"]), &schema, &[]).is_err());
    }
}
