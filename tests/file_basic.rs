//! File format: round trips for every algorithm, projection, row groups, pruning, keys.

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use colvault::{Algorithm, CmpOp, Error, FileReader, FileWriter, Predicate, ReaderOptions, WriterOptions};
use common::Fixture;

fn batch(start: i64, n: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
    ]));
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let cities: Vec<Option<String>> = ids
        .iter()
        .map(|i| {
            if i % 7 == 0 {
                None
            } else {
                Some(format!("city{}", i % 13))
            }
        })
        .collect();
    let prices: Vec<Option<f64>> = ids.iter().map(|i| Some(*i as f64 * 0.5)).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(cities)),
            Arc::new(Float64Array::from(prices)),
        ],
    )
    .unwrap()
}

/// What a reader of the fixture's project expects for `alg`: its key only.
fn expect(fx: &Fixture, alg: Algorithm) -> ReaderOptions {
    match alg.is_encrypted() {
        true => ReaderOptions::encrypted(alg, fx.access(), [fx.cmk.clone()]),
        false => ReaderOptions::plaintext(),
    }
}

fn write(fx: &Fixture, alg: Algorithm, batches: &[RecordBatch], rg_rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let b = if alg.is_encrypted() {
        WriterOptions::encrypted(alg, fx.access(), fx.cmk.clone())
    } else {
        WriterOptions::plaintext()
    }
    .max_row_group_rows(rg_rows)
    .allow_legacy_rc4(true);
    let mut w = FileWriter::try_new(&mut out, batches[0].schema(), b.build()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    let meta = w.close().unwrap();
    assert_eq!(meta.file_len, out.len() as u64);
    out
}

#[test]
fn round_trip_every_algorithm() {
    let fx = Fixture::new();
    let input = vec![batch(0, 1000), batch(1000, 2500), batch(3500, 1)];
    for alg in Algorithm::ALL {
        let file = write(&fx, alg, &input, 1024);
        let r = FileReader::open(file.clone(), expect(&fx, alg)).unwrap();
        assert_eq!(r.algorithm(), alg);
        assert_eq!(r.num_rows(), 3501);
        assert_eq!(r.num_row_groups(), 4);
        let got = r.scan().batch_size(10_000).build().unwrap().read_all().unwrap();
        let all = arrow::compute::concat_batches(&input[0].schema(), &got).unwrap();
        let want = arrow::compute::concat_batches(&input[0].schema(), &input).unwrap();
        assert_eq!(all, want, "{alg}");
        if alg.is_encrypted() {
            // The plaintext of a string column does not appear in the file.
            assert!(!file.windows(6).any(|w| w == b"city12"), "{alg}: plaintext leaked");
        }
    }
}

#[test]
fn projection_row_groups_and_pruning() {
    let fx = Fixture::new();
    let file = write(&fx, Algorithm::Aes256Gcm, &[batch(0, 4000)], 1000);
    let r = FileReader::open(file, expect(&fx, Algorithm::Aes256Gcm)).unwrap();
    let got = r
        .scan()
        .project_names(&["price"])
        .unwrap()
        .row_groups(vec![2])
        .build()
        .unwrap()
        .read_all()
        .unwrap();
    let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
    assert_eq!(got.num_columns(), 1);
    assert_eq!(got.num_rows(), 1000);
    let prices = got.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(prices.value(0), 1000.0);

    let v: ArrayRef = Arc::new(Int64Array::from(vec![2500]));
    let cases = [
        (CmpOp::Eq, vec![2]),
        (CmpOp::Lt, vec![0, 1, 2]),
        (CmpOp::LtEq, vec![0, 1, 2]),
        (CmpOp::Gt, vec![2, 3]),
        (CmpOp::GtEq, vec![2, 3]),
    ];
    for (op, want) in cases {
        let s = r.scan().filter(Predicate::compare("id", op, v.clone()));
        assert_eq!(s.selected_row_groups().unwrap(), want, "{op:?}");
    }
    let v: ArrayRef = Arc::new(Int64Array::from(vec![3000]));
    assert_eq!(
        r.scan()
            .filter(Predicate::compare("id", CmpOp::Lt, v.clone()))
            .selected_row_groups()
            .unwrap(),
        vec![0, 1, 2]
    );
    assert_eq!(
        r.scan()
            .filter(Predicate::compare("id", CmpOp::GtEq, v))
            .selected_row_groups()
            .unwrap(),
        vec![3]
    );
    // city is null where id % 7 == 0: every group has nulls; price never.
    assert_eq!(
        r.scan()
            .filter(Predicate::is_null("city"))
            .selected_row_groups()
            .unwrap(),
        vec![0, 1, 2, 3]
    );
    assert!(r
        .scan()
        .filter(Predicate::is_null("price"))
        .selected_row_groups()
        .unwrap()
        .is_empty());
    let s: ArrayRef = Arc::new(StringArray::from(vec!["zzz"]));
    assert!(r
        .scan()
        .filter(Predicate::compare("city", CmpOp::Eq, s))
        .selected_row_groups()
        .unwrap()
        .is_empty());
}

#[test]
fn wrong_expectations_are_refused() {
    let fx = Fixture::new();
    let file = write(&fx, Algorithm::Aes256Ctr, &[batch(0, 10)], 1000);
    let err = FileReader::open(file.clone(), expect(&fx, Algorithm::Aes256Gcm)).unwrap_err();
    assert!(matches!(err, Error::AlgorithmMismatch { .. }), "{err}");
    // An encrypted file where plaintext is expected: refused, whatever keys exist.
    let err = FileReader::open(file.clone(), ReaderOptions::plaintext()).unwrap_err();
    assert!(matches!(err, Error::AlgorithmMismatch { .. }), "{err}");
    let other = fx.new_key();
    let err = FileReader::open(
        file.clone(),
        ReaderOptions::encrypted(Algorithm::Aes256Ctr, fx.access(), [other]),
    )
    .unwrap_err();
    assert!(matches!(err, Error::KeyNotAllowed { .. }), "{err}");
    // Another table's context cannot unwrap the DEK.
    let err = FileReader::open(
        file,
        ReaderOptions::encrypted(Algorithm::Aes256Ctr, fx.access().for_table("other"), [fx.cmk.clone()]),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
}

/// A reader must name what it expects, so a file downgraded to `none` is refused by every reader
/// that expects encryption (before, `ReaderOptions::default()`, with or without keys, read it).
#[test]
fn a_plaintext_file_is_refused_where_encryption_is_expected() {
    let fx = Fixture::new();
    let plain = write(&fx, Algorithm::None, &[batch(0, 10)], 1000);
    for alg in [Algorithm::Aes256Gcm, Algorithm::Aes256Ctr, Algorithm::Rc4] {
        let err = FileReader::open(plain.clone(), expect(&fx, alg)).unwrap_err();
        match err {
            Error::AlgorithmMismatch { expected, found } => {
                assert_eq!((expected, found), (alg.to_string(), "none".to_string()));
            }
            other => panic!("{alg}: expected AlgorithmMismatch, got {other}"),
        }
    }
    // Plaintext expected: it reads.
    let r = FileReader::open(plain, ReaderOptions::plaintext()).unwrap();
    assert_eq!(r.num_rows(), 10);
}

/// A file whose keys are wrapped under a CMK the project does not use is refused, even when the
/// project's principal may use that CMK (before, a reader without an explicit allow-list read it).
#[test]
fn a_file_under_another_cmk_is_refused() {
    let fx = Fixture::new();
    let other = fx.new_key();
    let mut file = Vec::new();
    let opts = WriterOptions::encrypted(Algorithm::Aes256Gcm, fx.access(), other.clone()).build();
    let b = batch(0, 10);
    let mut w = FileWriter::try_new(&mut file, b.schema(), opts).unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
    let err = FileReader::open(file.clone(), expect(&fx, Algorithm::Aes256Gcm)).unwrap_err();
    match err {
        Error::KeyNotAllowed { key } => assert_eq!(key, other.to_string()),
        other => panic!("expected KeyNotAllowed, got {other}"),
    }
    // The same file where its key is expected: it reads (the refusal above is the key check's).
    let r = FileReader::open(
        file,
        ReaderOptions::encrypted(Algorithm::Aes256Gcm, fx.access(), [other]),
    )
    .unwrap();
    assert_eq!(r.num_rows(), 10);
}

/// Rewrapping takes the allowed CMKs too (before, `None` allowed any): a file whose file key or
/// column key is under a CMK not allowed is refused before anything is re-wrapped.
#[test]
fn rewrap_refuses_keys_not_allowed() {
    use colvault::format::rewrap::rewrap_file;
    let fx = Fixture::new();
    let price_key = fx.new_key();
    let input = batch(0, 10);
    let mut file = Vec::new();
    let opts = WriterOptions::encrypted(Algorithm::Aes256Gcm, fx.access(), fx.cmk.clone())
        .column_key("price", price_key.clone())
        .build();
    let mut w = FileWriter::try_new(&mut file, input.schema(), opts).unwrap();
    w.write(&input).unwrap();
    w.close().unwrap();
    let rewrap = |allowed: &[colvault::kms::KeyId]| {
        rewrap_file(&file, &mut Vec::new(), &fx.access(), allowed, &mut Default::default())
    };
    for allowed in [vec![fx.new_key()], vec![fx.cmk.clone()], vec![price_key.clone()]] {
        let err = rewrap(&allowed).unwrap_err();
        assert!(matches!(err, Error::KeyNotAllowed { .. }), "{allowed:?}: {err}");
    }
    rewrap(&[fx.cmk.clone(), price_key]).unwrap();
}

/// A column key must be allowed too: a file whose column key is under a CMK the reader does not
/// allow reads every other column, and that column is refused with `KeyNotAllowed`.
#[test]
fn a_column_key_under_a_cmk_not_allowed_is_refused() {
    let fx = Fixture::new();
    let price_key = fx.new_key();
    let input = batch(0, 100);
    let mut file = Vec::new();
    let opts = WriterOptions::encrypted(Algorithm::Aes256Gcm, fx.access(), fx.cmk.clone())
        .column_key("price", price_key)
        .build();
    let mut w = FileWriter::try_new(&mut file, input.schema(), opts).unwrap();
    w.write(&input).unwrap();
    w.close().unwrap();
    let r = FileReader::open(file, expect(&fx, Algorithm::Aes256Gcm)).unwrap();
    let err = r.scan().project_names(&["price"]).unwrap().build().unwrap_err();
    assert!(matches!(err, Error::KeyNotAllowed { .. }), "{err}");
    let got = r
        .scan()
        .project_names(&["id", "city"])
        .unwrap()
        .build()
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 100);
}

/// Options that cannot describe any file are refused with a message that says what to use.
#[test]
fn empty_or_plaintext_expectations_are_invalid() {
    let fx = Fixture::new();
    let file = write(&fx, Algorithm::Aes256Gcm, &[batch(0, 10)], 1000);
    let none = ReaderOptions::encrypted(Algorithm::None, fx.access(), [fx.cmk.clone()]);
    let err = FileReader::open(file.clone(), none).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("ReaderOptions::plaintext")),
        "{err}"
    );
    let no_keys = ReaderOptions::encrypted(Algorithm::Aes256Gcm, fx.access(), []);
    let err = FileReader::open(file, no_keys).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    // And a writer told to "encrypt" with none.
    let b = batch(0, 10);
    let opts = WriterOptions::encrypted(Algorithm::None, fx.access(), fx.cmk.clone()).build();
    let err = FileWriter::try_new(Vec::new(), b.schema(), opts).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("WriterOptions::plaintext")),
        "{err}"
    );
}

