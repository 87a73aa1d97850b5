//! colvault beside the `parquet` crate, measured in one process, contenders interleaved run by run.
//!
//! ```sh
//! cargo bench --bench compare                      # 2,000,000 rows, 5 runs: about 15 minutes here
//! cargo bench --bench compare -- --rows 200000 --runs 2    # a quick pass
//! cargo bench --bench compare -- --readme README.md        # also replace the README's table
//! ```
//!
//! Contenders, all with the writer settings printed in the report: plaintext Parquet through
//! `ArrowWriter` and `ParquetRecordBatchReader`; plaintext Parquet written with the crate's own
//! per-column writers on rayon and read row group by row group in parallel; Parquet modular
//! encryption (AES-GCM, an encrypted footer and a key per column) through the same parallel path;
//! colvault with each of its four algorithms. Each with zstd level 1 and with snappy, each in a
//! rayon pool of all threads and of one. Throughput is MB/s of Arrow data (the sum of the input's
//! buffer lengths), CPU time is the process's user + system time, memory is the peak of heap bytes
//! (a counting allocator) above what was live when the step began.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayData, RecordBatch};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowRowGroupWriterFactory};
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter, ArrowWriter, ProjectionMask};
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::encryption::decrypt::FileDecryptionProperties;
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::SerializedFileWriter;
use rayon::prelude::*;

use colvault::crypto::{default_provider, ring::Ring, Algorithm, CipherProvider, SecretKey};
use colvault::format::ReadAt;
use colvault::kms::{
    CacheOptions, CreateKeyRequest, EncryptionContext, KeyCache, KeyId, Kms, KmsAdmin, LocalKms, LocalKmsOptions,
    Principal, RootSecret, WrappedKey,
};
use colvault::sample::SampleTable;
use colvault::{Compression, FileReader, FileWriter, KeyAccess, ReaderOptions, WriterOptions};

// ---------------------------------------------------------------------------------------------
// Measuring: a counting allocator, CPU time.

struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Starts a peak measurement: returns the live bytes now.
fn peak_start() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

fn peak_since(base: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Wall and CPU time of `f`, and the peak heap above the start.
fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, f64, usize) {
    let base = peak_start();
    let (c0, t0) = (cpu_time(), Instant::now());
    let out = f();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_time() - c0).as_secs_f64();
    (out, wall, cpu, peak_since(base))
}

/// The Arrow size of a batch: the sum of its buffers' lengths, children and null buffers included.
fn arrow_bytes(batch: &RecordBatch) -> usize {
    fn data(d: &ArrayData) -> usize {
        d.buffers().iter().map(|b| b.len()).sum::<usize>()
            + d.nulls().map(|n| n.buffer().len()).unwrap_or(0)
            + d.child_data().iter().map(data).sum::<usize>()
    }
    batch.columns().iter().map(|c| data(&c.to_data())).sum()
}

// ---------------------------------------------------------------------------------------------
// Contenders.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    ArrowWriter,
    ParallelParquet,
    /// PME through the plain `ArrowWriter` and reader (what PME users run today).
    PmeArrowWriter,
    /// PME through the parallel column writers and row-group-parallel reads.
    Pme,
    /// colvault with an algorithm and a cipher provider.
    Colvault(Algorithm, Provider),
}

/// Which colvault cipher provider a contender uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Provider {
    /// The default, `aws-lc-rs`.
    Default,
    /// `ring` (opt-in: faster AES-GCM on VAES CPUs, key schedule not wiped).
    Ring,
}

impl Provider {
    fn get(self) -> &'static dyn CipherProvider {
        match self {
            Provider::Default => default_provider(),
            Provider::Ring => &Ring,
        }
    }
}

