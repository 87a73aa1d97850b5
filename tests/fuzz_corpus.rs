//! Replays every committed fuzz corpus input (`fuzz/corpus/<target>/`) and every input that ever
//! crashed a target (`fuzz/regressions/<target>/`) through the targets' entry points, so `cargo
//! test` guards them without a fuzzer. `COLVAULT_REGENERATE_CORPUS=1` rewrites the seed inputs.

use std::path::{Path, PathBuf};

use colvault::crypto::Algorithm;
use colvault::fuzzing;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("file_reader", fuzzing::file_reader),
    ("footer_decoder", fuzzing::footer_decoder),
    ("manifest_decoder", fuzzing::manifest_decoder),
    ("wrapped_key", fuzzing::wrapped_key),
    ("keystore", fuzzing::keystore),
    ("round_trip", fuzzing::round_trip),
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
