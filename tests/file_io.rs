//! I/O: a reader reads only the footer and the chunks it needs (proved with a byte-counting
//! `ReadAt`), and reads work from a real file, from `Bytes`, and report source errors as I/O errors.

mod common;
#[path = "common/data.rs"]
mod data;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder, StructArray,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use colvault::format::{ReadAt, MAGIC, TRAILER_LEN};
use colvault::{Algorithm, Error, FileReader};
use common::Fixture;
use data::{options, reader_options, write_file};

/// File bytes with a count of the bytes read and a log of every read.
struct Counting {
    data: Vec<u8>,
    bytes: AtomicU64,
    log: Mutex<Vec<(u64, usize)>>,
}

impl Counting {
    fn new(data: Vec<u8>) -> Arc<Self> {
        Arc::new(Counting {
            data,
            bytes: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        })
    }
    /// The reads since the last call, sorted, and the bytes they read.
    fn take(&self) -> (Vec<(u64, usize)>, u64) {
        let (log, n) = self.take_in_order();
        let mut log = log;
        log.sort_unstable();
        (log, n)
    }
    /// The reads since the last call, in the order they were made, and the bytes they read.
    fn take_in_order(&self) -> (Vec<(u64, usize)>, u64) {
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        (log, self.bytes.swap(0, Ordering::SeqCst))
    }
}

impl ReadAt for Counting {
    fn len(&self) -> colvault::Result<u64> {
        Ok(self.data.len() as u64)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> colvault::Result<()> {
        self.log.lock().unwrap().push((offset, buf.len()));
        self.bytes.fetch_add(buf.len() as u64, Ordering::SeqCst);
        let start = offset as usize;
        match self.data.get(start..start + buf.len()) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(Error::Io {
                context: "test read".into(),
                source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the end"),
            }),
        }
    }
}

fn schema() -> SchemaRef {
    let point = Fields::from(vec![
        Field::new("x", DataType::Float64, false),
        Field::new("y", DataType::Float64, true),
    ]);
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new("flag", DataType::Boolean, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        ),
        Field::new("point", DataType::Struct(point), true),
    ]))
}

/// Six fields, seven leaf columns: id, name, price, flag, tags.item, point.x, point.y.
fn batch(rows: usize) -> RecordBatch {
    let ids: Vec<i64> = (0..rows as i64).collect();
    let mut tags = ListBuilder::new(StringBuilder::new());
    for i in 0..rows {
        for t in 0..i % 3 {
            tags.values().append_value(format!("t{t}"));
        }
        tags.append(i % 5 != 0);
    }
    let point = StructArray::new(
        match schema().field(5).data_type() {
            DataType::Struct(f) => f.clone(),
            _ => unreachable!(),
        },
        vec![
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64))) as ArrayRef,
            Arc::new(Float64Array::from_iter(
                (0..rows).map(|i| (i % 4 != 0).then_some(i as f64 * 2.0)),
            )),
        ],
        None,
    );
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter(
                ids.iter().map(|i| (i % 7 != 0).then(|| format!("name {i}"))),
            )),
            Arc::new(Float64Array::from_iter(ids.iter().map(|i| Some(*i as f64 * 0.25)))),
            Arc::new(BooleanArray::from_iter(ids.iter().map(|i| Some(i % 2 == 0)))),
            Arc::new(tags.finish()),
            Arc::new(point),
        ],
    )
    .unwrap()
}

/// (offset, length) of every chunk of each row group, from the reader's chunk lengths.
fn chunk_spans(r: &FileReader) -> Vec<Vec<(u64, usize)>> {
    let mut at = MAGIC.len() as u64;
    (0..r.num_row_groups())
        .map(|rg| {
            r.chunk_lengths(rg)
                .into_iter()
                .map(|l| {
                    let s = (at, l as usize);
                    at += l;
                    s
                })
                .collect()
        })
        .collect()
}

/// The leaves of each top-level field.
fn leaves_of(r: &FileReader) -> BTreeMap<usize, Vec<usize>> {
    let descr = r.parquet_metadata().file_metadata().schema_descr_ptr();
    let mut m: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for leaf in 0..descr.num_columns() {
        m.entry(descr.get_column_root_idx(leaf)).or_default().push(leaf);
    }
    m
}

/// A file of 1000 rows in 4 row groups behind a counting source, opened; checks that opening read
/// exactly the leading magic, the trailer, the envelope and the sealed body.
struct Opened {
    input: RecordBatch,
    src: Arc<Counting>,
    reader: FileReader,
    spans: Vec<Vec<(u64, usize)>>,
    leaves: BTreeMap<usize, Vec<usize>>,
}

