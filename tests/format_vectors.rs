//! The format's test vectors in `format-spec/test-vectors/`: small files made by the deterministic
//! writer (tests only), the keystore and root key that open them, and their expected contents.
//!
//! `vectors_are_stable` rewrites every vector from its recorded keys and compares byte for byte, so
//! the format cannot drift unnoticed; `vectors_open_with_their_keys` opens each committed file
//! through the committed keystore and checks its contents.
//!
//! To regenerate after an intended format change: `COLVAULT_REGENERATE_VECTORS=1 cargo test --release
//! --test format_vectors`, and say so in the format's change log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, ListArray, RecordBatch, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, Fields, Schema};
use colvault::crypto::{default_provider, providers, CipherProvider, FileId, SecretKey};
use colvault::kms::{
    CacheOptions, CreateKeyRequest, KeyCache, KeyId, KmsAdmin, LocalKms, LocalKmsOptions, Principal, RootSecret,
};
use colvault::write::DeterministicKeys;
use colvault::{Algorithm, Compression, FileReader, FileWriter, KeyAccess, ReaderOptions, WriterOptions};

/// Regeneration (in `vectors_are_stable`) and reading must not overlap.
static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

const PROJECT: &str = "prj_vectors";
const PROJECT_ID: &str = "00000000000000000000000000000001";
const TABLE_ID: &str = "00000000000000000000000000000002";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/test-vectors")
}

/// The data every vector holds: 5 rows of an int, a nullable string and a list of structs.
fn contents() -> RecordBatch {
    let item = Fields::from(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int32, true),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("name", DataType::Utf8, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(item.clone()), true))),
            true,
        ),
    ]));
    let keys = StringArray::from(vec!["a", "b", "c", "d"]);
    let vals = Int32Array::from(vec![Some(1), None, Some(3), Some(4)]);
    let structs = StructArray::new(item, vec![Arc::new(keys) as ArrayRef, Arc::new(vals)], None);
    let offsets = arrow::buffer::OffsetBuffer::new(vec![0, 1, 1, 3, 3, 4].into());
    let list = ListArray::new(
        Arc::new(Field::new("item", DataType::Struct(structs.fields().clone()), true)),
        offsets,
        Arc::new(structs),
        Some(vec![true, true, true, false, true].into()),
    );
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5])),
            Arc::new(StringArray::from(vec![
                Some("alpha"),
                None,
                Some("gamma"),
                Some("delta"),
                Some(""),
            ])),
            Arc::new(list),
        ],
    )
    .unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn write_vector(alg: Algorithm, keys: Option<DeterministicKeys>, provider: &'static dyn CipherProvider) -> Vec<u8> {
    let mut b = WriterOptions::plaintext()
        .cipher_provider(provider)
        .compression(Compression::None)
        .max_row_group_rows(3)
        .allow_legacy_rc4(true);
    if let Some(k) = keys {
        b = b.insecure_deterministic_for_test_vectors(alg, k);
    }
    let opts = b.build();
    let data = contents();
    let mut out = Vec::new();
    let mut w = FileWriter::try_new(&mut out, data.schema(), opts).unwrap();
    w.write(&data).unwrap();
    w.close().unwrap();
    out
}

fn manifest() -> BTreeMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(dir().join("vectors.txt")).unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
        } else {
            let (k, v) = line.split_once('=').unwrap();
            out.entry(current.clone())
                .or_default()
                .insert(k.trim().into(), v.trim().into());
        }
    }
    out
}

