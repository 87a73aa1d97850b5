//! Replays every committed fuzz corpus input (`fuzz/corpus/<target>/`) and every input that ever
//! crashed a target (`fuzz/regressions/<target>/`) through the targets' entry points, so `cargo
//! test` guards them without a fuzzer. `COLVAULT_REGENERATE_CORPUS=1` rewrites the seed inputs.

use std::path::{Path, PathBuf};

use colvault::crypto::Algorithm;
use colvault::fuzzing;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 11] = [
    ("file_reader", fuzzing::file_reader),
    ("footer_decoder", fuzzing::footer_decoder),
    ("manifest_decoder", fuzzing::manifest_decoder),
    ("wrapped_key", fuzzing::wrapped_key),
    ("keystore", fuzzing::keystore),
    ("round_trip", fuzzing::round_trip),
    ("plain_file", fuzzing::plain_file),
    ("import_csv", fuzzing::import_csv),
    ("import_jsonl", fuzzing::import_jsonl),
    ("import_ipc", fuzzing::import_ipc),
    ("import_parquet", fuzzing::import_parquet),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let rows: Vec<(i64, Option<String>)> = (0..20)
        .map(|i| (i * 7 - 30, (i % 3 != 0).then(|| format!("n{i}"))))
        .collect();
    for alg in Algorithm::ALL {
        let file = fuzzing::write_file(alg, &rows, 8).unwrap();
        let (info, env) = colvault::read::read_envelope(&file).unwrap();
        let _ = info;
        out.push(("footer_decoder", format!("envelope-{alg}"), env.clone()));
        out.push(("file_reader", format!("file-{alg}"), file));
        out.push(("round_trip", format!("rows-{alg}"), {
            let mut v = vec![alg.id() | (3 << 2)];
            for (i, r) in rows.iter().enumerate() {
                v.extend_from_slice(&r.0.to_le_bytes());
                v.push(i as u8);
            }
            v
        }));
    }
    // `none` files for the target that recomputes their checksums: one and several row groups.
    for rg in [1, 7, 100] {
        let file = fuzzing::write_file(Algorithm::None, &rows, rg).unwrap();
        out.push(("plain_file", format!("none-rg{rg}"), file));
    }
    // Every import format, written by Arrow's and Parquet's own writers from a small sample.
    for (name, bytes) in import_seeds() {
        out.push((name.split('-').next().unwrap(), name.to_string(), bytes));
    }
    // Wrapped keys and envelopes from the fixed KMS, and a manifest.
    let access = fuzzing::access();
    let file = fuzzing::write_file(Algorithm::Aes256Gcm, &rows, 100).unwrap();
    let (info, _) = colvault::read::read_envelope(&file).unwrap();
    let wrapped = &info.envelope.keys[0].wrapped;
    out.push(("wrapped_key", "envelope".into(), wrapped.clone()));
    let env = colvault::kms::DataKeyEnvelope::from_bytes(wrapped).unwrap();
    out.push(("wrapped_key", "wrapped-kek".into(), env.wrapped_kek().to_bytes()));
    let m = colvault::table::Manifest::genesis("0".repeat(32), fuzzing_schema(), Algorithm::None);
    out.push(("manifest_decoder", "body".into(), m.encode_body().unwrap()));
    out.push(("manifest_decoder", "checksummed".into(), {
        let mut m = m.clone();
        m.version = 1;
        m.seal(None).unwrap()
    }));
    let _ = access;
    // A keystore sealed under the fixed root key, holding one key.
    let dir = tempfile::tempdir().unwrap();
    let kms =
        colvault::kms::LocalKms::create(dir.path().join("ks"), fuzzing::keystore_root(), Default::default()).unwrap();
    colvault::kms::KmsAdmin::create_key(&kms, colvault::kms::CreateKeyRequest::byok()).unwrap();
    out.push((
        "keystore",
        "one-key".into(),
        std::fs::read(dir.path().join("ks")).unwrap(),
    ));
    out
}