fn open_counted(fx: &Fixture, alg: Algorithm) -> Opened {
    let input = batch(1000);
    let bytes = write_file(
        schema(),
        std::slice::from_ref(&input),
        options(fx, alg).max_row_group_rows(250).build(),
    )
    .unwrap();
    let len = bytes.len() as u64;
    let t = &bytes[bytes.len() - TRAILER_LEN..];
    let env_len = u32::from_be_bytes(t[0..4].try_into().unwrap()) as u64;
    let body_len = u32::from_be_bytes(t[4..8].try_into().unwrap()) as u64;
    let body_start = len - TRAILER_LEN as u64 - body_len;
    let env_start = body_start - env_len;

    let src = Counting::new(bytes);
    let reader = FileReader::open(src.clone(), reader_options(fx, alg)).unwrap();
    assert_eq!(reader.file_len(), len, "{alg}");
    assert_eq!(reader.num_row_groups(), 4, "{alg}");

    // Opening reads the leading magic, the trailer, the envelope and the sealed body: nothing else.
    let (reads, n) = src.take();
    let mut want = vec![
        (0, 4),
        (len - 12, 12),
        (env_start, env_len as usize),
        (body_start, body_len as usize),
    ];
    want.sort_unstable();
    assert_eq!(reads, want, "{alg}: reads of FileReader::open");
    assert_eq!(n, 4 + 12 + env_len + body_len, "{alg}: bytes read by FileReader::open");

    let spans = chunk_spans(&reader);
    let leaves = leaves_of(&reader);
    assert_eq!(leaves.len(), 6, "{alg}");
    assert_eq!(
        spans.iter().map(|s| s.len()).sum::<usize>(),
        4 * 7,
        "{alg}: 4 row groups of 7 leaves"
    );
    assert_eq!(
        spans[3].last().map(|&(o, l)| o + l as u64),
        Some(env_start),
        "{alg}: chunks end at the envelope"
    );
    Opened {
        input,
        src,
        reader,
        spans,
        leaves,
    }
}

/// Scans `fields` (all when None) of row groups `rgs`, checks the values, and checks that the source
/// saw exactly one read of each chunk of those fields in those row groups, and nothing else.
fn check_scan(o: &Opened, alg: Algorithm, fields: Option<&[&str]>, rgs: &[usize]) {
    let label = format!("{alg}: fields {fields:?} of row groups {rgs:?}");
    let idx: Vec<usize> = match fields {
        Some(names) => names.iter().map(|n| schema().index_of(n).unwrap()).collect(),
        None => (0..schema().fields().len()).collect(),
    };
    let scan = match fields {
        Some(_) => o.reader.scan().project(idx.clone()).row_groups(rgs.to_vec()),
        None => o.reader.scan(),
    };
    let got = scan.build().unwrap().read_all().unwrap();
    let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
    let want_rows: Vec<RecordBatch> = rgs.iter().map(|&rg| o.input.slice(rg * 250, 250)).collect();
    let want_rows = arrow::compute::concat_batches(&o.input.schema(), &want_rows).unwrap();
    assert_eq!(got.num_rows(), want_rows.num_rows(), "{label}: rows");
    for (i, &f) in idx.iter().enumerate() {
        assert_eq!(got.column(i), want_rows.column(f), "{label}: values of field {f}");
    }

    let mut want: Vec<(u64, usize)> = rgs
        .iter()
        .flat_map(|&rg| idx.iter().flat_map(move |f| o.leaves[f].iter().map(move |&l| (rg, l))))
        .map(|(rg, l)| o.spans[rg][l])
        .collect();
    want.sort_unstable();
    let (in_order, n) = o.src.take_in_order();
    let mut reads = in_order.clone();
    reads.sort_unstable();
    let name_of = |read: &(u64, usize)| {
        o.spans
            .iter()
            .enumerate()
            .find_map(|(rg, s)| s.iter().position(|c| c == read).map(|l| format!("rg{rg}/leaf{l}")))
            .unwrap_or_else(|| format!("{read:?}"))
    };
    let order: Vec<String> = in_order.iter().map(name_of).collect();
    let others: Vec<String> = reads.iter().filter(|r| !want.contains(r)).map(name_of).collect();
    assert!(
        others.is_empty(),
        "{label}: reads outside its chunks: {others:?}; reads in order: {order:?}"
    );
    assert_eq!(
        reads, want,
        "{label}: each of its chunks must be read exactly once; reads in order: {order:?}"
    );
    assert_eq!(
        n,
        want.iter().map(|&(_, l)| l as u64).sum::<u64>(),
        "{label}: bytes read"
    );
}

