//! The writer's row-group pipeline: a closed row group is sealed and written by the calling thread
//! while rayon encodes the next one. Order, boundaries, threads, and sink failures.

mod common;

use std::io::Write;

use arrow::array::RecordBatch;
use colvault::sample::SampleTable;
use colvault::{Algorithm, Error, FileReader, FileWriter, ReaderOptions, WriterOptions};
use common::Fixture;

const ROWS: usize = 20_000;
const RG_ROWS: usize = 1_500;

/// Batches of uneven sizes, so that row-group boundaries fall inside batches.
fn input() -> Vec<RecordBatch> {
    let sizes = [1, 37, 4_000, 999, 1_500, 6_000, 2];
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while start < ROWS {
        let n = sizes[i % sizes.len()].min(ROWS - start);
        out.push(SampleTable::batch(7, start, n));
        start += n;
        i += 1;
    }
    out
}

fn options(fx: &Fixture, alg: Algorithm) -> WriterOptions {
    let b = if alg.is_encrypted() {
        WriterOptions::encrypted(alg, fx.access(), fx.cmk.clone())
    } else {
        WriterOptions::plaintext()
    }
    .max_row_group_rows(RG_ROWS)
    .allow_legacy_rc4(true);
    b.build()
}

fn write_all<W: Write>(sink: W, batches: &[RecordBatch], opts: WriterOptions) -> colvault::Result<(u64, W)> {
    let mut w = FileWriter::try_new(sink, SampleTable::schema(), opts)?;
    let mut lagged = 0;
    for b in batches {
        w.write(b)?;
        let written = w.bytes_written();
        assert!(written >= lagged, "bytes_written went backwards");
        lagged = written;
    }
    let (meta, sink) = w.close_into_sink()?;
    assert!(meta.file_len >= lagged);
    Ok((meta.file_len, sink))
}

fn check(fx: &Fixture, alg: Algorithm, file: Vec<u8>, want: &RecordBatch) {
    let opts = match alg.is_encrypted() {
        true => ReaderOptions::encrypted(alg, fx.access(), [fx.cmk.clone()]),
        false => ReaderOptions::plaintext(),
    };
    let r = FileReader::open(file, opts).unwrap();
    assert_eq!(r.num_row_groups(), ROWS.div_ceil(RG_ROWS), "{alg}");
    let got = r.scan().batch_size(RG_ROWS).build().unwrap().read_all().unwrap();
    // Batches never span row groups, so each one is a whole row group here.
    for (i, b) in got.iter().enumerate() {
        assert_eq!(b.num_rows(), RG_ROWS.min(ROWS - i * RG_ROWS), "{alg}: row group {i}");
    }
    let all = arrow::compute::concat_batches(&SampleTable::schema(), &got).unwrap();
    assert_eq!(&all, want, "{alg}: read back different rows");
}

#[test]
fn row_groups_come_back_in_order_whatever_the_threads() {
    let fx = Fixture::new();
    let input = input();
    let want = arrow::compute::concat_batches(&SampleTable::schema(), &input).unwrap();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for alg in Algorithm::ALL {
            // From inside the pool (the flush runs on a worker) and from a plain thread.
            let (len, file) = pool
                .install(|| write_all(Vec::new(), &input, options(&fx, alg)))
                .unwrap();
            assert_eq!(len, file.len() as u64);
            check(&fx, alg, file, &want);
            let (len, file) = std::thread::scope(|s| {
                s.spawn(|| write_all(Vec::new(), &input, options(&fx, alg)))
                    .join()
                    .unwrap()
            })
            .unwrap();
            assert_eq!(len, file.len() as u64);
            check(&fx, alg, file, &want);
        }
    }
}

/// A sink whose write that would cross `limit` bytes fails, once: later writes succeed, so a
/// writer that dropped the error would go on to close "successfully".
struct FailAfter {
    limit: usize,
    written: usize,
    failed: bool,
}

impl Write for FailAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.failed && self.written + buf.len() > self.limit {
            self.failed = true;
            return Err(std::io::Error::other("transient failure"));
        }
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_sink_fails_the_write_and_poisons_the_writer() {
    let fx = Fixture::new();
    let input = input();
    let alg = Algorithm::Aes256Gcm;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let (full, _) = write_all(Vec::new(), &input, options(&fx, alg)).unwrap();
    // Failures at the start, inside every part of the file (a row group written beside the next
    // one's encoding, the last row group, the footer) and one byte short of the end.
    let limits = (0..20).map(|i| i * full as usize / 20).chain([full as usize - 1]);
    for limit in limits {
        let sink = FailAfter {
            limit,
            written: 0,
            failed: false,
        };
        let r = pool.install(|| {
            let mut w = FileWriter::try_new(sink, SampleTable::schema(), options(&fx, alg))?;
            for (i, b) in input.iter().enumerate() {
                if let Err(e) = w.write(b) {
                    // Once failed, the writer refuses everything else.
                    let again = w.write(&input[(i + 1) % input.len()]).unwrap_err();
                    assert!(matches!(again, Error::Poisoned), "after a failure: {again:?}");
                    assert!(matches!(w.close(), Err(Error::Poisoned)));
                    return Err(e);
                }
            }
            w.close()
        });
        match r {
            Err(Error::Io { .. }) => {}
            other => panic!("sink failing after {limit} of {full} bytes: {other:?}"),
        }
    }
}
