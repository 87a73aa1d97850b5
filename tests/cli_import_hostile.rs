//! Hostile import inputs (issue 15, item 5): every import format bounds what it allocates by what
//! the input can hold, and refuses what it cannot hold with a typed error, never a panic, an abort
//! or gigabytes of memory. Each input is checked through the library (`colvault::import`, the
//! same code the fuzz targets run) and through the `colvault table import` command, whose peak
//! memory is measured with getrusage(RUSAGE_CHILDREN).

#[path = "common/cli_env.rs"]
mod cli_env;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use colvault::import::{open_bytes, CsvOptions, Format, SchemaFrom};
use colvault::Error;

/// Far above what any of these imports needs (about 20 MiB), far below what they took before
/// (gigabytes, or an abort): a bound that fails on the old behaviour, not on noise.
const RSS_BOUND_KIB: i64 = 256 * 1024;

/// The 72-byte Arrow IPC stream of the issue: a continuation marker, then a metadata length of
/// 0x7ffffff0, then 64 bytes.
fn ipc_stream_huge_metadata() -> Vec<u8> {
    let mut v = vec![0xff, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0x7f];
    v.extend_from_slice(&[0x41; 64]);
    v
}

fn small_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap()
}

/// A valid Arrow IPC file whose footer says its one record batch has a body of 140 TB.
fn ipc_file_huge_block() -> Vec<u8> {
    let batch = small_batch();
    let mut file = Vec::new();
    {
        let mut w = arrow::ipc::writer::FileWriter::try_new(&mut file, &batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    let n = file.len();
    let footer_len = i32::from_le_bytes(file[n - 10..n - 6].try_into().unwrap()) as usize;
    let footer_start = n - 10 - footer_len;
    let block = {
        let footer = arrow::ipc::root_as_footer(&file[footer_start..n - 10]).unwrap();
        *footer.recordBatches().unwrap().get(0)
    };
    let mut pattern = block.offset().to_le_bytes().to_vec();
    pattern.extend_from_slice(&block.metaDataLength().to_le_bytes());
    pattern.extend_from_slice(&[0; 4]);
    pattern.extend_from_slice(&block.bodyLength().to_le_bytes());
    let at = file[footer_start..]
        .windows(pattern.len())
        .position(|w| w == pattern)
        .expect("the block is in the footer")
        + footer_start;
    file[at + 16..at + 24].copy_from_slice(&0x7fff_ffff_ffffi64.to_le_bytes());
    file
}

/// A CSV header of 20,000 columns (140 KB).
fn csv_too_wide() -> Vec<u8> {
    let names: Vec<String> = (0..20_000).map(|i| format!("c{i}")).collect();
    format!("{}\n", names.join(",")).into_bytes()
}

/// A CSV of `width` columns and two rows: valid, but batches of 65,536 rows made Arrow's CSV
/// reader size (and zero) its field offsets for 65,536 x `width` fields before reading a row: 2.6 GB
/// for 5,000 columns (a 30 KB file), 520 MB for 1,000.
fn csv_wide_valid(width: usize) -> Vec<u8> {
    let names: Vec<String> = (0..width).map(|i| format!("c{i}")).collect();
    let row = vec!["1"; width].join(",");
    format!("{}\n{row}\n{row}\n", names.join(",")).into_bytes()
}

/// JSON lines of 20,000 objects with a key each (340 KB): inference made a 20,000-column schema,
/// and a batch of all its rows, all columns, nulls but one.
fn jsonl_many_keys() -> Vec<u8> {
    (0..20_000)
        .map(|i| format!("{{\"k{i}\":1}}\n"))
        .collect::<String>()
        .into_bytes()
}

/// A Parquet file whose footer declares 2^31 - 1 row groups in a few bytes: the `parquet` crate
/// sized a vector of row groups by the count before reading any (an allocation of hundreds of GB,
/// which aborts the process).
fn parquet_huge_row_group_count() -> Vec<u8> {
    // FileMetaData { 1: version = 1, 2: schema = [ { 4: name = "s", 5: num_children = 0 } ],
    //                3: num_rows = 0, 4: row_groups = list<struct> of 2^31 - 1 } (compact protocol)
    let mut meta = vec![0x15, 0x02]; // field 1, i32, zigzag(1)
    meta.extend_from_slice(&[0x19, 0x1c]); // field 2, list of 1 struct
    meta.extend_from_slice(&[0x48, 0x01, b's']); // field 4 (delta 4), binary "s"
    meta.extend_from_slice(&[0x15, 0x00]); // field 5, i32 0
    meta.push(0x00); // end of the schema element
    meta.extend_from_slice(&[0x16, 0x00]); // field 3, i64 0
    meta.extend_from_slice(&[0x19, 0xfc, 0xfe, 0xff, 0xff, 0xff, 0x07]); // field 4, list<struct> 2^31-1
    meta.extend_from_slice(&[0x00; 16]);
    let mut file = b"PAR1".to_vec();
    file.extend_from_slice(&meta);
    file.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    file.extend_from_slice(b"PAR1");
    file
}

/// A Parquet file with one SNAPPY page whose header declares 2 GB uncompressed: Snappy's reader
/// in the `parquet` crate zero-filled that many bytes before decompressing.
fn parquet_snappy_page_bomb() -> Vec<u8> {
    use parquet::file::metadata::{ParquetMetaDataReader, ParquetMetaDataWriter};
    let batch = small_batch();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .build();
    let mut file = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let meta = ParquetMetaDataReader::new()
        .parse_and_finish(&Bytes::from(file.clone()))
        .unwrap();
    let col = meta.row_group(0).column(0).clone();
    let (start, len) = (col.data_page_offset() as usize, col.compressed_size() as usize);
    let chunk = &file[start..start + len];
    // The page header starts with fields 1 (type), 2 (uncompressed size), 3 (compressed size),
    // each an i32 field header 0x15 and a varint: rewrite field 2 with a 5-byte varint.
    let varint_end = |at: usize| at + chunk[at..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    assert_eq!(chunk[0], 0x15);
    let f2 = varint_end(1);
    assert_eq!(chunk[f2], 0x15);
    let f2_end = varint_end(f2 + 1);
    let mut new_chunk = chunk[..f2 + 1].to_vec();
    new_chunk.extend_from_slice(&[0xe0, 0xff, 0xff, 0xff, 0x0f]); // zigzag(0x7ffffff0)
    new_chunk.extend_from_slice(&chunk[f2_end..]);
    let new_len = new_chunk.len() as i64;
    let col = col.into_builder().set_total_compressed_size(new_len).build().unwrap();
    let rg = meta
        .row_group(0)
        .clone()
        .into_builder()
        .set_column_metadata(vec![col])
        .build()
        .unwrap();
    let meta = meta.into_builder().set_row_groups(vec![rg]).build();
    let mut out = b"PAR1".to_vec();
    out.extend_from_slice(&new_chunk);
    ParquetMetaDataWriter::new(&mut out, &meta).finish().unwrap();
    out
}

fn hostile() -> Vec<(&'static str, Format, Vec<u8>)> {
    vec![
        ("stream.arrows", Format::Ipc, ipc_stream_huge_metadata()),
        ("file.arrow", Format::Ipc, ipc_file_huge_block()),
        ("wide.csv", Format::Csv, csv_too_wide()),
        ("keys.jsonl", Format::Jsonl, jsonl_many_keys()),
        ("rowgroups.parquet", Format::Parquet, parquet_huge_row_group_count()),
        ("snappy.parquet", Format::Parquet, parquet_snappy_page_bomb()),
    ]
}

fn import_all(bytes: &[u8], format: Format) -> colvault::Result<usize> {
    let import = open_bytes(
        Bytes::copy_from_slice(bytes),
        format,
        CsvOptions::default(),
        SchemaFrom::Infer,
    )?;
    let mut rows = 0;
    for b in import.batches {
        rows += b?.num_rows();
    }
    Ok(rows)
}

/// Through the library: each hostile input is a typed `Malformed` error.
#[test]
fn hostile_inputs_are_malformed_errors() {
    for (name, format, bytes) in hostile() {
        match import_all(&bytes, format) {
            Err(Error::Malformed { .. }) => {}
            other => panic!("{name}: expected a Malformed error, got {other:?}"),
        }
    }
    // The wide but valid CSV imports, in batches small enough for its width.
    assert_eq!(import_all(&csv_wide_valid(5_000), Format::Csv).unwrap(), 2);
    let import = open_bytes(
        Bytes::from(csv_wide_valid(5_000)),
        Format::Csv,
        CsvOptions::default(),
        SchemaFrom::Infer,
    )
    .unwrap();
    assert_eq!(import.schema.fields().len(), 5_000);
    assert_eq!(colvault::import::batch_rows(5_000), (1 << 20) / 5_000);
}

fn max_rss_of_children_kib() -> i64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) }, 0);
    u.ru_maxrss
}

