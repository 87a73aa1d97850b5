//! A partitioned events table's rows: `id`, a day `ds` (a string, as MaxCompute's `ds`), a
//! `region` and an `amount`, for the partition suites (library and SQL).

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// `id` Int64, `ds` Utf8 (nullable), `region` Utf8, `amount` Float64.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("ds", DataType::Utf8, true),
        Field::new("region", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, true),
    ]))
}

/// `n` rows from `start`: `ds` cycles through `days` days (`2024-01-01` ...), `region` through
/// `eu`/`us` (alternating every `days` rows); every 50th row has a null `ds` when `nulls`.
/// Amounts are quarters, so sums are exact in any order.
pub fn batch(start: i64, n: i64, days: i64, nulls: bool) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n).collect();
    let ds = StringArray::from_iter(ids.iter().map(|i| {
        if nulls && i % 50 == 49 {
            None
        } else {
            Some(day(i % days))
        }
    }));
    let region = StringArray::from_iter_values(ids.iter().map(|i| if (i / days) % 2 == 0 { "eu" } else { "us" }));
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(ds),
            Arc::new(region),
            Arc::new(Float64Array::from_iter_values(ids.iter().map(|i| *i as f64 / 4.0))),
        ],
    )
    .unwrap()
}

/// Day `d` (from 0) of January 2024, as `ds` holds it.
pub fn day(d: i64) -> String {
    format!("2024-01-{:02}", d + 1)
}