impl Contender {
    fn all() -> Vec<Contender> {
        let mut v = vec![
            Contender::ArrowWriter,
            Contender::ParallelParquet,
            Contender::PmeArrowWriter,
            Contender::Pme,
        ];
        v.extend(
            [
                Algorithm::Aes256Gcm,
                Algorithm::Aes256Ctr,
                Algorithm::Rc4,
                Algorithm::None,
            ]
            .map(|a| Contender::Colvault(a, Provider::Default)),
        );
        v.push(Contender::Colvault(Algorithm::Aes256Gcm, Provider::Ring));
        v
    }
    fn name(self) -> String {
        match self {
            Contender::ArrowWriter => "parquet ArrowWriter".into(),
            Contender::ParallelParquet => "parquet parallel".into(),
            Contender::PmeArrowWriter => "parquet PME ArrowWriter (AES-GCM)".into(),
            Contender::Pme => "parquet PME parallel (AES-GCM)".into(),
            Contender::Colvault(a, Provider::Default) => format!("colvault {}", a.name()),
            Contender::Colvault(a, Provider::Ring) => format!("colvault {} [ring]", a.name()),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Codec {
    Zstd1,
    Snappy,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Zstd1 => "zstd(1)",
            Codec::Snappy => "snappy",
        }
    }
    fn parquet(self) -> PqCompression {
        match self {
            Codec::Zstd1 => PqCompression::ZSTD(ZstdLevel::try_new(1).expect("level 1")),
            Codec::Snappy => PqCompression::SNAPPY,
        }
    }
    fn colvault(self) -> Compression {
        match self {
            Codec::Zstd1 => Compression::Zstd(1),
            Codec::Snappy => Compression::Snappy,
        }
    }
}

const ROW_GROUP_ROWS: usize = 1 << 20;
const BATCH_ROWS: usize = 65_536;
const READ_BATCH_ROWS: usize = 8192;

/// The one set of writer properties every Parquet contender uses (colvault builds the same from
/// its options: see `src/write.rs`).
fn parquet_props(codec: Codec, encryption: Option<Arc<FileEncryptionProperties>>) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(codec.parquet())
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_offset_index_disabled(true)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    if let Some(e) = encryption {
        b = b.with_file_encryption_properties(e);
    }
    b.build()
}

/// Keys of the PME contender: a footer key and one key per column.
struct PmeKeys {
    footer: Vec<u8>,
    columns: Vec<(String, Vec<u8>)>,
}

impl PmeKeys {
    fn new(schema: &SchemaRef) -> Self {
        let key = || {
            SecretKey::generate()
                .unwrap()
                .insecure_expose_for_test_vectors()
                .to_vec()
        };
        PmeKeys {
            footer: key(),
            columns: schema.fields().iter().map(|f| (f.name().clone(), key())).collect(),
        }
    }
    fn encryption(&self) -> Arc<FileEncryptionProperties> {
        let mut b = FileEncryptionProperties::builder(self.footer.clone());
        for (name, k) in &self.columns {
            b = b.with_column_key(name, k.clone());
        }
        b.build().unwrap()
    }
    fn decryption(&self) -> Arc<FileDecryptionProperties> {
        let mut b = FileDecryptionProperties::builder(self.footer.clone());
        for (name, k) in &self.columns {
            b = b.with_column_key(name, k.clone());
        }
        b.build().unwrap()
    }
}

/// A KMS wrapper that counts round trips.
struct CountingKms {
    inner: Arc<LocalKms>,
    calls: AtomicUsize,
}

impl Kms for CountingKms {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn generate_data_key(
        &self,
        p: &Principal,
        key: &KeyId,
        ctx: &EncryptionContext,
    ) -> colvault::Result<(SecretKey, WrappedKey)> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.generate_data_key(p, key, ctx)
    }
    fn decrypt_data_key(&self, p: &Principal, w: &WrappedKey, ctx: &EncryptionContext) -> colvault::Result<SecretKey> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.decrypt_data_key(p, w, ctx)
    }
    fn rewrap(&self, p: &Principal, w: &WrappedKey, ctx: &EncryptionContext) -> colvault::Result<WrappedKey> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.rewrap(p, w, ctx)
    }
}

struct Env {
    _dir: tempfile::TempDir,
    kms: Arc<CountingKms>,
    project: Principal,
    cmk: KeyId,
    access: KeyAccess,
    pme: PmeKeys,
}

impl Env {
    fn new(schema: &SchemaRef) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(
            LocalKms::create(
                dir.path().join("keystore"),
                RootSecret::KeyFile(SecretKey::generate().unwrap()),
                LocalKmsOptions::new(),
            )
            .unwrap(),
        );
        let project = Principal::new("prj-bench").unwrap();
        let cmk = local
            .create_key(CreateKeyRequest::project_default(project.clone()))
            .unwrap()
            .id;
        let kms = Arc::new(CountingKms {
            inner: local,
            calls: AtomicUsize::new(0),
        });
        let access = Env::access_for(&kms, &project);
        Env {
            _dir: dir,
            kms,
            project,
            cmk,
            access,
            pme: PmeKeys::new(schema),
        }
    }
    fn access_for(kms: &Arc<CountingKms>, project: &Principal) -> KeyAccess {
        let cache = KeyCache::new(kms.clone(), CacheOptions::default()).unwrap();
        KeyAccess::new(Arc::new(cache), project.clone(), "prj-bench", "tbl-bench")
    }
    fn colvault_options(&self, alg: Algorithm, provider: Provider, codec: Codec) -> WriterOptions {
        let b = if alg.is_encrypted() {
            WriterOptions::encrypted(alg, self.access.clone(), self.cmk.clone()).allow_legacy_rc4(alg == Algorithm::Rc4)
        } else {
            WriterOptions::plaintext()
        };
        b.cipher_provider(provider.get())
            .compression(codec.colvault())
            .max_row_group_rows(ROW_GROUP_ROWS)
            .dictionary(true)
            .statistics(true)
            .build()
    }
    fn reader_options(&self, alg: Algorithm, provider: Provider) -> ReaderOptions {
        let opts = if alg.is_encrypted() {
            ReaderOptions::encrypted(alg, self.access.clone(), [self.cmk.clone()])
        } else {
            ReaderOptions::plaintext()
        };
        opts.cipher_provider(provider.get())
    }
}