#[test]
fn one_column_of_one_row_group_reads_only_its_chunks() {
    let fx = Fixture::new();
    for alg in Algorithm::ALL {
        let o = open_counted(&fx, alg);
        // A flat column, a list, a struct of two leaves; each of one row group.
        check_scan(&o, alg, Some(&["price"]), &[2]);
        check_scan(&o, alg, Some(&["tags"]), &[0]);
        check_scan(&o, alg, Some(&["point"]), &[1]);
        // Flat columns over several row groups, and two flat columns.
        check_scan(&o, alg, Some(&["name"]), &[0, 3]);
        check_scan(&o, alg, Some(&["id", "flag"]), &[1, 2]);
    }
}

/// A field of several leaves (a struct) read over several row groups in one batch: parquet decodes
/// it leaf by leaf across the row groups, and each chunk must still be read (and decrypted) once.
#[test]
fn multi_leaf_field_over_several_row_groups_reads_each_chunk_once() {
    let fx = Fixture::new();
    for alg in Algorithm::ALL {
        let o = open_counted(&fx, alg);
        check_scan(&o, alg, Some(&["point"]), &[0, 2]);
    }
}

#[test]
fn full_scan_reads_every_chunk_once() {
    let fx = Fixture::new();
    for alg in Algorithm::ALL {
        let o = open_counted(&fx, alg);
        check_scan(&o, alg, None, &[0, 1, 2, 3]);
    }
}

#[test]
fn reads_from_a_real_file_and_from_bytes() {
    let fx = Fixture::new();
    let input = batch(700);
    for alg in Algorithm::ALL {
        let bytes = write_file(
            schema(),
            std::slice::from_ref(&input),
            options(&fx, alg).max_row_group_rows(300).build(),
        )
        .unwrap();
        let path = fx.dir.path().join(format!("data-{alg}.cvlt"));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
        drop(f);

        let file = std::fs::File::open(&path).unwrap();
        let r = FileReader::open(file, reader_options(&fx, alg)).unwrap();
        assert_eq!(r.file_len(), bytes.len() as u64, "{alg}");
        let got = r.scan().batch_size(128).build().unwrap().read_all().unwrap();
        assert!(got.iter().all(|b| b.num_rows() <= 128), "{alg}: batch size");
        assert_eq!(
            arrow::compute::concat_batches(&schema(), &got).unwrap(),
            input,
            "{alg}: from a file"
        );
        let got = r
            .scan()
            .project(vec![4])
            .row_groups(vec![2])
            .build()
            .unwrap()
            .read_all()
            .unwrap();
        let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
        assert_eq!(
            got.column(0),
            &input.column(4).slice(600, 100),
            "{alg}: projection from a file"
        );

        let r = FileReader::open(bytes::Bytes::from(bytes.clone()), reader_options(&fx, alg)).unwrap();
        let got = r.scan().build().unwrap().read_all().unwrap();
        assert_eq!(
            arrow::compute::concat_batches(&schema(), &got).unwrap(),
            input,
            "{alg}: from Bytes"
        );
    }
}

/// A source that fails every read in `[from, to)`.
struct Failing {
    data: Vec<u8>,
    from: u64,
    to: u64,
}

impl ReadAt for Failing {
    fn len(&self) -> colvault::Result<u64> {
        Ok(self.data.len() as u64)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> colvault::Result<()> {
        if offset < self.to && offset + buf.len() as u64 > self.from {
            return Err(Error::Io {
                context: "test read".into(),
                source: std::io::Error::other("injected failure"),
            });
        }
        buf.copy_from_slice(&self.data[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
}

#[test]
fn source_errors_are_io_errors() {
    let fx = Fixture::new();
    let bytes = write_file(
        schema(),
        &[batch(100)],
        options(&fx, Algorithm::Aes256Gcm).max_row_group_rows(50).build(),
    )
    .unwrap();
    let len = bytes.len() as u64;
    // A failing chunk read surfaces from the scan as the source's I/O error.
    let r = FileReader::open(
        Failing {
            data: bytes.clone(),
            from: 4,
            to: 5,
        },
        reader_options(&fx, Algorithm::Aes256Gcm),
    )
    .unwrap();
    let e = r.scan().build().unwrap().read_all().unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "chunk read failure: {e:?}");
    // A failing footer read fails the open the same way.
    let e = FileReader::open(
        Failing {
            data: bytes,
            from: len - 1,
            to: len,
        },
        reader_options(&fx, Algorithm::Aes256Gcm),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "trailer read failure: {e:?}");
}

/// One non-null int64 column `v` of `rows` values that neither dictionary nor compression shrinks
/// much, so `8 * rows` plain bytes make chunks of several segments.
fn scrambled_int64s(rows: i64) -> (SchemaRef, RecordBatch) {
    let values: Vec<i64> = (0..rows).map(|i| i.wrapping_mul(0x1E37_79B9_7F4A_7C15)).collect();
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let input = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values)) as ArrayRef]).unwrap();
    (schema, input)
}

