//! Entry points of the fuzz targets in `fuzz/`, shared with `tests/fuzz_corpus.rs`, which replays
//! every committed corpus input and every input that ever crashed, so `cargo test` guards them
//! without a fuzzer. Not a stable API.
//!
//! Each entry point takes arbitrary bytes and must return without panicking, hanging or allocating
//! beyond the input's size; `round_trip` also checks that what it wrote reads back equal.

use std::sync::{Arc, OnceLock};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::access::KeyAccess;
use crate::crypto::{Algorithm, SecretKey};
use crate::error::{Error, Result};
use crate::format::{Envelope, FooterBody};
use crate::kms::wrap::{kms_unwrap, kms_wrap};
use crate::kms::{
    CacheOptions, DataKeyEnvelope, EncryptionContext, KeyCache, KeyId, Kms, LocalKms, LocalKmsOptions, Principal,
    RootSecret, WrappedKey,
};
use crate::read::{FileReader, ReaderOptions};
use crate::table::Manifest;
use crate::write::{FileWriter, WriterOptions};

/// Installs (once) the fuzz targets' panic hook: a panic inside a decoder that colvault contains
/// (it becomes [`Error::Malformed`], see [`crate::error::panic_is_contained`]) passes silently, and
/// is counted in [`contained_panics`]; any other panic prints and aborts, so libFuzzer reports it.
/// Without it libFuzzer's own hook aborts on every panic, contained or not, and a target stops at
/// the first known upstream panic that colvault already turns into an error.
pub fn abort_on_uncontained_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if crate::error::panic_is_contained() {
                CONTAINED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            default(info);
            std::process::abort();
        }));
    });
}

static CONTAINED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Panics contained so far under [`abort_on_uncontained_panics`].
pub fn contained_panics() -> u64 {
    CONTAINED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The fixed key id of [`FixedKms`].
pub const FUZZ_KEY: &str = "cmk-fuzz";

/// A KMS with one fixed key (version 1, fixed material), so that inputs made in one process open in
/// another. For fuzzing and tests only.
#[derive(Debug)]
pub struct FixedKms {
    material: SecretKey,
    id: KeyId,
}

impl Default for FixedKms {
    fn default() -> Self {
        FixedKms {
            material: SecretKey::from_slice(&[0x5a; 32]).expect("32 bytes"),
            id: KeyId::new(FUZZ_KEY).expect("a valid id"),
        }
    }
}

impl FixedKms {
    fn check(&self, key: &KeyId, version: u32) -> Result<()> {
        if key != &self.id || version != 1 {
            return Err(Error::UnknownKey { key: key.to_string() });
        }
        Ok(())
    }
}

impl Kms for FixedKms {
    fn name(&self) -> &str {
        "fuzz"
    }
    fn generate_data_key(
        &self,
        _: &Principal,
        key: &KeyId,
        ctx: &EncryptionContext,
    ) -> Result<(SecretKey, WrappedKey)> {
        self.check(key, 1)?;
        let dek = SecretKey::generate()?;
        let wrapped = kms_wrap(&self.material, "fuzz", &self.id, 1, ctx, &dek)?;
        Ok((dek, wrapped))
    }
    fn decrypt_data_key(&self, _: &Principal, wrapped: &WrappedKey, ctx: &EncryptionContext) -> Result<SecretKey> {
        self.check(wrapped.key_id(), wrapped.version())?;
        kms_unwrap(&self.material, wrapped, ctx)
    }
    fn rewrap(&self, p: &Principal, wrapped: &WrappedKey, ctx: &EncryptionContext) -> Result<WrappedKey> {
        let dek = self.decrypt_data_key(p, wrapped, ctx)?;
        kms_wrap(&self.material, "fuzz", &self.id, 1, ctx, &dek)
    }
}

/// Key access through a [`FixedKms`], the same in every process.
pub fn access() -> &'static KeyAccess {
    static ACCESS: OnceLock<KeyAccess> = OnceLock::new();
    ACCESS.get_or_init(|| {
        let cache = KeyCache::new(Arc::new(FixedKms::default()), CacheOptions::default()).expect("default options");
        KeyAccess::new(
            Arc::new(cache),
            Principal::new("fuzz").expect("a valid principal"),
            "fuzzproject",
            "fuzztable",
        )
    })
}

