//! Encode and decode of one column chunk through the whole file path: one 1,048,576-row Int64
//! column (one row group, one chunk) written with [`FileWriter`] and read back with
//! [`FileReader`], per algorithm, to catch regressions in the hot path around the crypto.
//!
//! Run: `cargo bench --bench chunk` (add `-- --quick` for a fast pass).

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use colvault::crypto::Algorithm;
use colvault::{FileReader, FileWriter, WriterOptions};

const ROWS: usize = 1 << 20;

fn batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    // A spread of values so dictionary encoding falls back to plain, as for real measures.
    let values: Int64Array = (0..ROWS as i64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64))
        .collect();
    RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap()
}

fn options(alg: Algorithm) -> WriterOptions {
    let b = if alg.is_encrypted() {
        WriterOptions::encrypted(
            alg,
            colvault::fuzzing::access().clone(),
            colvault::kms::KeyId::new(colvault::fuzzing::FUZZ_KEY).unwrap(),
        )
        .allow_legacy_rc4(true)
    } else {
        WriterOptions::plaintext()
    };
    b.max_row_group_rows(ROWS)
        .compression(colvault::Compression::Snappy)
        .build()
}

fn encode_decode(c: &mut Criterion) {
    let batch = batch();
    for alg in Algorithm::ALL {
        let mut g = c.benchmark_group(format!("one chunk/{alg}"));
        g.throughput(Throughput::Bytes((ROWS * 8) as u64)).sample_size(10);
        let write = || {
            let mut w = FileWriter::try_new(Vec::new(), batch.schema(), options(alg)).unwrap();
            w.write(&batch).unwrap();
            w.close_into_sink().unwrap().1
        };
        g.bench_function("encode", |b| b.iter(write));
        let file = Bytes::from(write());
        g.bench_function("decode", |b| {
            b.iter(|| {
                let opts = colvault::fuzzing::reader_options(alg).unwrap();
                let r = FileReader::open(file.clone(), opts).unwrap();
                let out = r.scan().batch_size(ROWS).build().unwrap().read_all().unwrap();
                assert_eq!(out[0].num_rows(), ROWS);
            })
        });
        g.finish();
    }
}

criterion_group!(benches, encode_decode);
criterion_main!(benches);