/// A chunk longer than a segment is read lazily: its tags once, then each segment once, in order,
/// when the decoder reaches it (RC4, whose keystream spans the chunk, is read whole). A flipped
/// byte in a later segment is an integrity error.
#[test]
fn long_chunks_are_read_a_segment_at_a_time() {
    use colvault::crypto::{sealed_len, SEGMENT_LEN};
    use colvault::Compression;
    let fx = Fixture::new();
    let (schema, input) = scrambled_int64s(450_000); // 3.6 MB of plain int64: four segments
    for alg in Algorithm::ALL {
        let opts = options(&fx, alg)
            .compression(Compression::None)
            .dictionary(false)
            .statistics(false)
            .build();
        let bytes = write_file(schema.clone(), std::slice::from_ref(&input), opts).unwrap();
        let src = Counting::new(bytes.clone());
        let reader = FileReader::open(src.clone(), reader_options(&fx, alg)).unwrap();
        src.take();
        let chunk = reader.chunk_lengths(0)[0] as usize;
        let plain = (0..).find(|&n| sealed_len(alg, n) == chunk).unwrap();
        assert!(plain > 3 * SEGMENT_LEN, "{alg}: {plain} bytes");
        let got = reader.scan().build().unwrap().read_all().unwrap();
        assert_eq!(arrow::compute::concat_batches(&schema, &got).unwrap(), input, "{alg}");

        let (reads, n) = src.take_in_order();
        let at = MAGIC.len() as u64;
        let want: Vec<(u64, usize)> = if alg == Algorithm::Rc4 {
            vec![(at, chunk)]
        } else {
            let mut w = vec![(at + plain as u64, chunk - plain)];
            w.extend((0..plain.div_ceil(SEGMENT_LEN)).map(|i| {
                let start = i * SEGMENT_LEN;
                (at + start as u64, SEGMENT_LEN.min(plain - start))
            }));
            w
        };
        assert_eq!(reads, want, "{alg}: the chunk's reads, in order");
        assert_eq!(n, chunk as u64, "{alg}: each byte read once");

        // A byte of the third segment flipped, a byte of a tag flipped, the first two segments
        // swapped: each scan fails with an integrity error.
        let at = at as usize;
        let mut flipped = bytes.clone();
        flipped[at + 2 * SEGMENT_LEN + 100] ^= 0x10;
        let mut tag_flipped = bytes.clone();
        tag_flipped[at + plain + 3] ^= 0x01;
        let mut swapped = bytes;
        let (first, second) = swapped[at..at + 2 * SEGMENT_LEN].split_at_mut(SEGMENT_LEN);
        first.swap_with_slice(second);
        for (what, bad) in [
            ("segment byte", flipped),
            ("tag byte", tag_flipped),
            ("segments swapped", swapped),
        ] {
            let reader = FileReader::open(bad, reader_options(&fx, alg)).unwrap();
            let e = reader.scan().build().unwrap().read_all().unwrap_err();
            assert!(matches!(e, Error::Integrity { .. }), "{alg} {what}: {e:?}");
        }
    }
}

/// A file written through one cipher provider reads through the other, for every algorithm, with
/// chunks of several segments (so the providers' wide AES paths and the segment tails run), and a
/// flipped ciphertext byte is an integrity error through either.
#[test]
fn files_cross_cipher_providers() {
    use colvault::crypto::providers;
    use colvault::Compression;
    let fx = Fixture::new();
    let (schema, input) = scrambled_int64s(300_000); // 2.4 MB: three segments
    for alg in Algorithm::ALL {
        for writer in providers() {
            let opts = options(&fx, alg)
                .cipher_provider(writer)
                .compression(Compression::None)
                .dictionary(false)
                .build();
            let bytes = write_file(schema.clone(), std::slice::from_ref(&input), opts).unwrap();
            for reader in providers() {
                let what = format!("{alg}: written by {}, read by {}", writer.name(), reader.name());
                let r = FileReader::open(bytes.clone(), reader_options(&fx, alg).cipher_provider(reader)).unwrap();
                let got = r.scan().build().unwrap().read_all().unwrap();
                assert_eq!(arrow::compute::concat_batches(&schema, &got).unwrap(), input, "{what}");
                let mut bad = bytes.clone();
                bad[MAGIC.len() + 1_500_000] ^= 0x10;
                let got = FileReader::open(bad, reader_options(&fx, alg).cipher_provider(reader))
                    .and_then(|r| r.scan().build()?.read_all());
                assert!(matches!(got, Err(Error::Integrity { .. })), "{what}: {got:?}");
            }
        }
    }
}
