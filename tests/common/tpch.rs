//! TPC-H for the SQL tests and benchmark: the eight tables generated as Arrow batches by
//! `tpchgen-arrow`, the 22 queries of `tpchgen` with the specification's validation parameters
//! substituted (TPC-H 3.0.1, section 2.4, "Validation"), and a comparison of results that does not
//! depend on the order of rows the query leaves unordered.

#![allow(dead_code)]

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator, PartSuppGenerator,
    RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow, SupplierArrow,
};

/// The tables, smallest first.
pub const TABLES: [&str; 8] = [
    "region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem",
];

/// Table `name` at scale factor `sf`, in batches of `batch_size` rows.
pub fn generate(name: &str, sf: f64, batch_size: usize) -> Vec<RecordBatch> {
    let batches: Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>> = match name {
        "region" => Box::new(RegionArrow::new(RegionGenerator::new(sf, 1, 1)).with_batch_size(batch_size)),
        "nation" => Box::new(NationArrow::new(NationGenerator::new(sf, 1, 1)).with_batch_size(batch_size)),
        "supplier" => Box::new(SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)).with_batch_size(batch_size)),
        "customer" => Box::new(CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)).with_batch_size(batch_size)),
        "part" => Box::new(PartArrow::new(PartGenerator::new(sf, 1, 1)).with_batch_size(batch_size)),
        "partsupp" => Box::new(PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)).with_batch_size(batch_size)),
        "orders" => Box::new(OrderArrow::new(OrderGenerator::new(sf, 1, 1)).with_batch_size(batch_size)),
        "lineitem" => Box::new(LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)).with_batch_size(batch_size)),
        other => panic!("no TPC-H table {other}"),
    };
    batches.collect::<Result<_, _>>().expect("tpchgen")
}

/// The validation parameters of each query, `:1`, `:2`, ... in order (TPC-H 3.0.1, 2.4.x.4).
fn parameters(n: i32) -> &'static [&'static str] {
    match n {
        1 => &["90"],
        2 => &["15", "BRASS", "EUROPE"],
        3 => &["BUILDING", "1995-03-15"],
        4 => &["1993-07-01"],
        5 => &["ASIA", "1994-01-01"],
        6 => &["1994-01-01", "0.06", "24"],
        7 => &["FRANCE", "GERMANY"],
        8 => &["BRAZIL", "AMERICA", "ECONOMY ANODIZED STEEL"],
        9 => &["green"],
        10 => &["1993-10-01"],
        11 => &["GERMANY", "0.0001"],
        12 => &["MAIL", "SHIP", "1994-01-01"],
        13 => &["special", "requests"],
        14 => &["1995-09-01"],
        15 => &["1996-01-01"],
        16 => &[
            "Brand#45",
            "MEDIUM POLISHED",
            "49",
            "14",
            "23",
            "45",
            "19",
            "3",
            "36",
            "9",
        ],
        17 => &["Brand#23", "MED BOX"],
        18 => &["300"],
        19 => &["Brand#12", "Brand#23", "Brand#34", "1", "10", "20"],
        20 => &["forest", "1994-01-01", "CANADA"],
        21 => &["SAUDI ARABIA"],
        22 => &["13", "31", "23", "29", "30", "18", "17"],
        _ => panic!("no TPC-H query {n}"),
    }
}

/// Query `n`'s statements, parameters substituted; the last one that returns rows is the answer
/// (Q15 creates a view, queries it and drops it).
pub fn statements(n: i32) -> Vec<String> {
    let mut sql = tpchgen::q_and_a::queries::query(n).expect("a query 1..=22").to_string();
    let params = parameters(n);
    // `:10` before `:1`.
    for (i, p) in params.iter().enumerate().rev() {
        sql = sql.replace(&format!(":{}", i + 1), p);
    }
    sql = sql.replace(":s", "0");
    // Q1's `interval '90' day (3)`: DataFusion takes no leading precision (the same interval).
    sql = sql.replace("day (3)", "day");
    sql.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs query `n`'s statements in order with `run` (Q15 creates and drops a view); the result of
/// the statement that answers it. An error names the query and the statement.
pub async fn answer<E: std::fmt::Display>(
    n: i32,
    run: impl AsyncFn(&str) -> Result<Vec<RecordBatch>, E>,
) -> Result<Vec<RecordBatch>, String> {
    let mut answer = Vec::new();
    for (i, stmt) in statements(n).iter().enumerate() {
        let got = run(stmt).await.map_err(|e| format!("Q{n} statement {i}: {e}"))?;
        if i == answer_index(n) {
            answer = got;
        }
    }
    Ok(answer)
}

/// Loads every table of `data` into `p`; tables of three batches or more in three appends, so
/// they span several files.
pub fn load(p: &colvault::project::Project, data: &[(&str, Vec<RecordBatch>)]) {
    for (name, batches) in data {
        let schema = batches[0].schema();
        if batches.len() >= 3 {
            let third = batches.len().div_ceil(3);
            let t = p.create_table(name, schema).unwrap();
            for part in batches.chunks(third) {
                t.append(part.iter().cloned()).unwrap();
            }
        } else {
            p.create_table_from(name, schema, batches.iter().cloned()).unwrap();
        }
    }
}

/// Which statement of [`statements`] answers the query.
pub fn answer_index(n: i32) -> usize {
    if n == 15 {
        1
    } else {
        0
    }
}

/// The rows of `batches` as strings, one per row, sorted: floating-point values rounded to nine
/// significant digits (sums in another order differ in the last bits), everything else exact.
pub fn canonical_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    let opts = FormatOptions::default().with_null("NULL");
    for b in batches {
        let cols: Vec<_> = b.columns().iter().map(|c| round_floats(c.as_ref())).collect();
        let fmts: Vec<ArrayFormatter> = cols
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            rows.push(
                fmts.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    rows.sort();
    rows
}

fn round_floats(a: &dyn Array) -> arrow::array::ArrayRef {
    use arrow::array::{Float64Array, StringArray};
    match a.data_type() {
        DataType::Float64 | DataType::Float32 => {
            let f = arrow::compute::cast(a, &DataType::Float64).unwrap();
            let f = f.as_any().downcast_ref::<Float64Array>().unwrap();
            std::sync::Arc::new(f.iter().map(|v| v.map(|v| format!("{v:.9e}"))).collect::<StringArray>())
        }
        _ => arrow::array::make_array(a.to_data()),
    }
}