fn regenerate() {
    let d = dir();
    std::fs::create_dir_all(&d).unwrap();
    for f in ["keystore", "keystore.audit", "keystore.lock", "root.key"] {
        let _ = std::fs::remove_file(d.join(f));
    }
    let root = RootSecret::create_key_file(d.join("root.key")).unwrap();
    let kms = Arc::new(LocalKms::create(d.join("keystore"), root, LocalKmsOptions::new()).unwrap());
    let project = Principal::new(PROJECT).unwrap();
    let cmk = kms
        .create_key(CreateKeyRequest::project_default(project.clone()))
        .unwrap()
        .id;
    let cache = Arc::new(KeyCache::new(kms.clone(), CacheOptions::default()).unwrap());
    let access = KeyAccess::new(cache, project, PROJECT_ID, TABLE_ID);
    let mut text = String::from(
        "# colvault format test vectors: see tests/format_vectors.rs and format-spec/file.md.\n\
         # The DEKs are test keys, recorded so the deterministic writer can reproduce each file.\n",
    );
    text.push_str(&format!(
        "\n[common]\nproject = {PROJECT}\nproject_id = {PROJECT_ID}\ntable_id = {TABLE_ID}\ncmk = {cmk}\n"
    ));
    for (i, alg) in Algorithm::ALL.into_iter().enumerate() {
        let file_id = FileId([0x10 + i as u8; 16]);
        let nonce = [0x20 + i as u8; 12];
        let keys = if alg.is_encrypted() {
            let (dek, wrapped) = access.insecure_new_data_key_for_test_vectors(&cmk, &file_id).unwrap();
            text.push_str(&format!(
                "\n[{alg}]\nfile = {alg}.cvlt\nfile_id = {}\nfooter_nonce = {}\ndek = {}\n",
                hex(&file_id.0),
                hex(&nonce),
                hex(dek.insecure_expose_for_test_vectors())
            ));
            Some(DeterministicKeys {
                file_id,
                dek,
                wrapped_dek: wrapped,
                footer_nonce: nonce,
            })
        } else {
            text.push_str(&format!(
                "\n[{alg}]\nfile = {alg}.cvlt\nfile_id = {}\n",
                hex(&file_id.0)
            ));
            Some(DeterministicKeys {
                file_id,
                dek: SecretKey::from_slice(&[0; 32]).unwrap(),
                wrapped_dek: Vec::new(),
                footer_nonce: [0; 12],
            })
        };
        std::fs::write(
            d.join(format!("{alg}.cvlt")),
            write_vector(alg, keys, default_provider()),
        )
        .unwrap();
    }
    std::fs::write(d.join("vectors.txt"), text).unwrap();
    let _ = std::fs::remove_file(d.join("keystore.lock"));
}

#[test]
fn vectors_are_stable() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if std::env::var_os("COLVAULT_REGENERATE_VECTORS").is_some() {
        regenerate();
    }
    let m = manifest();
    for alg in Algorithm::ALL {
        let v = &m[alg.name()];
        let committed = std::fs::read(dir().join(&v["file"])).unwrap();
        let file_id = FileId(unhex(&v["file_id"]).try_into().unwrap());
        let keys = if alg.is_encrypted() {
            // The wrapped DEK is taken from the committed file's envelope; everything else is rebuilt.
            let r = colvault::read::read_envelope(&committed).unwrap().0;
            DeterministicKeys {
                file_id,
                dek: SecretKey::from_slice(&unhex(&v["dek"])).unwrap(),
                wrapped_dek: r.envelope.keys[0].wrapped.clone(),
                footer_nonce: unhex(&v["footer_nonce"]).try_into().unwrap(),
            }
        } else {
            DeterministicKeys {
                file_id,
                dek: SecretKey::from_slice(&[0; 32]).unwrap(),
                wrapped_dek: Vec::new(),
                footer_nonce: [0; 12],
            }
        };
        // Every cipher provider writes the same bytes.
        for p in providers() {
            let rebuilt = write_vector(alg, Some(keys.clone()), p);
            assert_eq!(
                rebuilt.len(),
                committed.len(),
                "{alg} ({}): length changed: the format drifted",
                p.name()
            );
            if let Some(i) = rebuilt.iter().zip(&committed).position(|(a, b)| a != b) {
                panic!(
                    "{alg} ({}): byte {i} differs from format-spec/test-vectors/{}: the format drifted",
                    p.name(),
                    v["file"]
                );
            }
        }
    }
}

#[test]
fn vectors_open_with_their_keys() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let m = manifest();
    let common = &m["common"];
    // Work on a copy: opening the keystore appends to its audit log.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["keystore", "keystore.audit", "root.key"] {
        if dir().join(f).exists() {
            std::fs::copy(dir().join(f), tmp.path().join(f)).unwrap();
            // A fresh checkout does not keep owner-only permissions.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path().join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let root = RootSecret::load_key_file(tmp.path().join("root.key")).unwrap();
    let kms = Arc::new(LocalKms::open(tmp.path().join("keystore"), root, LocalKmsOptions::new()).unwrap());
    let cache = Arc::new(KeyCache::new(kms, CacheOptions::default()).unwrap());
    let access = KeyAccess::new(
        cache,
        Principal::new(&common["project"]).unwrap(),
        &common["project_id"],
        &common["table_id"],
    );
    for (alg, p) in Algorithm::ALL.into_iter().flat_map(|a| providers().map(|p| (a, p))) {
        let bytes = std::fs::read(dir().join(&m[alg.name()]["file"])).unwrap();
        let cmk = KeyId::new(&common["cmk"]).unwrap();
        let opts = match alg.is_encrypted() {
            true => ReaderOptions::encrypted(alg, access.clone(), [cmk]),
            false => ReaderOptions::plaintext(),
        };
        let r = FileReader::open(bytes, opts.cipher_provider(p)).unwrap();
        assert_eq!(r.num_row_groups(), 2);
        let got = r.scan().build().unwrap().read_all().unwrap();
        let data = contents();
        assert_eq!(
            arrow::compute::concat_batches(&data.schema(), &got).unwrap(),
            data,
            "{alg} ({})",
            p.name()
        );
    }
}
