//! The limits every reader enforces on its input, and the schema checks that apply them.

use arrow::datatypes::{DataType, Field, Schema};

use crate::error::{Error, Result};

/// Most fields a schema may have, nested fields counted.
pub const MAX_COLUMNS: usize = 10_000;
/// Deepest nesting of a field.
pub const MAX_DEPTH: usize = 32;
/// Most values (rows times leaf columns) in one batch.
pub const CELL_BUDGET: usize = 1 << 20;
/// Most rows in one batch.
pub const BATCH_ROWS: usize = 65_536;
/// Records (CSV, JSON lines) whose types schema inference looks at.
pub const INFER_ROWS: usize = 100_000;
/// Longest JSON line.
pub const MAX_JSON_RECORD: usize = 16 << 20;
/// Most values (scalars, arrays, objects, keys) in one JSON line.
pub const MAX_JSON_VALUES: usize = 1 << 18;
/// Largest uncompressed Parquet page.
pub const MAX_PAGE: usize = 256 << 20;

/// Checks a schema's size: at most [`MAX_COLUMNS`] fields, nested at most [`MAX_DEPTH`] deep.
/// Returns its number of leaf columns.
pub fn check_schema(schema: &Schema, what: &'static str) -> Result<usize> {
    fn walk(f: &Field, depth: usize, fields: &mut usize, leaves: &mut usize, what: &'static str) -> Result<()> {
        *fields += 1;
        if *fields > MAX_COLUMNS {
            return Err(Error::malformed(what, format!("more than {MAX_COLUMNS} columns")));
        }
        if depth > MAX_DEPTH {
            return Err(Error::malformed(
                what,
                format!("columns nested deeper than {MAX_DEPTH}"),
            ));
        }
        let children: Vec<&Field> = match f.data_type() {
            DataType::List(c)
            | DataType::LargeList(c)
            | DataType::ListView(c)
            | DataType::LargeListView(c)
            | DataType::FixedSizeList(c, _)
            | DataType::Map(c, _) => vec![c.as_ref()],
            DataType::Struct(cs) => cs.iter().map(|c| c.as_ref()).collect(),
            DataType::Union(u, _) => u.iter().map(|(_, c)| c.as_ref()).collect(),
            DataType::Dictionary(_, v) => {
                return walk(
                    &Field::new("values", v.as_ref().clone(), true),
                    depth + 1,
                    fields,
                    leaves,
                    what,
                )
            }
            DataType::RunEndEncoded(_, v) => vec![v.as_ref()],
            _ => Vec::new(),
        };
        if children.is_empty() {
            *leaves += 1;
        }
        for c in children {
            walk(c, depth + 1, fields, leaves, what)?;
        }
        Ok(())
    }
    if schema.fields().is_empty() {
        return Err(Error::malformed(what, "no columns"));
    }
    let (mut fields, mut leaves) = (0, 0);
    for f in schema.fields() {
        walk(f, 1, &mut fields, &mut leaves, what)?;
    }
    Ok(leaves.max(1))
}

/// Rows per batch for `leaves` leaf columns: at most [`CELL_BUDGET`] values a batch.
pub fn batch_rows(leaves: usize) -> usize {
    (CELL_BUDGET / leaves.max(1)).clamp(1, BATCH_ROWS)
}