/// Peak heap while contender `c` writes `rows` rows from the streaming generator into a sink that
/// keeps only a count: the writer's own state plus one generated batch.
fn streaming_write_peak(c: Contender, pool: &rayon::ThreadPool, rows: usize, schema: &SchemaRef, env: &Env) -> usize {
    let batches = SampleTable::new(rows, 42).batches(BATCH_ROWS);
    pool.install(|| measure(|| write(c, Codec::Zstd1, schema, batches, std::io::sink(), env)))
        .3
}

/// Writes `batches` (from any iterator) with contender `c` into `sink`; returns the sink.
fn write<W: Write + Send>(
    c: Contender,
    codec: Codec,
    schema: &SchemaRef,
    batches: impl Iterator<Item = RecordBatch>,
    sink: W,
    env: &Env,
) -> W {
    match c {
        Contender::ArrowWriter | Contender::PmeArrowWriter => {
            let enc = (c == Contender::PmeArrowWriter).then(|| env.pme.encryption());
            let mut w = ArrowWriter::try_new(sink, schema.clone(), Some(parquet_props(codec, enc))).unwrap();
            for b in batches {
                w.write(&b).unwrap();
            }
            w.into_inner().unwrap()
        }
        Contender::ParallelParquet | Contender::Pme => {
            let enc = (c == Contender::Pme).then(|| env.pme.encryption());
            write_parallel_parquet(codec, schema, batches, sink, enc)
        }
        Contender::Colvault(alg, provider) => {
            let mut w = FileWriter::try_new(sink, schema.clone(), env.colvault_options(alg, provider, codec)).unwrap();
            for b in batches {
                w.write(&b).unwrap();
            }
            w.close_into_sink().unwrap().1
        }
    }
}

/// The fastest plaintext writer the `parquet` crate allows: every leaf column of a row group
/// encoded by its own `ArrowColumnWriter` on rayon, the chunks appended in order.
fn write_parallel_parquet<W: Write + Send>(
    codec: Codec,
    schema: &SchemaRef,
    batches: impl Iterator<Item = RecordBatch>,
    sink: W,
    enc: Option<Arc<FileEncryptionProperties>>,
) -> W {
    let mut props = parquet_props(codec, enc);
    add_encoded_arrow_schema_to_metadata(schema, &mut props);
    let props = Arc::new(props);
    let pq_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(schema)
        .unwrap();
    let mut writer = SerializedFileWriter::new(sink, pq_schema.root_schema_ptr(), props).unwrap();
    let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    let mut rg = 0;
    // Leaf column -> (field, index of the leaf within the field).
    let leaf_of: Vec<(usize, usize)> = schema
        .fields()
        .iter()
        .enumerate()
        .flat_map(|(i, f)| (0..parquet_leaf_count(f.data_type())).map(move |j| (i, j)))
        .collect();
    let mut flush = |pending: &mut Vec<RecordBatch>, writer: &mut SerializedFileWriter<W>| {
        let mut cols = factory.create_column_writers(rg).unwrap();
        rg += 1;
        let batches = std::mem::take(pending);
        // One rayon task per leaf column: its leaves of every batch, encoded by its own writer.
        cols.par_iter_mut()
            .zip(leaf_of.par_iter())
            .for_each(|(w, &(field, j))| {
                for b in &batches {
                    let mut leaves = compute_leaves(schema.field(field), b.column(field)).unwrap();
                    w.write(&leaves.swap_remove(j)).unwrap();
                }
            });
        let mut rgw = writer.next_row_group().unwrap();
        for w in cols {
            w.close().unwrap().append_to_row_group(&mut rgw).unwrap();
        }
        rgw.close().unwrap();
    };
    for b in batches {
        let mut b = b;
        while b.num_rows() > 0 {
            let take = (ROW_GROUP_ROWS - pending_rows).min(b.num_rows());
            pending.push(b.slice(0, take));
            pending_rows += take;
            b = b.slice(take, b.num_rows() - take);
            if pending_rows == ROW_GROUP_ROWS {
                flush(&mut pending, &mut writer);
                pending_rows = 0;
            }
        }
    }
    if pending_rows > 0 {
        flush(&mut pending, &mut writer);
    }
    writer.into_inner().unwrap()
}

