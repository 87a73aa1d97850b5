//! Scans decode row groups and fields in parallel (lanes on rayon): batches still come in file
//! order, never span row groups, survive being consumed inside rayon tasks, and damage is reported
//! where it is reached. Several readers can share one row group by row ranges.

mod common;

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use colvault::{Algorithm, CmpOp, Error, FileReader, FileWriter, Predicate, ReaderOptions, WriterOptions};
use common::Fixture;
use rayon::prelude::*;

const GROUP_ROWS: usize = 1000;
const GROUPS: usize = 4;

fn input(seed: i64) -> RecordBatch {
    let n = GROUP_ROWS * GROUPS;
    let ids: Vec<i64> = (0..n as i64).map(|i| i + seed * 1_000_000).collect();
    let notes: Vec<Option<String>> = ids
        .iter()
        .map(|i| (i % 5 != 0).then(|| format!("note {i} {}", "x".repeat((*i % 17) as usize))))
        .collect();
    let qty: Vec<i64> = ids.iter().map(|i| i % 97).collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("note", DataType::Utf8, true),
            Field::new("qty", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(notes)),
            Arc::new(Int64Array::from(qty)),
        ],
    )
    .unwrap()
}

fn write(fx: &Fixture, alg: Algorithm, batch: &RecordBatch) -> Vec<u8> {
    write_groups(fx, alg, batch, GROUP_ROWS)
}

/// `batch` as a file of row groups of `group_rows` rows.
fn write_groups(fx: &Fixture, alg: Algorithm, batch: &RecordBatch, group_rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = if alg.is_encrypted() {
        WriterOptions::encrypted(alg, fx.access(), fx.cmk.clone())
    } else {
        WriterOptions::plaintext()
    }
    .max_row_group_rows(group_rows);
    let mut w = FileWriter::try_new(&mut out, batch.schema(), opts.build()).unwrap();
    // Odd-sized input batches, so row groups do not line up with them.
    let mut at = 0;
    while at < batch.num_rows() {
        let n = 333.min(batch.num_rows() - at);
        w.write(&batch.slice(at, n)).unwrap();
        at += n;
    }
    w.close().unwrap();
    out
}

fn open(fx: &Fixture, alg: Algorithm, file: Vec<u8>) -> FileReader {
    let opts = match alg.is_encrypted() {
        true => ReaderOptions::encrypted(alg, fx.access(), [fx.cmk.clone()]),
        false => ReaderOptions::plaintext(),
    };
    FileReader::open(file, opts).unwrap()
}

#[test]
fn batches_come_in_file_order_and_never_span_row_groups() {
    let fx = Fixture::new();
    let want = input(0);
    let file = write(&fx, Algorithm::Aes256Gcm, &want);
    let reader = open(&fx, Algorithm::Aes256Gcm, file);
    assert_eq!(reader.num_row_groups(), GROUPS);
    let expected_lengths: Vec<usize> = (0..GROUPS).flat_map(|_| [300, 300, 300, 100]).collect();
    for threads in [1, 2, 4] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for projection in [vec![0, 1, 2], vec![1], vec![2, 0]] {
            let got = pool.install(|| {
                reader
                    .scan()
                    .project(projection.clone())
                    .batch_size(300)
                    .build()
                    .unwrap()
                    .read_all()
                    .unwrap()
            });
            let lengths: Vec<usize> = got.iter().map(RecordBatch::num_rows).collect();
            assert_eq!(
                lengths, expected_lengths,
                "{threads} threads, projection {projection:?}"
            );
            let mut sorted = projection.clone();
            sorted.sort_unstable();
            let want = want.project(&sorted).unwrap();
            let all = arrow::compute::concat_batches(&want.schema(), &got).unwrap();
            assert_eq!(all, want, "{threads} threads, projection {projection:?}");
        }
        // A scan dropped after its first batch leaves the reader usable.
        let mut scan = pool.install(|| reader.scan().batch_size(300).build().unwrap());
        assert_eq!(scan.next_batch().unwrap().unwrap().num_rows(), 300);
        drop(scan);
        let rows: usize = pool
            .install(|| reader.scan().build().unwrap().read_all().unwrap())
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, GROUP_ROWS * GROUPS);
    }
}

#[test]
fn scans_consumed_inside_rayon_tasks_finish() {
    let fx = Fixture::new();
    let inputs: Vec<RecordBatch> = (0..6).map(input).collect();
    let files: Vec<(Algorithm, Vec<u8>)> = inputs
        .iter()
        .zip(
            [Algorithm::Aes256Ctr, Algorithm::Aes256Gcm, Algorithm::None]
                .iter()
                .cycle(),
        )
        .map(|(b, alg)| (*alg, write(&fx, *alg, b)))
        .collect();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        // Every scan is consumed by a rayon task, and the tasks nest further parallel work.
        let got: Vec<RecordBatch> = pool.install(|| {
            files
                .par_iter()
                .map(|(alg, f)| {
                    let r = open(&fx, *alg, f.clone());
                    let mut out = Vec::new();
                    let mut scan = r.scan().batch_size(128).build().unwrap();
                    while let Some(b) = scan.next_batch().unwrap() {
                        let sum: i64 = (0..b.num_rows()).into_par_iter().map(|i| i as i64).sum();
                        assert!(sum >= 0);
                        out.push(b);
                    }
                    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
                })
                .collect()
        });
        assert_eq!(got, inputs, "{threads} threads");
    }
    // And from plain threads outside any pool, all at once.
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|(alg, f)| {
                s.spawn(|| {
                    open(&fx, *alg, f.clone())
                        .scan()
                        .batch_size(500)
                        .build()
                        .unwrap()
                        .read_all()
                        .unwrap()
                })
            })
            .collect();
        for (h, want) in handles.into_iter().zip(&inputs) {
            let got = h.join().unwrap();
            assert_eq!(&arrow::compute::concat_batches(&want.schema(), &got).unwrap(), want);
        }
    });
}