/// A file made by the writer with the fixed key, from `rows` (used for seeds and the round trip).
pub fn write_file(alg: Algorithm, rows: &[(i64, Option<String>)], rg_rows: usize) -> Result<Vec<u8>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>())),
        ],
    )
    .map_err(|e| Error::Arrow(e.to_string()))?;
    let b = match alg.is_encrypted() {
        true => WriterOptions::encrypted(alg, access().clone(), KeyId::new(FUZZ_KEY)?),
        false => WriterOptions::plaintext(),
    };
    let opts = b.max_row_group_rows(rg_rows.max(1)).allow_legacy_rc4(true).build();
    let mut out = Vec::new();
    let mut w = FileWriter::try_new(&mut out, schema, opts)?;
    w.write(&batch)?;
    w.close()?;
    Ok(out)
}

/// What a reader of a fuzzing file expects: `alg`, and for an encrypted one the fixed key.
pub fn reader_options(alg: Algorithm) -> Result<ReaderOptions> {
    Ok(match alg.is_encrypted() {
        true => ReaderOptions::encrypted(alg, access().clone(), [KeyId::new(FUZZ_KEY)?]),
        false => ReaderOptions::plaintext(),
    })
}

/// Target `file_reader`: arbitrary bytes opened as a file with the fixed key and read in full.
/// The reader expects the algorithm the envelope names (when it decodes), so every algorithm's
/// path is reached; the algorithm check itself is covered by the tests.
pub fn file_reader(data: &[u8]) {
    let file = data.to_vec();
    let alg = match crate::read::read_envelope(&file) {
        Ok((info, _)) => info.envelope.algorithm,
        Err(_) => Algorithm::None,
    };
    let Ok(opts) = reader_options(alg) else { return };
    if let Ok(r) = FileReader::open(file, opts) {
        let _ = r.scan().build().and_then(|b| b.read_all());
    }
}