fn parquet_leaf_count(dt: &arrow::datatypes::DataType) -> usize {
    use arrow::datatypes::DataType as T;
    match dt {
        T::Struct(fs) => fs.iter().map(|f| parquet_leaf_count(f.data_type())).sum(),
        T::List(f) | T::LargeList(f) | T::FixedSizeList(f, _) | T::Map(f, _) => parquet_leaf_count(f.data_type()),
        _ => 1,
    }
}

/// Bytes with a count of what a reader fetched.
#[derive(Clone)]
struct Counted {
    data: Bytes,
    read: Arc<AtomicU64>,
}

impl Counted {
    fn new(data: Bytes) -> Self {
        Counted {
            data,
            read: Arc::new(AtomicU64::new(0)),
        }
    }
    fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

impl Length for Counted {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

struct CountingRead {
    inner: bytes::buf::Reader<Bytes>,
    read: Arc<AtomicU64>,
}

impl Read for CountingRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl ChunkReader for Counted {
    type T = CountingRead;
    fn get_read(&self, start: u64) -> parquet::errors::Result<CountingRead> {
        use bytes::Buf;
        Ok(CountingRead {
            inner: self.data.slice(start as usize..).reader(),
            read: self.read.clone(),
        })
    }
    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.read.fetch_add(length as u64, Ordering::Relaxed);
        Ok(self.data.slice(start as usize..start as usize + length))
    }
}

impl ReadAt for Counted {
    fn len(&self) -> colvault::Result<u64> {
        Ok(self.data.len() as u64)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> colvault::Result<()> {
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.data.read_exact_at(offset, buf)
    }
    fn read_into(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> colvault::Result<()> {
        self.read.fetch_add(len as u64, Ordering::Relaxed);
        self.data.read_into(offset, len, buf)
    }
}

/// Reads `file` (all columns, or one) with contender `c`, dropping batches as they come unless
/// `keep`; returns the rows read and the kept batches.
fn read(c: Contender, file: &Counted, column: Option<usize>, keep: bool, env: &Env) -> (usize, Vec<RecordBatch>) {
    let drain = |batches: &mut dyn Iterator<Item = RecordBatch>| {
        let (mut rows, mut kept) = (0, Vec::new());
        for b in batches {
            rows += b.num_rows();
            if keep {
                kept.push(b);
            }
        }
        (rows, kept)
    };
    match c {
        Contender::ArrowWriter | Contender::PmeArrowWriter => {
            let mut opts = ArrowReaderOptions::new();
            if c == Contender::PmeArrowWriter {
                opts = opts.with_file_decryption_properties(env.pme.decryption());
            }
            let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file.clone(), opts)
                .unwrap()
                .with_batch_size(READ_BATCH_ROWS);
            let builder = match column {
                Some(i) => {
                    let m = ProjectionMask::roots(builder.parquet_schema(), [i]);
                    builder.with_projection(m)
                }
                None => builder,
            };
            drain(&mut builder.build().unwrap().map(|b| b.unwrap()))
        }
        Contender::ParallelParquet | Contender::Pme => {
            let mut opts = ArrowReaderOptions::new();
            if c == Contender::Pme {
                opts = opts.with_file_decryption_properties(env.pme.decryption());
            }
            let md = ArrowReaderMetadata::load(file, opts).unwrap();
            let parts: Vec<(usize, Vec<RecordBatch>)> = (0..md.metadata().num_row_groups())
                .into_par_iter()
                .map(|rg| {
                    let b = ParquetRecordBatchReaderBuilder::new_with_metadata(file.clone(), md.clone())
                        .with_row_groups(vec![rg])
                        .with_batch_size(READ_BATCH_ROWS);
                    let b = match column {
                        Some(i) => {
                            let m = ProjectionMask::roots(b.parquet_schema(), [i]);
                            b.with_projection(m)
                        }
                        None => b,
                    };
                    drain(&mut b.build().unwrap().map(|b| b.unwrap()))
                })
                .collect();
            let rows = parts.iter().map(|p| p.0).sum();
            (rows, parts.into_iter().flat_map(|p| p.1).collect())
        }
        Contender::Colvault(alg, provider) => {
            let r = FileReader::open(file.clone(), env.reader_options(alg, provider)).unwrap();
            let scan = r.scan().batch_size(READ_BATCH_ROWS);
            let scan = match column {
                Some(i) => scan.project(vec![i]),
                None => scan,
            };
            drain(&mut scan.build().unwrap().map(|b| b.unwrap()))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Args {
    rows: usize,
    runs: usize,
    readme: Option<PathBuf>,
    /// Profiling aid: only contenders whose name contains one of these (comma-separated), only this thread count, and a
    /// short report.
    only: Option<String>,
    threads: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        rows: 2_000_000,
        runs: 5,
        readme: None,
        only: None,
        threads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rows" => a.rows = it.next().and_then(|v| v.parse().ok()).expect("--rows N"),
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--readme" => a.readme = Some(it.next().expect("--readme PATH").into()),
            "--only" => a.only = Some(it.next().expect("--only NAME")),
            "--threads" => a.threads = it.next().and_then(|v| v.parse().ok()),
            "--bench" => {}
            other => panic!(
                "unknown argument {other:?}: expected --rows N, --runs N, --readme PATH, --only NAME, --threads N"
            ),
        }
    }
    assert!(a.rows > 0 && a.runs > 0, "--rows and --runs must be positive");
    a
}

#[derive(Default, Clone)]
struct Samples {
    write_s: Vec<f64>,
    write_cpu: Vec<f64>,
    read_s: Vec<f64>,
    read_cpu: Vec<f64>,
    /// Per column: seconds of each run.
    proj_s: Vec<Vec<f64>>,
    proj_bytes: Vec<u64>,
    proj_expected: Vec<u64>,
    size: usize,
    write_peak: usize,
    read_peak: usize,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> f64 {
    // Half the range over the median, in percent.
    let lo = v.iter().copied().fold(f64::MAX, f64::min);
    let hi = v.iter().copied().fold(f64::MIN, f64::max);
    50.0 * (hi - lo) / median(v)
}

/// For colvault files: each column's sealed chunks plus the footer and the leading magic.
fn expected_colvault_column_bytes(file: &Counted, env: &Env, alg: Algorithm, leaves: usize) -> Vec<u64> {
    let r = FileReader::open(file.clone(), env.reader_options(alg, Provider::Default)).unwrap();
    let mut per_leaf = vec![0u64; leaves];
    for rg in 0..r.num_row_groups() {
        for (l, len) in r.chunk_lengths(rg).into_iter().enumerate() {
            per_leaf[l] += len;
        }
    }
    // Everything that is not a chunk: the 4-byte leading magic (checked on open) and the footer.
    let chunks: u64 = per_leaf.iter().sum();
    let rest = r.file_len() - chunks;
    per_leaf.into_iter().map(|c| c + rest).collect()
}

/// For Parquet files: each column's chunks plus the footer (metadata, its length and the magic).
fn expected_parquet_column_bytes(file: &Counted) -> Vec<u64> {
    let md = ArrowReaderMetadata::load(file, ArrowReaderOptions::new()).unwrap();
    let meta = md.metadata();
    let n = meta.file_metadata().schema_descr().num_columns();
    let mut per = vec![0u64; n];
    let mut end = 0u64;
    for rg in meta.row_groups() {
        for (i, c) in rg.columns().iter().enumerate() {
            let (start, len) = c.byte_range();
            per[i] += len;
            end = end.max(start + len);
        }
    }
    let footer = file.data.len() as u64 - end;
    per.into_iter().map(|c| c + footer).collect()
}

fn main() {
    let a = args();
    let threads_all = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut thread_counts = vec![threads_all];
    if threads_all > 1 {
        thread_counts.push(1);
    }
    let pools: Vec<(usize, rayon::ThreadPool)> = thread_counts
        .iter()
        .map(|&n| (n, rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap()))
        .collect();
    let schema = SampleTable::schema();
    let input: Vec<RecordBatch> = SampleTable::new(a.rows, 42).batches(BATCH_ROWS).collect();
    let arrow_size: usize = input.iter().map(arrow_bytes).sum();
    let whole = arrow::compute::concat_batches(&schema, &input).unwrap();
    let env = Env::new(&schema);
    let ncols = schema.fields().len();
    let mb = arrow_size as f64 / 1e6;

    let configs: Vec<(Contender, Codec, usize)> = Contender::all()
        .into_iter()
        .flat_map(|c| [Codec::Zstd1, Codec::Snappy].map(|k| (c, k)))
        .flat_map(|(c, k)| thread_counts.iter().map(move |&t| (c, k, t)))
        .filter(|(c, _, _)| {
            a.only
                .as_ref()
                .is_none_or(|o| o.split(",").any(|o| c.name().contains(o)))
        })
        .filter(|(_, _, t)| a.threads.is_none_or(|n| n == *t))
        .collect();
    let partial = a.only.is_some() || a.threads.is_some();
    let mut samples: Vec<Samples> = vec![Samples::default(); configs.len()];
    for s in samples.iter_mut() {
        s.proj_s = vec![Vec::new(); ncols];
    }
    eprintln!(
        "{} rows, {:.1} MB of Arrow data, {} configurations x {} runs",
        a.rows,
        mb,
        configs.len(),
        a.runs
    );
    let started = Instant::now();
    for run in 0..a.runs {
        for (ci, &(c, codec, threads)) in configs.iter().enumerate() {
            let pool = &pools.iter().find(|(n, _)| *n == threads).unwrap().1;
            let s = &mut samples[ci];
            let (file, wall, cpu, peak) = pool.install(|| {
                measure(|| {
                    let out = write(c, codec, &schema, input.iter().cloned(), Vec::new(), &env);
                    Bytes::from(out)
                })
            });
            s.write_s.push(wall);
            s.write_cpu.push(cpu);
            s.write_peak = s.write_peak.max(peak);
            s.size = file.len();
            let file = Counted::new(file);
            let ((rows, kept), wall, cpu, peak) = pool.install(|| measure(|| read(c, &file, None, false, &env)));
            assert_eq!(rows, a.rows, "{}: rows read back", c.name());
            drop(kept);
            s.read_s.push(wall);
            s.read_cpu.push(cpu);
            s.read_peak = s.read_peak.max(peak);
            if run == 0 {
                // Check once that every contender reads back exactly what was written.
                let (_, kept) = pool.install(|| read(c, &file, None, true, &env));
                let back = arrow::compute::concat_batches(&schema, &kept).unwrap();
                assert_eq!(back, whole, "{} {} read back different data", c.name(), codec.name());
                s.proj_expected = match c {
                    Contender::Colvault(alg, _) => expected_colvault_column_bytes(&file, &env, alg, ncols),
                    Contender::Pme | Contender::PmeArrowWriter => vec![0; ncols],
                    _ => expected_parquet_column_bytes(&file),
                };
                s.proj_bytes = vec![0; ncols];
            }
            for col in 0..ncols {
                let f = Counted::new(file.data.clone());
                let ((rows, _), wall, _, _) = pool.install(|| measure(|| read(c, &f, Some(col), false, &env)));
                assert_eq!(rows, a.rows);
                s.proj_s[col].push(wall);
                s.proj_bytes[col] = f.bytes_read();
            }
        }
        eprintln!(
            "run {} of {} done after {:.0} s",
            run + 1,
            a.runs,
            started.elapsed().as_secs_f64()
        );
    }

    if partial {
        for (i, &(c, k, t)) in configs.iter().enumerate() {
            let s = &samples[i];
            println!(
                "{} {} {t} threads: write {:.0} MB/s ({:.2} CPU s), read {:.0} MB/s ({:.2} CPU s, peak {:.0} MiB)",
                c.name(),
                k.name(),
                mb / median(&s.write_s),
                median(&s.write_cpu),
                mb / median(&s.read_s),
                median(&s.read_cpu),
                s.read_peak as f64 / (1u64 << 20) as f64
            );
        }
        let mut shown: Vec<Contender> = configs.iter().map(|c| c.0).collect();
        shown.dedup();
        for c in shown {
            let peak = streaming_write_peak(c, &pools[0].1, a.rows, &schema, &env);
            println!(
                "{}: streaming write peak {:.0} MiB (zstd(1), {} threads)",
                c.name(),
                peak as f64 / (1u64 << 20) as f64,
                pools[0].0
            );
        }
        return;
    }

    // Streaming memory: the generator feeds the writer batch by batch into a sink that keeps only
    // a count, so the peak is the writer's own state plus one generated batch.
    let stream_peak: Vec<(Contender, usize)> = Contender::all()
        .into_iter()
        .map(|c| (c, streaming_write_peak(c, &pools[0].1, a.rows, &schema, &env)))
        .collect();
    let rg_arrow = (arrow_size as f64 * (ROW_GROUP_ROWS.min(a.rows) as f64 / a.rows as f64)) as usize;

    // KMS round trips: 1,000 small files under one CMK through one fresh key cache.
    let kms_before = env.kms.calls.load(Ordering::SeqCst);
    let fresh = Env::access_for(&env.kms, &env.project);
    let small = SampleTable::new(10, 1).batches(10).next().unwrap();
    for _ in 0..1000 {
        let opts = WriterOptions::encrypted(Algorithm::Aes256Gcm, fresh.clone(), env.cmk.clone()).build();
        let mut w = FileWriter::try_new(Vec::new(), schema.clone(), opts).unwrap();
        w.write(&small).unwrap();
        w.close().unwrap();
    }
    let kms_calls = env.kms.calls.load(Ordering::SeqCst) - kms_before;

    let report = report(&ReportInput {
        a: &a,
        arrow_size,
        configs: &configs,
        samples: &samples,
        threads_all,
        stream_peak: &stream_peak,
        rg_arrow,
        kms_calls,
        schema: &schema,
    });
    println!("{report}");
    if let Some(path) = &a.readme {
        replace_in_readme(path, &report);
        eprintln!("replaced the performance table in {}", path.display());
    }
}

struct ReportInput<'a> {
    a: &'a Args,
    arrow_size: usize,
    configs: &'a [(Contender, Codec, usize)],
    samples: &'a [Samples],
    threads_all: usize,
    stream_peak: &'a [(Contender, usize)],
    rg_arrow: usize,
    kms_calls: usize,
    schema: &'a SchemaRef,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn report(r: &ReportInput<'_>) -> String {
    let mb = r.arrow_size as f64 / 1e6;
    let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
    let find = |c: Contender, k: Codec, t: usize| {
        r.configs
            .iter()
            .position(|&x| x == (c, k, t))
            .map(|i| &r.samples[i])
            .unwrap()
    };
    let mut o = String::new();
    let cmd = if r.a.rows == 2_000_000 && r.a.runs == 5 {
        "cargo bench --bench compare".to_string()
    } else {
        format!("cargo bench --bench compare -- --rows {} --runs {}", r.a.rows, r.a.runs)
    };
    writeln!(
        o,
        "Measured {} on {} ({} threads) with `{cmd}`: {} rows of the sample table \
         ({:.1} MB of Arrow data), {} runs, contenders interleaved run by run.\n",
        today(),
        cpu_model(),
        r.threads_all,
        r.a.rows,
        mb,
        r.a.runs
    )
    .unwrap();
    writeln!(
        o,
        "Writer settings, the same for every contender: row groups of {ROW_GROUP_ROWS} rows, input batches of \
         {BATCH_ROWS} rows, dictionary encoding on, chunk-level statistics, no offset index, parquet's default \
         page sizes, codec as listed; reads in batches of {READ_BATCH_ROWS} rows. MB/s is Arrow data \
         (the sum of buffer lengths) over wall time: median and ± half the range over the median. CPU is \
         user + system seconds (median). Peak is heap bytes above those live at the start, while \
         writing into a `Vec` (the file itself included) and while reading (batches dropped as they come).\n"
    )
    .unwrap();
    writeln!(
        o,
        "| contender | codec | threads | write MB/s | read MB/s | write CPU s | read CPU s | file MB | write peak MiB | read peak MiB |"
    )
    .unwrap();
    writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    for (i, &(c, k, t)) in r.configs.iter().enumerate() {
        let s = &r.samples[i];
        let w: Vec<f64> = s.write_s.iter().map(|x| mb / x).collect();
        let rd: Vec<f64> = s.read_s.iter().map(|x| mb / x).collect();
        writeln!(
            o,
            "| {} | {} | {} | {:.0} ±{:.0}% | {:.0} ±{:.0}% | {:.2} | {:.2} | {:.1} | {:.0} | {:.0} |",
            c.name(),
            k.name(),
            t,
            median(&w),
            spread(&w),
            median(&rd),
            spread(&rd),
            median(&s.write_cpu),
            median(&s.read_cpu),
            s.size as f64 / 1e6,
            mib(s.write_peak),
            mib(s.read_peak),
        )
        .unwrap();
    }

    // Ratios of medians.
    let ratio = |a: &[f64], b: &[f64]| median(b) / median(a); // throughput ratio from times a (ours) vs b
    let t = r.threads_all;
    let mut targets: Vec<(String, f64, String, bool)> = Vec::new();
    for k in [Codec::Zstd1, Codec::Snappy] {
        let par = find(Contender::ParallelParquet, k, t);
        let pmes = [
            ("PME parallel", find(Contender::Pme, k, t)),
            ("PME ArrowWriter", find(Contender::PmeArrowWriter, k, t)),
        ];
        // The targets are for the default provider; `aes256 [ring]` shows what the opt-in provider
        // reaches against the same bars.
        let gcm = Contender::Colvault(Algorithm::Aes256Gcm, Provider::Default);
        let ctr = Contender::Colvault(Algorithm::Aes256Ctr, Provider::Default);
        let ring = Contender::Colvault(Algorithm::Aes256Gcm, Provider::Ring);
        let label = |c: Contender| c.name().trim_start_matches("colvault ").to_string();
        for (c, min) in [(gcm, 0.95), (ctr, 0.85), (ring, 0.95)] {
            let cv = find(c, k, t);
            let alg = label(c);
            for (what, ours, theirs) in [("write", &cv.write_s, &par.write_s), ("read", &cv.read_s, &par.read_s)] {
                let x = ratio(ours, theirs);
                targets.push((
                    format!("{alg} {what}, {t} threads, {}: / parquet parallel", k.name()),
                    x,
                    format!(">= {min}"),
                    x >= min,
                ));
            }
            for (pme_name, pme) in &pmes {
                for (what, ours, theirs) in [("write", &cv.write_s, &pme.write_s), ("read", &cv.read_s, &pme.read_s)] {
                    let x = ratio(ours, theirs);
                    targets.push((
                        format!("{alg} {what}, {t} threads, {}: / {pme_name}", k.name()),
                        x,
                        ">= 1.3".into(),
                        x >= 1.3,
                    ));
                }
            }
        }
        if t > 1 {
            let aw = find(Contender::ArrowWriter, k, 1);
            for (c, max) in [(gcm, 1.05), (ctr, 1.15), (ring, 1.05)] {
                let cv = find(c, k, 1);
                let alg = label(c);
                for (what, ours, theirs) in [
                    ("write", &cv.write_cpu, &aw.write_cpu),
                    ("read", &cv.read_cpu, &aw.read_cpu),
                ] {
                    let x = median(ours) / median(theirs);
                    targets.push((
                        format!("{alg} {what} CPU, 1 thread, {}: / ArrowWriter", k.name()),
                        x,
                        format!("<= {max}"),
                        x <= max,
                    ));
                }
            }
        }
    }
    writeln!(o, "\nProjection reads of one column, zstd(1), {t} threads (median ms; ratios are over the faster of the two parquet reads; bytes read by the reader, and that column's chunks plus the footer):\n").unwrap();
    writeln!(
        o,
        "| column | parquet ms | parquet parallel ms | colvault aes256 ms | ratio | colvault aesctr ms | ratio | aes256 bytes read | chunks + footer + magic |"
    )
    .unwrap();
    writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    let pq = find(Contender::ArrowWriter, Codec::Zstd1, t);
    let pq_par = find(Contender::ParallelParquet, Codec::Zstd1, t);
    let gcm = find(
        Contender::Colvault(Algorithm::Aes256Gcm, Provider::Default),
        Codec::Zstd1,
        t,
    );
    let ctr = find(
        Contender::Colvault(Algorithm::Aes256Ctr, Provider::Default),
        Codec::Zstd1,
        t,
    );
    let mut worst: (f64, String) = (0.0, String::new());
    for (i, f) in r.schema.fields().iter().enumerate() {
        let (p1, p2) = (median(&pq.proj_s[i]), median(&pq_par.proj_s[i]));
        let p = p1.min(p2);
        let g = median(&gcm.proj_s[i]);
        let c = median(&ctr.proj_s[i]);
        for x in [g / p, c / p] {
            if x > worst.0 {
                worst = (x, f.name().clone());
            }
        }
        writeln!(
            o,
            "| {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {} | {} |",
            f.name(),
            p1 * 1e3,
            p2 * 1e3,
            g * 1e3,
            g / p,
            c * 1e3,
            c / p,
            gcm.proj_bytes[i],
            gcm.proj_expected[i]
        )
        .unwrap();
    }
    targets.push((
        format!(
            "worst one-column read / parquet's faster ({}), zstd(1), {t} threads",
            worst.1
        ),
        worst.0,
        "<= 1.15".into(),
        worst.0 <= 1.15,
    ));
    let exact = [gcm, ctr]
        .iter()
        .all(|s| s.proj_bytes.iter().zip(&s.proj_expected).all(|(a, b)| a == b));
    targets.push((
        "one-column reads fetch exactly the column's chunks and the footer".into(),
        exact as u8 as f64,
        "1 (yes)".into(),
        exact,
    ));
    let budget = r.rg_arrow + (64 << 20);
    writeln!(
        o,
        "\nPeak heap while writing the table from the streaming generator into a discarding sink (zstd(1), {t} threads); \
         the target is one row group of Arrow data ({:.0} MiB) plus 64 MiB = {:.0} MiB:\n",
        mib(r.rg_arrow),
        mib(budget)
    )
    .unwrap();
    writeln!(o, "| contender | peak MiB |\n|---|---:|").unwrap();
    for (c, p) in r.stream_peak {
        writeln!(o, "| {} | {:.0} |", c.name(), mib(*p)).unwrap();
        if let Contender::Colvault(..) = c {
            targets.push((
                format!("streaming write peak, {}, MiB", c.name()),
                mib(*p),
                format!("<= {:.0}", mib(budget)),
                *p <= budget,
            ));
        }
    }
    targets.push((
        "KMS round trips for 1,000 small files under one CMK".into(),
        r.kms_calls as f64,
        "<= 2".into(),
        r.kms_calls <= 2,
    ));
    writeln!(o, "\nTargets (ratios of medians from this run):\n").unwrap();
    writeln!(o, "| target | measured | wanted | met |\n|---|---:|---:|---|").unwrap();
    for (name, x, want, ok) in &targets {
        writeln!(
            o,
            "| {name} | {x:.2} | {want} | {} |",
            if *ok { "yes" } else { "**no**" }
        )
        .unwrap();
    }
    o
}

const BEGIN: &str = "<!-- compare:begin (written by `cargo bench --bench compare -- --readme README.md`) -->";
const END: &str = "<!-- compare:end -->";

fn replace_in_readme(path: &PathBuf, table: &str) {
    let text = std::fs::read_to_string(path).expect("read the README");
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        panic!("{} has no {BEGIN} ... {END} section", path.display());
    };
    let new = format!("{}{BEGIN}\n{table}\n{}", &text[..b], &text[e..]);
    std::fs::write(path, new).expect("write the README");
}