/// Runs the binary as `Env::cmd` does, as a child this process waits for (so its peak memory
/// counts in RUSAGE_CHILDREN).
fn colvault(env: &cli_env::Env, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_colvault"));
    c.current_dir(env.path()).env("HOME", env.home());
    for v in cli_env::CLEARED_ENV {
        c.env_remove(v);
    }
    c.args(args).output().unwrap()
}

/// Through the command line: `table import` of each hostile input exits with the data error code
/// (4) and a message, never a panic; the peak memory of every import process stays far below what
/// the old readers took.
#[test]
fn cli_imports_of_hostile_inputs_fail_cleanly_in_bounded_memory() {
    let env = cli_env::Env::new();
    env.run(&["project", "create", "./hostile"]);
    // COLVAULT_HOSTILE_DIR=DIR keeps a copy of each input (to measure by hand, e.g. with
    // `/usr/bin/time -v colvault table import ...`).
    let keep = std::env::var_os("COLVAULT_HOSTILE_DIR").map(std::path::PathBuf::from);
    let write = |name: &str, bytes: &[u8]| {
        if let Some(dir) = &keep {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let p = env.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    for (i, (name, _, bytes)) in hostile().into_iter().enumerate() {
        let path = write(name, &bytes);
        let table = format!("imp{i}");
        let out = colvault(&env, &["table", "import", "./hostile", &table, path_str(&path)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{name}: {stderr}");
        assert!(stderr.contains("error: malformed"), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        let rss = max_rss_of_children_kib();
        assert!(rss < RSS_BOUND_KIB, "{name}: peak RSS {rss} KiB");
    }
    // A valid wide CSV imports (1,000 columns: the table writer's own per-column state stays
    // well inside the bound; it is the reader's 520 MB of offsets that is gone).
    let path = write("wide_ok.csv", &csv_wide_valid(1_000));
    let out = colvault(&env, &["table", "import", "./hostile", "wide", path_str(&path)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rss = max_rss_of_children_kib();
    assert!(rss < RSS_BOUND_KIB, "wide CSV: peak RSS {rss} KiB");
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