/// Small valid inputs of each import format, named `<target>-<what>`.
fn import_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let batch = colvault::sample::SampleTable::new(5, 1).batches(5).next().unwrap();
    let schema = batch.schema();
    let mut out = Vec::new();
    let mut csv = Vec::new();
    arrow::csv::Writer::new(&mut csv).write(&batch).unwrap();
    out.push(("import_csv-sample", csv));
    out.push(("import_csv-quoted", b"a,b\n\"x,\"\"y\",2\n,3\n".to_vec()));
    let mut json = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut json);
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    out.push(("import_jsonl-sample", json));
    out.push((
        "import_jsonl-nested",
        b"{\"a\":[1,2],\"b\":{\"c\":\"x\"}}\n{\"a\":null}\n".to_vec(),
    ));
    let mut file = Vec::new();
    {
        let mut w = arrow::ipc::writer::FileWriter::try_new(&mut file, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    out.push(("import_ipc-file", file));
    let mut stream = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut stream, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    out.push(("import_ipc-stream", stream));
    for (name, codec) in [
        (
            "import_parquet-zstd",
            parquet::basic::Compression::ZSTD(Default::default()),
        ),
        ("import_parquet-snappy", parquet::basic::Compression::SNAPPY),
    ] {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(codec)
            .build();
        let mut pq = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut pq, schema.clone(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        out.push((name, pq));
    }
    out
}

fn fuzzing_schema() -> arrow::datatypes::SchemaRef {
    std::sync::Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "id",
        arrow::datatypes::DataType::Int64,
        false,
    )]))
}

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(sub).join(target);
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn replay_corpus_and_regressions() {
    if std::env::var_os("COLVAULT_REGENERATE_CORPUS").is_some() {
        for (target, name, bytes) in seeds() {
            let dir = fuzz_dir().join("corpus").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (target, run) in TARGETS {
        let inputs = inputs(target);
        assert!(!inputs.is_empty(), "no corpus for fuzz target {target}");
        for (path, bytes) in inputs {
            let r = std::panic::catch_unwind(|| run(&bytes));
            assert!(r.is_ok(), "fuzz target {target} panicked on {}", path.display());
        }
    }
}

/// The seeds are meaningful: the valid file seeds open and read.
#[test]
fn seeds_are_valid_inputs() {
    for alg in Algorithm::ALL {
        let file = fuzzing::write_file(alg, &[(1, Some("a".into()))], 1).unwrap();
        let r = colvault::FileReader::open(file, fuzzing::reader_options(alg).unwrap()).unwrap();
        assert_eq!(r.num_rows(), 1);
    }
    fuzzing::round_trip(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
}

/// `reseal_plain` makes a mutated `none` file pass its checksums, so the `plain_file` target
/// reaches the Parquet decoder: a file with a flipped byte in its Parquet metadata fails the
/// checksum as it is, and after resealing fails (if at all) past it, never as an integrity error.
#[test]
fn reseal_plain_reaches_the_parquet_decoder() {
    let rows: Vec<(i64, Option<String>)> = (0..20).map(|i| (i, Some(format!("n{i}")))).collect();
    let file = fuzzing::write_file(Algorithm::None, &rows, 7).unwrap();
    // Unchanged bytes stay unchanged.
    assert_eq!(fuzzing::reseal_plain(&file).unwrap(), file);
    let open = |f: Vec<u8>| colvault::FileReader::open(f, colvault::ReaderOptions::plaintext());
    // A byte of the first chunk flipped: the checksum catches it; resealed, it opens.
    let mut damaged = file.clone();
    damaged[6] ^= 0x40;
    assert!(matches!(
        open(damaged.clone()).and_then(|r| r.scan().build()?.read_all()),
        Err(colvault::Error::Integrity { .. })
    ));
    let resealed = fuzzing::reseal_plain(&damaged).unwrap();
    let r = open(resealed).unwrap().scan().build().unwrap().read_all();
    assert!(!matches!(r, Err(colvault::Error::Integrity { .. })), "{r:?}");
}

/// A `none` file whose (checksummed) Parquet metadata declares 2^31 - 1 row groups in a few bytes:
/// the `parquet` crate sized its row-group vector by that count before reading any, an allocation
/// of hundreds of GB that aborts the process. Now the Thrift walker refuses it first: Malformed.
#[test]
fn plain_file_with_a_huge_row_group_count_is_malformed() {
    use colvault::format::{FooterBody, TRAILER_LEN};
    let rows: Vec<(i64, Option<String>)> = (0..5).map(|i| (i, None)).collect();
    let file = fuzzing::write_file(Algorithm::None, &rows, 5).unwrap();
    let n = file.len();
    let trailer = &file[n - TRAILER_LEN..];
    let env_len = u32::from_be_bytes(trailer[0..4].try_into().unwrap()) as usize;
    let body_len = u32::from_be_bytes(trailer[4..8].try_into().unwrap()) as usize;
    let body_start = n - TRAILER_LEN - body_len;
    let env_start = body_start - env_len;
    let mut body = FooterBody::decode(&file[body_start..n - TRAILER_LEN - 32]).unwrap();
    // FileMetaData { 1: version 1, 2: [ { 4: "s", 5: 0 } ], 3: num_rows 0, 4: 2^31 - 1 row groups }
    let mut meta = vec![0x15, 0x02, 0x19, 0x1c, 0x48, 0x01, b's', 0x15, 0x00, 0x00, 0x16, 0x00];
    meta.extend_from_slice(&[0x19, 0xfc, 0xfe, 0xff, 0xff, 0xff, 0x07]);
    meta.extend_from_slice(&[0; 16]);
    body.parquet_metadata = meta;
    let body = body.encode();
    let mut out = file[..body_start].to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&[0; 32]);
    out.extend_from_slice(&(env_len as u32).to_be_bytes());
    out.extend_from_slice(&((body.len() + 32) as u32).to_be_bytes());
    out.extend_from_slice(&file[n - 4..]);
    assert!(env_start > 4);
    let out = fuzzing::reseal_plain(&out).unwrap();
    let r = colvault::FileReader::open(out, colvault::ReaderOptions::plaintext());
    assert!(matches!(r, Err(colvault::Error::Malformed { .. })), "{r:?}");
}
