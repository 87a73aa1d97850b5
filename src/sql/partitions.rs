//! Partition pruning for SQL. A filter that reads only a partitioned table's partition columns
//! (any expression DataFusion can evaluate: `=`, `IN`, `OR`, `LIKE`, functions; nothing volatile)
//! is evaluated on each partition's values, which the sealed manifest records per file, before
//! any file is opened. Every row of a file holds its partition's values, so the result is exact:
//! the planner is told `Exact` and applies no filter of its own, as DataFusion's listing tables do
//! with Hive-style partition columns.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, Volatility};

use crate::error::{Error, Result};
use crate::table::{FileRef, Manifest, PartitionValue};

/// Whether `expr` reads partition columns of `partition_by` and nothing else, and is made only of
/// what can be evaluated on the partition values alone (comparisons, `IN`, `LIKE`, `CASE`, casts,
/// immutable functions; no subquery, aggregate, placeholder, or stable or volatile function), so
/// it can be decided exactly per file from the manifest. The same rule as DataFusion's listing
/// tables apply to their partition columns.
pub(crate) fn is_partition_filter(expr: &Expr, partition_by: &[String]) -> bool {
    if partition_by.is_empty() {
        return false;
    }
    let (mut decidable, mut reads_column) = (true, false);
    let _ = expr.apply(|e| {
        match e {
            Expr::Column(c) => {
                reads_column = true;
                decidable &= partition_by.contains(&c.name);
            }
            Expr::Literal(..)
            | Expr::Alias(_)
            | Expr::Not(_)
            | Expr::IsNotNull(_)
            | Expr::IsNull(_)
            | Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::IsNotUnknown(_)
            | Expr::Negative(_)
            | Expr::Cast(_)
            | Expr::TryCast(_)
            | Expr::BinaryExpr(_)
            | Expr::Between(_)
            | Expr::Like(_)
            | Expr::SimilarTo(_)
            | Expr::InList(_)
            | Expr::Case(_) => {}
            Expr::ScalarFunction(f) => decidable &= f.func.signature().volatility == Volatility::Immutable,
            _ => decidable = false,
        }
        Ok(if decidable {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    decidable && reads_column
}

/// The files of snapshot `m` a scan with `filters` reads: those holding rows, minus the files of
/// partitions the partition filters among `filters` rule out (the other filters are left to
/// row-group pruning and the planner).
pub(crate) fn files_to_read(state: &dyn Session, m: &Manifest, filters: &[Expr]) -> Result<Vec<FileRef>> {
    let files: Vec<FileRef> = m.files.iter().filter(|f| f.rows > 0).cloned().collect();
    let filters: Vec<&Expr> = filters
        .iter()
        .filter(|f| is_partition_filter(f, &m.partition_by))
        .collect();
    if filters.is_empty() || files.is_empty() {
        return Ok(files);
    }
    // One row per distinct partition: its values as the partition columns' arrays.
    let mut index: BTreeMap<&[PartitionValue], usize> = BTreeMap::new();
    for f in &files {
        let next = index.len();
        index.entry(&f.partition).or_insert(next);
    }
    let mut partitions: Vec<&[PartitionValue]> = vec![&[]; index.len()];
    for (values, &i) in &index {
        partitions[i] = values;
    }
    let fields: Vec<Field> = m
        .partition_by
        .iter()
        .map(|c| m.schema.field_with_name(c).cloned())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::integrity(format!("partition column of table version {}: {e}", m.version)))?;
    let arrow_err = |e: datafusion::arrow::error::ArrowError| Error::Arrow(e.to_string());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.len());
    for (k, field) in fields.iter().enumerate() {
        let values = partitions
            .iter()
            .map(|p| {
                let v = p
                    .get(k)
                    .ok_or_else(|| Error::integrity(format!("partition values of table version {}", m.version)))?;
                v.to_array(field.data_type())
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let refs: Vec<&dyn Array> = values.iter().map(|a| a.as_ref()).collect();
        columns.push(datafusion::arrow::compute::concat(&refs).map_err(arrow_err)?);
    }
    // Nullability as the values are: a partition value may be null where the column allows it.
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err)?;
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(super::error::from_df)?;
    let mut keep = vec![true; partitions.len()];
    for filter in filters {
        let expr = state
            .create_physical_expr(filter.clone(), &df_schema)
            .map_err(super::error::from_df)?;
        let result = expr
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(super::error::from_df)?;
        let Some(result) = result.as_boolean_opt() else {
            return Err(Error::InvalidArgument(format!(
                "filter {filter} on partition columns is not a boolean condition"
            )));
        };
        for (i, k) in keep.iter_mut().enumerate() {
            // Null (unknown) does not select a row, as in a WHERE clause.
            *k &= result.is_valid(i) && result.value(i);
        }
    }
    let selected: Vec<bool> = files.iter().map(|f| keep[index[f.partition.as_slice()]]).collect();
    Ok(files
        .into_iter()
        .zip(selected)
        .filter_map(|(f, keep)| keep.then_some(f))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::functions::expr_fn::upper;
    use datafusion::functions::math::expr_fn::random;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn only_filters_on_partition_values_alone_are_decided_exactly() {
        let by = ["ds".to_string(), "region".to_string()];
        let yes = [
            col("ds").eq(lit("2024-01-01")),
            col("ds").in_list(vec![lit("a"), lit("b")], false),
            col("ds").like(lit("2024-%")).or(col("region").is_null()),
            upper(col("region")).eq(lit("EU")),
            col("ds").between(lit("a"), lit("b")),
        ];
        for e in yes {
            assert!(is_partition_filter(&e, &by), "{e}");
        }
        let no = [
            // Another column, or none.
            col("ds").eq(lit("a")).or(col("id").lt(lit(5))),
            lit(true),
            // Volatile.
            random().lt(lit(0.5)).and(col("ds").eq(lit("a"))),
        ];
        for e in no {
            assert!(!is_partition_filter(&e, &by), "{e}");
        }
        assert!(!is_partition_filter(&col("ds").eq(lit("a")), &[]));
    }
}