/// Makes the checksums of a `none` file agree with its bytes again: every chunk's segment
/// checksums and the footer's digest of them, then the footer body's checksum. Returns `None` for
/// bytes too broken to find the footer in (wrong length fields, an envelope that does not decode or
/// names an encrypted algorithm). Magic bytes are set, so mutations spend no time on them.
///
/// A mutated `none` file almost never passes its BLAKE3 checksums, so without this the Parquet
/// decoder behind them would never see hostile metadata or pages: with it, it sees little else.
pub fn reseal_plain(data: &[u8]) -> Option<Vec<u8>> {
    use crate::crypto::{plaintext_len, ChunkKind, ChunkSealer};
    use crate::format::footer::body_aad;
    use crate::format::{MAGIC, TRAILER_LEN};

    let mut file = data.to_vec();
    let len = file.len();
    if len < MAGIC.len() + TRAILER_LEN {
        return None;
    }
    file[..4].copy_from_slice(&MAGIC);
    file[len - 4..].copy_from_slice(&MAGIC);
    let trailer = &file[len - TRAILER_LEN..];
    let env_len = u32::from_be_bytes(trailer[0..4].try_into().ok()?) as usize;
    let body_len = u32::from_be_bytes(trailer[4..8].try_into().ok()?) as usize;
    let body_end = len - TRAILER_LEN;
    let body_start = body_end.checked_sub(body_len)?;
    let env_start = body_start.checked_sub(env_len)?;
    if env_start < MAGIC.len() || body_len < 32 {
        return None;
    }
    let env_bytes = file[env_start..body_start].to_vec();
    let envelope = Envelope::decode(&env_bytes).ok()?;
    if envelope.algorithm != Algorithm::None {
        return None;
    }
    let plain_end = body_end - 32;
    if let Ok(mut body) = FooterBody::decode(&file[body_start..plain_end]) {
        let dek = SecretKey::from_slice(&[0u8; 32]).ok()?;
        let leaves = (body.leaves as usize).max(1);
        for (i, entry) in body.chunks.iter_mut().enumerate() {
            let (Ok(off), Ok(n)) = (usize::try_from(entry.offset), usize::try_from(entry.len)) else {
                continue;
            };
            let Ok(plain) = plaintext_len(Algorithm::None, n) else {
                continue;
            };
            if off < MAGIC.len() || off.checked_add(n).is_none_or(|end| end > env_start) {
                continue;
            }
            let (rg, leaf) = ((i / leaves) as u32, (i % leaves) as u32);
            let Ok(sealer) = ChunkSealer::for_file(
                crate::crypto::default_provider(),
                Algorithm::None,
                &dek,
                envelope.file_id,
                leaf,
            ) else {
                continue;
            };
            let mut chunk = file[off..off + plain].to_vec();
            let Ok(tags) = sealer.seal_detached_here(rg, ChunkKind::Data, &mut chunk) else {
                continue;
            };
            if tags.len() == n - plain {
                file[off + plain..off + n].copy_from_slice(&tags);
                entry.tags_digest = *blake3::hash(&tags).as_bytes();
            }
        }
        let encoded = body.encode();
        if encoded.len() == plain_end - body_start {
            file[body_start..plain_end].copy_from_slice(&encoded);
        }
    }
    let aad = body_aad(&env_bytes, len as u64, body_len as u64);
    let tag = crate::crypto::chunk::blake3_tag(None, &aad, &file[body_start..plain_end]);
    file[plain_end..body_end].copy_from_slice(&tag);
    Some(file)
}

/// Target `plain_file`: arbitrary bytes made into a `none` file whose checksums hold
/// ([`reseal_plain`]), opened and read in full, and scanned with a pruning predicate, so the
/// Parquet metadata, statistics and page decoders see hostile input.
pub fn plain_file(data: &[u8]) {
    let Some(file) = reseal_plain(data) else { return };
    let Ok(r) = FileReader::open(file, ReaderOptions::plaintext()) else {
        return;
    };
    let _ = r.scan().build().and_then(|b| b.read_all());
    if let Some(f) = r.schema().fields().first() {
        let value: arrow::array::ArrayRef = Arc::new(Int64Array::from(vec![7]));
        let p = crate::read::Predicate::compare(f.name().clone(), crate::read::CmpOp::GtEq, value);
        let _ = r.scan().filter(p).build().and_then(|b| b.read_all());
    }
}

/// Target `footer_decoder`: arbitrary bytes as an envelope and as a footer body.
pub fn footer_decoder(data: &[u8]) {
    let _ = Envelope::decode(data);
    let _ = FooterBody::decode(data);
}

/// Target `manifest_decoder`: arbitrary bytes as a manifest body and as a sealed manifest.
pub fn manifest_decoder(data: &[u8]) {
    for format in 1..=3 {
        let _ = Manifest::decode_body(data, format);
    }
    let _ = Manifest::open(
        data,
        1,
        None,
        Some((access(), &[KeyId::new(FUZZ_KEY).expect("a valid id")])),
    );
    let _ = Manifest::sealed_key_version(data);
}

/// Target `wrapped_key`: arbitrary bytes as a wrapped key and as a data-key envelope, unwrapped.
pub fn wrapped_key(data: &[u8]) {
    let ctx = EncryptionContext::new().with("project", "fuzzproject");
    let p = Principal::new("fuzz").expect("a valid principal");
    if let Ok(w) = WrappedKey::from_bytes(data) {
        let _ = FixedKms::default().decrypt_data_key(&p, &w, &ctx);
    }
    if let Ok(env) = DataKeyEnvelope::from_bytes(data) {
        let _ = access().cache().open_data_key(&p, &env, &ctx, &ctx);
    }
}