#[test]
fn rc4_needs_the_opt_in() {
    let fx = Fixture::new();
    let b = batch(0, 10);
    let opts = WriterOptions::encrypted(Algorithm::Rc4, fx.access(), fx.cmk.clone()).build();
    let err = FileWriter::try_new(Vec::new(), b.schema(), opts).unwrap_err();
    assert!(matches!(err, Error::LegacyAlgorithmRefused));
}

#[test]
fn column_keys() {
    use colvault::kms::KmsAdmin;
    let fx = Fixture::new();
    let price_key = fx.new_key();
    let input = batch(0, 3000);
    let mut file = Vec::new();
    let opts = WriterOptions::encrypted(Algorithm::Aes256Gcm, fx.access(), fx.cmk.clone())
        .column_key("price", price_key.clone())
        .max_row_group_rows(1000)
        .build();
    let mut w = FileWriter::try_new(&mut file, input.schema(), opts).unwrap();
    w.write(&input).unwrap();
    let meta = w.close().unwrap();
    assert_eq!(meta.key_ids, vec![fx.cmk.clone(), price_key.clone()]);

    // With access to both keys: everything reads, and price statistics prune.
    let both = || ReaderOptions::encrypted(Algorithm::Aes256Gcm, fx.access(), [fx.cmk.clone(), price_key.clone()]);
    let r = FileReader::open(file.clone(), both()).unwrap();
    let got = r.scan().build().unwrap().read_all().unwrap();
    assert_eq!(arrow::compute::concat_batches(&input.schema(), &got).unwrap(), input);
    assert!(r.parquet_metadata().row_group(0).column(2).statistics().is_some());
    let v: ArrayRef = Arc::new(Float64Array::from(vec![1200.0]));
    assert_eq!(
        r.scan()
            .filter(Predicate::compare("price", CmpOp::GtEq, v))
            .selected_row_groups()
            .unwrap(),
        vec![2]
    );

    // Revoke the project's use of the column key: the other columns still read; price does not, and
    // its statistics are not visible.
    fx.kms.revoke(&price_key, &fx.project).unwrap();
    fx.cache.invalidate();
    let r = FileReader::open(file.clone(), both()).unwrap();
    assert!(r.parquet_metadata().row_group(0).column(2).statistics().is_none());
    assert!(r.parquet_metadata().row_group(0).column(0).statistics().is_some());
    let got = r
        .scan()
        .project_names(&["id", "city"])
        .unwrap()
        .build()
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 3000);
    let err = r.scan().project_names(&["price"]).unwrap().build().unwrap_err();
    match err {
        Error::AccessDenied { principal, key } => {
            assert!(principal.contains("price"), "{principal}");
            assert_eq!(key, price_key.to_string());
        }
        other => panic!("expected AccessDenied, got {other}"),
    }
    assert!(r.scan().build().is_err(), "a full scan needs every key");
}
