//! Filters DataFusion pushes to a scan, as colvault [`Predicate`]s that prune row groups by their
//! statistics.
//!
//! Only what statistics can decide is translated: `column op literal` (either way round) for
//! `=`, `<`, `<=`, `>`, `>=`, `column IS NULL`, and conjunctions (`AND`) holding at least one of
//! them, on columns of a type whose Parquet statistics order like SQL does (integers, floats,
//! decimals, dates, times, timestamps, strings, binary), with a literal of exactly the column's type.
//! Pruning is conservative, so DataFusion is told `Inexact` and applies the filter to the rows too.

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;

use crate::read::{CmpOp, Predicate};

/// The predicates `expr` implies (empty when none can be used).
pub(crate) fn predicates(expr: &Expr, schema: &Schema) -> Vec<Predicate> {
    let mut out = Vec::new();
    collect(expr, schema, &mut out);
    out
}

fn collect(expr: &Expr, schema: &Schema, out: &mut Vec<Predicate>) {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            collect(left, schema, out);
            collect(right, schema, out);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (column, op, value) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) => (c, *op, v),
                (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                    Some(op) => (c, op, v),
                    None => return,
                },
                _ => return,
            };
            let cmp = match op {
                Operator::Eq => CmpOp::Eq,
                Operator::Lt => CmpOp::Lt,
                Operator::LtEq => CmpOp::LtEq,
                Operator::Gt => CmpOp::Gt,
                Operator::GtEq => CmpOp::GtEq,
                _ => return,
            };
            let Ok(field) = schema.field_with_name(&column.name) else {
                return;
            };
            if !prunable(field.data_type()) || !literal_fits(value, field.data_type()) {
                return;
            }
            if let Ok(array) = value.to_array() {
                out.push(Predicate::compare(column.name.clone(), cmp, array));
            }
        }
        Expr::IsNull(inner) => {
            if let Expr::Column(c) = inner.as_ref() {
                if schema.field_with_name(&c.name).is_ok_and(|f| prunable(f.data_type())) {
                    out.push(Predicate::is_null(c.name.clone()));
                }
            }
        }
        _ => {}
    }
}

/// Types whose row-group statistics colvault reads and whose order is SQL's.
fn prunable(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Int8 | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Decimal32(..)
            | Decimal64(..)
            | Decimal128(..)
            | Decimal256(..)
            | Date32
            | Date64
            | Time32(_)
            | Time64(_)
            | Timestamp(..)
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
            | Boolean
    )
}

/// Whether a literal compares with the column exactly as the column's own values would: not
/// null, not NaN, and of the column's type (strings and binaries of any width).
fn literal_fits(v: &ScalarValue, column: &DataType) -> bool {
    if v.is_null() {
        return false;
    }
    match v {
        ScalarValue::Float32(Some(f)) if f.is_nan() => return false,
        ScalarValue::Float64(Some(f)) if f.is_nan() => return false,
        _ => {}
    }
    let t = v.data_type();
    let strings = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let binaries = |t: &DataType| matches!(t, DataType::Binary | DataType::LargeBinary | DataType::BinaryView);
    &t == column || (strings(&t) && strings(column)) || (binaries(&t) && binaries(column))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;
    use datafusion::logical_expr::{col, lit};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("city", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ])
    }

    #[test]
    fn translates_what_statistics_decide() {
        let s = schema();
        assert_eq!(predicates(&col("id").gt(lit(5i64)), &s).len(), 1);
        assert_eq!(predicates(&lit(5i64).lt(col("id")), &s)[0].column(), "id");
        assert_eq!(predicates(&col("city").is_null(), &s).len(), 1);
        let both = col("id").gt_eq(lit(1i64)).and(col("city").eq(lit("Oslo")));
        assert_eq!(predicates(&both, &s).len(), 2);
        // Not decidable from statistics, or of another type: nothing.
        assert!(predicates(&col("id").not_eq(lit(5i64)), &s).is_empty());
        assert!(predicates(&col("id").gt(lit(5i32)), &s).is_empty());
        assert!(predicates(&col("id").gt(lit(5i64)).or(col("city").is_null()), &s).is_empty());
        assert!(predicates(&col("score").lt(lit(f64::NAN)), &s).is_empty());
        assert!(predicates(&col("nope").eq(lit(1i64)), &s).is_empty());
    }
}