/// The root key of the keystores the `keystore` target parses.
pub fn keystore_root() -> RootSecret {
    RootSecret::KeyFile(SecretKey::from_slice(&[0xa5; 32]).expect("32 bytes"))
}

/// Target `keystore`: arbitrary bytes as a keystore file, opened with the fixed root key.
pub fn keystore(data: &[u8]) {
    let Ok(dir) = tempfile_dir() else { return };
    let path = dir.join("keystore");
    if std::fs::write(&path, data).is_ok() {
        if let Ok(kms) = LocalKms::open(&path, keystore_root(), LocalKmsOptions::new()) {
            let _ = crate::kms::KmsAdmin::list(&kms);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let tag: String = crate::crypto::random_array::<8>()
        .map_err(|_| std::io::Error::other("no randomness"))?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = std::env::temp_dir().join(format!("colvault-fuzz-{tag}"));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

/// Target `round_trip`: rows made from arbitrary bytes, written with an algorithm and row-group size
/// the bytes choose, must read back equal. Panics if they do not.
pub fn round_trip(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let alg = Algorithm::ALL[(head & 3) as usize];
    let rg_rows = 1 + (head >> 2) as usize;
    let rows: Vec<(i64, Option<String>)> = rest
        .chunks(9)
        .map(|c| {
            let mut n = [0u8; 8];
            n[..c.len().min(8)].copy_from_slice(&c[..c.len().min(8)]);
            let s = c.get(8).map(|&b| "x".repeat(b as usize % 17));
            (i64::from_le_bytes(n), s)
        })
        .collect();
    let file = write_file(alg, &rows, rg_rows).expect("writing arbitrary rows works");
    let opts = reader_options(alg).expect("a valid key id");
    let r = FileReader::open(file, opts).expect("a file just written opens");
    let got = r
        .scan()
        .build()
        .and_then(|b| b.read_all())
        .expect("a file just written reads");
    let ids: Vec<i64> = got
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64")
                .values()
                .to_vec()
        })
        .collect();
    let names: Vec<Option<String>> = got
        .iter()
        .flat_map(|b| {
            let a = b.column(1).as_any().downcast_ref::<StringArray>().expect("utf8");
            a.iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        ids,
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "ids differ after a round trip"
    );
    assert_eq!(
        names,
        rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
        "names differ after a round trip"
    );
}

/// Reads every batch of an import, up to its first error.
fn drain(import: Result<crate::import::Import>) {
    if let Ok(i) = import {
        for b in i.batches {
            if b.is_err() {
                break;
            }
        }
    }
}

fn import_bytes(data: &[u8], format: crate::import::Format) {
    use crate::import::{open_bytes, CsvOptions, SchemaFrom};
    drain(open_bytes(
        bytes::Bytes::copy_from_slice(data),
        format,
        CsvOptions::default(),
        SchemaFrom::Infer,
    ));
}

/// Target `import_csv`: arbitrary bytes imported as CSV with a header (schema inferred).
pub fn import_csv(data: &[u8]) {
    import_bytes(data, crate::import::Format::Csv);
}

/// Target `import_jsonl`: arbitrary bytes imported as JSON lines (schema inferred).
pub fn import_jsonl(data: &[u8]) {
    import_bytes(data, crate::import::Format::Jsonl);
}

/// Target `import_ipc`: arbitrary bytes imported as Arrow IPC (file or stream, by the magic).
pub fn import_ipc(data: &[u8]) {
    import_bytes(data, crate::import::Format::Ipc);
}

/// Target `import_parquet`: arbitrary bytes imported as Parquet.
pub fn import_parquet(data: &[u8]) {
    import_bytes(data, crate::import::Format::Parquet);
}
