//! The async table reader (`TableScan::stream`) on every data-plane backend: it returns exactly
//! what the blocking reader returns, reports the same typed errors, and never blocks the thread
//! that polls it on the network.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use colvault::project::{KeyChoice, Project, ProjectSettings};
use colvault::table::{Table, TableScan};
use colvault::{Algorithm, CmpOp, Error, Predicate};
use common::stores::{location, Backend};
use common::{keys, Fixture};
use futures::stream::BoxStream;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};

fn rows(start: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let ids: Vec<i64> = (start..start + n).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from(
                ids.iter().map(|i| format!("n{i}")).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

fn encrypted() -> ProjectSettings {
    ProjectSettings::encrypted(Algorithm::Aes256Gcm, KeyChoice::ProjectDefault)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One batch of everything a scan returns (or its error).
fn blocking(scan: TableScan) -> Result<Option<RecordBatch>, Error> {
    let r = scan.build()?;
    let schema = arrow::array::RecordBatchReader::schema(&r);
    let batches = r.read_all()?;
    Ok((!batches.is_empty()).then(|| concat_batches(&schema, &batches).unwrap()))
}

fn streamed(rt: &tokio::runtime::Runtime, scan: TableScan) -> Result<Option<RecordBatch>, Error> {
    rt.block_on(async {
        let s = scan.stream().await?;
        let schema = s.schema();
        let batches: Vec<RecordBatch> = s.try_collect().await?;
        Ok((!batches.is_empty()).then(|| concat_batches(&schema, &batches).unwrap()))
    })
}

/// A table of three files (the third written after a column was added) and many row groups.
fn table(p: &Project) -> Table {
    let t = p.create_table("t", rows(0, 1).schema()).unwrap();
    t.append([rows(0, 3000), rows(3000, 2000)]).unwrap();
    t.append([rows(5000, 4000)]).unwrap();
    t.add_column(Field::new("score", DataType::Int64, true)).unwrap();
    let schema = t.head().unwrap().schema;
    let more = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from((9000..9500).collect::<Vec<i64>>())),
            Arc::new(StringArray::from(
                (9000..9500).map(|i| format!("n{i}")).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from((9000..9500).map(Some).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    t.append([more]).unwrap();
    t
}

fn stream_matches_blocking_reader(backend: Backend) {
    let fx = Fixture::new();
    let Some(loc) = location(backend, fx.dir.path(), "stream_matches_blocking_reader") else {
        return;
    };
    let p = Project::create(&fx.catalog, &loc, "sales", encrypted(), keys(&fx)).unwrap();
    let t = table(&p);
    let rt = runtime();
    type Scan = fn(&Table) -> TableScan;
    let scans: Vec<(&str, Scan)> = vec![
        ("all", |t| t.scan().batch_size(700)),
        ("one column", |t| t.scan().columns(["name"])),
        ("added column first", |t| t.scan().columns(["score", "id"])),
        ("pruned", |t| {
            t.scan().filter(Predicate::compare(
                "id",
                CmpOp::GtEq,
                Arc::new(Int64Array::from(vec![8000])),
            ))
        }),
        ("old version", |t| t.scan().version(2)),
    ];
    for (what, scan) in scans {
        let want = blocking(scan(&t)).unwrap();
        let got = streamed(&rt, scan(&t)).unwrap();
        assert_eq!(got, want, "{what}: the stream differs from the blocking reader");
    }
    let all = blocking(t.scan()).unwrap().unwrap();
    assert_eq!(all.num_rows(), 9500);
    let scores = all.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(
        scores.null_count(),
        9000,
        "rows written before the column was added read as null"
    );

    // The same typed errors: an unknown column, and a data file that is gone.
    let err = streamed(&rt, t.scan().columns(["nope"])).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let victim = t.head().unwrap().files[1].name.clone();
    let data = t
        .storage()
        .list("")
        .unwrap()
        .into_iter()
        .find(|e| e.name.ends_with(&victim))
        .expect("the data file is listed");
    t.storage().delete(&data.name).unwrap();
    let want = blocking(t.scan()).unwrap_err();
    let got = streamed(&rt, t.scan()).unwrap_err();
    assert!(matches!(got, Error::Integrity { .. }), "{got:?}");
    assert_eq!(got.to_string(), want.to_string());
}

crate::backend_tests!(stream_matches_blocking_reader);

/// A store whose GETs wait until the test lets them through, one at a time.
#[derive(Debug)]
struct Gated {
    inner: Arc<dyn ObjectStore>,
    gate: tokio::sync::Semaphore,
    waiting: AtomicUsize,
}

impl std::fmt::Display for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gated")
    }
}

#[async_trait]
impl ObjectStore for Gated {
    async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> object_store::Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &Path, o: GetOptions) -> object_store::Result<GetResult> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.unwrap().forget();
        self.inner.get_opts(l, o).await
    }
    fn delete_stream(
        &self,
        l: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(l)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

/// Every GET of the scan waits for a task on the same single-threaded runtime to let it through.
/// A stream that blocked its polling thread on a request would keep that task from running and
/// hang (caught by the watchdog); the async reader awaits instead, so the scan completes.
#[test]
fn stream_never_blocks_the_polling_thread() {
    let fx = Fixture::new();
    let gated = Arc::new(Gated {
        inner: Arc::new(object_store::memory::InMemory::new()),
        gate: tokio::sync::Semaphore::new(0),
        waiting: AtomicUsize::new(0),
    });
    let root = format!("gated{}://s", std::process::id());
    colvault::storage::register_store(&root, gated.clone());
    // Writing does not GET; open the gate wide for the setup's reads, then close it.
    gated.gate.add_permits(1_000_000);
    let p = Project::create(&fx.catalog, format!("{root}/p"), "sales", encrypted(), keys(&fx)).unwrap();
    let t = table(&p);
    let want = blocking(t.scan()).unwrap().unwrap();
    let left = gated.gate.available_permits();
    gated.gate.forget_permits(left);
    let before = gated.waiting.load(Ordering::SeqCst);

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let scan = t.scan();
    let g = gated.clone();
    std::thread::spawn(move || {
        let rt = runtime();
        let got = rt.block_on(async move {
            let collect = tokio::spawn(async move {
                let s = scan.stream().await?;
                let schema = s.schema();
                let batches: Vec<RecordBatch> = s.try_collect().await?;
                Ok::<_, Error>(concat_batches(&schema, &batches).unwrap())
            });
            // The gatekeeper, on the same thread as the stream's polls.
            let mut released = before;
            while !collect.is_finished() {
                let waiting = g.waiting.load(Ordering::SeqCst);
                if waiting > released {
                    g.gate.add_permits(waiting - released);
                    released = waiting;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            collect.await.unwrap()
        });
        let _ = done_tx.send(got);
    });
    let got = done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the stream blocked the thread that polls it (no progress in 120 s)")
        .unwrap();
    assert_eq!(got, want);
    assert!(
        gated.waiting.load(Ordering::SeqCst) > before,
        "the scan went through the gated store"
    );
}
