//! File size: a colvault file of the sample data is within 2% of a plaintext Parquet file of the
//! same data with the same codec, row-group size, dictionary and statistics settings.

mod common;

use colvault::sample::SampleTable;
use colvault::{Algorithm, Compression, FileWriter, WriterOptions};
use common::Fixture;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

const ROWS: usize = 300_000;
const RG: usize = 100_000;

fn parquet_size(codec: PqCompression) -> usize {
    let props = WriterProperties::builder()
        .set_compression(codec)
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(RG))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, SampleTable::schema(), Some(props)).unwrap();
    for b in SampleTable::new(ROWS, 1).batches(8192) {
        w.write(&b).unwrap();
    }
    w.close().unwrap();
    out.len()
}

fn colvault_size(fx: &Fixture, alg: Algorithm, codec: Compression) -> usize {
    let b = if alg.is_encrypted() {
        WriterOptions::encrypted(alg, fx.access(), fx.cmk.clone())
    } else {
        WriterOptions::plaintext()
    }
    .compression(codec)
    .max_row_group_rows(RG)
    .allow_legacy_rc4(true);
    let mut out = Vec::new();
    let mut w = FileWriter::try_new(&mut out, SampleTable::schema(), b.build()).unwrap();
    for b in SampleTable::new(ROWS, 1).batches(8192) {
        w.write(&b).unwrap();
    }
    w.close().unwrap();
    out.len()
}

#[test]
fn within_two_percent_of_parquet() {
    let fx = Fixture::new();
    for (codec, pq) in [
        (
            Compression::Zstd(1),
            PqCompression::ZSTD(ZstdLevel::try_new(1).unwrap()),
        ),
        (Compression::Snappy, PqCompression::SNAPPY),
    ] {
        let reference = parquet_size(pq);
        for alg in Algorithm::ALL {
            let size = colvault_size(&fx, alg, codec);
            let ratio = size as f64 / reference as f64;
            println!("{codec:?} {alg}: {size} bytes vs parquet {reference} ({ratio:.4})");
            assert!(
                (0.98..=1.02).contains(&ratio),
                "{codec:?} {alg}: {size} vs {reference} bytes ({ratio:.4})"
            );
        }
    }
}
