//! A deterministic, streaming generator of an ETL-like sample table, shared by the quickstart, the
//! benchmarks and the tests.
//!
//! Twelve columns: `id` int64, `user_id` int64, `quantity` int32, `price` float64, `amount`
//! decimal128(18,2), `ts` timestamp(us, UTC), `day` date32, `city` utf8 (100 values), `sku` utf8
//! (5,000 values), `note` utf8 (16 to 48 random characters), `paid` bool, `discount` float32 (10%
//! nulls). The same seed gives the same rows, batch by batch, without holding the table in memory.
//!
//! ```
//! use colvault::sample::SampleTable;
//! let mut total = 0;
//! for batch in SampleTable::new(10_000, 42).batches(4096) {
//!     total += batch.num_rows();
//! }
//! assert_eq!(total, 10_000);
//! ```

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The sample table's definition: row count and seed.
#[derive(Clone, Copy, Debug)]
pub struct SampleTable {
    rows: usize,
    seed: u64,
}

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and the same on every platform.
#[derive(Clone, Copy, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CITY_PREFIX: [&str; 20] = [
    "North", "South", "East", "West", "New", "Old", "Port", "Lake", "Fort", "Saint", "Upper", "Lower", "Grand",
    "Little", "Mount", "Glen", "Bay", "Cape", "Green", "Red",
];
const CITY_SUFFIX: [&str; 5] = ["ville", "ton", "field", "burg", "haven"];
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

impl SampleTable {
    /// `rows` rows from `seed`.
    pub fn new(rows: usize, seed: u64) -> Self {
        SampleTable { rows, seed }
    }

    /// The schema.
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("user_id", DataType::Int64, false),
            Field::new("quantity", DataType::Int32, false),
            Field::new("price", DataType::Float64, false),
            Field::new("amount", DataType::Decimal128(18, 2), false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("day", DataType::Date32, false),
            Field::new("city", DataType::Utf8, false),
            Field::new("sku", DataType::Utf8, false),
            Field::new("note", DataType::Utf8, false),
            Field::new("paid", DataType::Boolean, false),
            Field::new("discount", DataType::Float32, true),
        ]))
    }

    /// The rows, in batches of at most `batch_rows`.
    pub fn batches(&self, batch_rows: usize) -> impl Iterator<Item = RecordBatch> {
        let (rows, seed, step) = (self.rows, self.seed, batch_rows.max(1));
        (0..rows.div_ceil(step)).map(move |b| Self::batch(seed, b * step, step.min(rows - b * step)))
    }

    /// Rows `start .. start + n`: each row depends only on the seed and its index.
    pub fn batch(seed: u64, start: usize, n: usize) -> RecordBatch {
        let mut id = Vec::with_capacity(n);
        let mut user = Vec::with_capacity(n);
        let mut qty = Vec::with_capacity(n);
        let mut price = Vec::with_capacity(n);
        let mut amount = Vec::with_capacity(n);
        let mut ts = Vec::with_capacity(n);
        let mut day = Vec::with_capacity(n);
        let mut city = Vec::with_capacity(n);
        let mut sku = Vec::with_capacity(n);
        let mut note = Vec::with_capacity(n);
        let mut paid = Vec::with_capacity(n);
        let mut discount = Vec::with_capacity(n);
        for i in start..start + n {
            let mut r = Rng(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
            id.push(i as i64);
            user.push(r.below(200_000) as i64 + 1);
            let q = r.below(20) as i32 + 1;
            qty.push(q);
            let p = (r.below(100_000) as f64 + 99.0) / 100.0;
            price.push(p);
            amount.push((p * 100.0).round() as i128 * q as i128);
            // 2026-01-01T00:00:00Z plus up to a year, in microseconds.
            let t = 1_767_225_600_000_000i64 + (r.below(365 * 86_400) as i64) * 1_000_000 + (i as i64 % 1_000_000);
            ts.push(t);
            day.push((t / 86_400_000_000) as i32);
            let c = r.below(100) as usize;
            city.push(format!("{}{}", CITY_PREFIX[c % 20], CITY_SUFFIX[c / 20]));
            sku.push(format!("SKU-{:05}", r.below(5_000)));
            let len = 16 + r.below(33) as usize;
            note.push(
                (0..len)
                    .map(|_| ALPHABET[r.below(ALPHABET.len() as u64) as usize] as char)
                    .collect::<String>(),
            );
            paid.push(r.below(4) != 0);
            discount.push((r.below(10) != 0).then(|| r.below(50) as f32 / 100.0));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(id)),
            Arc::new(Int64Array::from(user)),
            Arc::new(Int32Array::from(qty)),
            Arc::new(Float64Array::from(price)),
            Arc::new(
                Decimal128Array::from(amount)
                    .with_precision_and_scale(18, 2)
                    .expect("valid decimal"),
            ),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Date32Array::from(day)),
            Arc::new(StringArray::from(city)),
            Arc::new(StringArray::from(sku)),
            Arc::new(StringArray::from(note)),
            Arc::new(BooleanArray::from(paid)),
            Arc::new(Float32Array::from(discount)),
        ];
        RecordBatch::try_new(Self::schema(), columns).expect("the sample schema matches its columns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_streaming() {
        let a: Vec<_> = SampleTable::new(1000, 7).batches(300).collect();
        let b: Vec<_> = SampleTable::new(1000, 7).batches(1000).collect();
        assert_eq!(a.len(), 4);
        let a = arrow::compute::concat_batches(&SampleTable::schema(), &a).unwrap();
        assert_eq!(a, b[0]);
        let c: Vec<_> = SampleTable::new(1000, 8).batches(1000).collect();
        assert_ne!(c[0], b[0]);
        let city = b[0].column(7).as_any().downcast_ref::<StringArray>().unwrap();
        let distinct: std::collections::HashSet<_> = city.iter().collect();
        assert!(distinct.len() > 90 && distinct.len() <= 100);
        let nulls = b[0].column(11).null_count();
        assert!((50..150).contains(&nulls), "about 10% nulls: {nulls}");
    }
}