#[test]
fn damage_in_a_later_row_group_is_reported_after_the_earlier_batches() {
    let fx = Fixture::new();
    let want = input(3);
    for alg in [Algorithm::Aes256Gcm, Algorithm::Aes256Ctr, Algorithm::None] {
        let mut file = write(&fx, alg, &want);
        let reader = open(&fx, alg, file.clone());
        // Chunks tile the file from byte 4 on, row group by row group: damage row group 2's
        // `note` chunk (leaf 1).
        let before: u64 = (0..2).flat_map(|rg| reader.chunk_lengths(rg)).sum();
        let rg2 = reader.chunk_lengths(2);
        let at = 4 + before + rg2[0] + rg2[1] / 2;
        file[at as usize] ^= 0x01;
        let damaged = open(&fx, alg, file);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut scan = pool.install(|| damaged.scan().batch_size(250).build().unwrap());
            let mut rows = 0;
            let err = loop {
                match pool.install(|| scan.next_batch()) {
                    Ok(Some(b)) => {
                        assert_eq!(&b, &want.slice(rows, b.num_rows()), "{alg}");
                        rows += b.num_rows();
                    }
                    Ok(None) => panic!("{alg}: the damaged file read to its end"),
                    Err(e) => break e,
                }
            };
            assert_eq!(rows, 2 * GROUP_ROWS, "{alg}, {threads} threads: rows before the damage");
            assert!(matches!(err, Error::Integrity { .. }), "{alg}: {err:?}");
            assert!(scan.next_batch().unwrap().is_none(), "{alg}: a failed scan ends");
            // The undamaged columns of that row group still read.
            let ok = pool.install(|| damaged.scan().project(vec![0, 2]).build().unwrap().read_all().unwrap());
            assert_eq!(ok.iter().map(RecordBatch::num_rows).sum::<usize>(), GROUP_ROWS * GROUPS);
        }
    }
}

#[test]
fn row_ranges_of_one_row_group_read_exactly_those_rows() {
    let fx = Fixture::new();
    // One row group of 100,000 rows: several pages per column (20,000 rows at most each), so a
    // range skips whole pages, starts and ends inside pages, and spans them.
    let rows = 100_000;
    let want = {
        let b = input(3);
        let big: Vec<RecordBatch> = (0..25).map(|_| b.clone()).collect();
        arrow::compute::concat_batches(&b.schema(), &big).unwrap()
    };
    assert_eq!(want.num_rows(), rows);
    for alg in [Algorithm::Aes256Gcm, Algorithm::Aes256Ctr, Algorithm::None] {
        let reader = open(&fx, alg, write_groups(&fx, alg, &want, rows));
        assert_eq!(reader.num_row_groups(), 1);
        for range in [
            0..1,
            0..30_000,
            25_000..65_003,
            40_000..60_000,
            99_999..100_000,
            0..100_000,
        ] {
            for projection in [vec![0, 1, 2], vec![1]] {
                let got = reader
                    .scan()
                    .project(projection.clone())
                    .row_groups(vec![0])
                    .rows(range.start as u64..range.end as u64)
                    .batch_size(7_000)
                    .build()
                    .unwrap()
                    .read_all()
                    .unwrap();
                let expected = want.project(&projection).unwrap().slice(range.start, range.len());
                let got = arrow::compute::concat_batches(&expected.schema(), &got).unwrap();
                assert_eq!(got, expected, "{alg}: rows {range:?} of columns {projection:?}");
            }
        }
        // A range must be non-empty, inside its row group, and of one selected row group.
        #[allow(clippy::reversed_empty_ranges)]
        let bad_ranges = [5..5, 9..3, 99_000..100_001];
        for bad in bad_ranges {
            let err = reader.scan().row_groups(vec![0]).rows(bad.clone()).build().unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
        let err = reader.scan().rows(0..10).row_groups(vec![]).build().unwrap_err();
        assert!(err.to_string().contains("asks for 0"), "{err}");
    }
    // Of a file of several row groups, a range needs the scan to select one.
    let file = write(&fx, Algorithm::Aes256Gcm, &input(0));
    let reader = open(&fx, Algorithm::Aes256Gcm, file);
    let err = reader.scan().rows(0..10).build().unwrap_err();
    assert!(err.to_string().contains("asks for 4"), "{err}");
    let got = reader
        .scan()
        .row_groups(vec![2])
        .rows(10..20)
        .build()
        .unwrap()
        .read_all()
        .unwrap();
    let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
    assert_eq!(got, input(0).slice(2 * GROUP_ROWS + 10, 10));
    // A range of a row group that a filter prunes reads nothing (ids of group 2 are 2000..3000).
    let pruned = reader
        .scan()
        .row_groups(vec![2])
        .rows(10..20)
        .filter(Predicate::compare("id", CmpOp::Lt, Arc::new(Int64Array::from(vec![5]))))
        .build()
        .unwrap()
        .read_all()
        .unwrap();
    assert!(pruned.is_empty(), "{pruned:?}");
}
