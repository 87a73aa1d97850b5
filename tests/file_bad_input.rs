//! Bad input: wrong magic, unknown versions, trailer lengths pointing outside the file or claiming
//! more than it holds, empty and tiny files, and (for `none`, whose checksum anyone can recompute)
//! forged footers. Each gives a typed error, and opening never allocates more than the file's
//! length plus 1 MiB: a counting global allocator records the largest single allocation.

mod common;
#[path = "common/data.rs"]
mod data;

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use colvault::format::footer::{body_aad, seal_body};
use colvault::format::{FooterBody, MAGIC, TRAILER_LEN};
use colvault::{Algorithm, Error, FileReader};
use common::Fixture;
use data::{options, reader_options_as_claimed, write_file};

// ---- a global allocator that records the largest single allocation while tracking is on ----

struct Counting;

static TRACKING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if TRACKING.load(Ordering::Relaxed) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Serializes the tests of this binary: the allocator's record is process-wide, so no other test may
/// allocate while one is measured.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const HEADROOM: usize = 1 << 20;

/// Opens `file` (and, if that works, reads it all), recording the largest single allocation: the
/// result, or the message of a panic. Fails the test on an allocation above the file's length plus
/// 1 MiB. Call with [`serial`] held.
fn try_open_measured(fx: &Fixture, file: Vec<u8>, what: &str) -> Result<Result<usize, Error>, String> {
    let len = file.len();
    let opts = reader_options_as_claimed(fx, &file);
    LARGEST.store(0, Ordering::SeqCst);
    TRACKING.store(true, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<usize, Error> {
        let r = FileReader::open(file, opts)?;
        let batches = r.scan().build()?.read_all()?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }));
    TRACKING.store(false, Ordering::SeqCst);
    let largest = LARGEST.load(Ordering::SeqCst);
    let r = r.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    });
    // (A panic's own backtrace capture allocates freely; the panic is the failure then.)
    assert!(
        r.is_err() || largest <= len + HEADROOM,
        "{what}: an allocation of {largest} bytes for a {len}-byte file (result {r:?})"
    );
    r
}

/// [`try_open_measured`], failing the test on a panic.
fn open_measured(fx: &Fixture, file: Vec<u8>, what: &str) -> Result<usize, Error> {
    try_open_measured(fx, file, what).unwrap_or_else(|p| panic!("{what}: opening panicked: {p}"))
}

/// Opens `file`, which must fail with an error `ok` accepts.
fn expect_err(fx: &Fixture, file: Vec<u8>, what: &str, ok: impl Fn(&Error) -> bool) {
    match open_measured(fx, file, what) {
        Ok(rows) => panic!("{what}: read succeeded with {rows} rows"),
        Err(e) => assert!(ok(&e), "{what}: unexpected error {e:?}"),
    }
}

/// Any typed refusal of a damaged file.
fn refused(e: &Error) -> bool {
    matches!(
        e,
        Error::Integrity { .. }
            | Error::Malformed { .. }
            | Error::NotColvault(_)
            | Error::UnsupportedVersion { .. }
            | Error::UnknownAlgorithmId { .. }
    )
}

fn small_file(fx: &Fixture, alg: Algorithm) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from((0..100).collect::<Vec<i64>>())),
            Arc::new(StringArray::from(
                (0..100)
                    .map(|i| (i % 3 != 0).then(|| format!("n{i}")))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    write_file(schema, &[batch], options(fx, alg).max_row_group_rows(40).build()).unwrap()
}

/// (envelope start, envelope length, sealed body length) from the trailer.
fn layout(file: &[u8]) -> (usize, usize, usize) {
    let t = &file[file.len() - TRAILER_LEN..];
    let env_len = u32::from_be_bytes(t[0..4].try_into().unwrap()) as usize;
    let body_len = u32::from_be_bytes(t[4..8].try_into().unwrap()) as usize;
    (file.len() - TRAILER_LEN - body_len - env_len, env_len, body_len)
}

fn with_trailer(file: &[u8], env_len: u32, body_len: u32) -> Vec<u8> {
    let mut f = file.to_vec();
    let n = f.len();
    f[n - 12..n - 8].copy_from_slice(&env_len.to_be_bytes());
    f[n - 8..n - 4].copy_from_slice(&body_len.to_be_bytes());
    f
}

const ALGS: [Algorithm; 2] = [Algorithm::None, Algorithm::Aes256Gcm];

#[test]
fn intact_files_stay_within_the_allocation_bound() {
    let _serial = serial();
    // The measurement itself works: the intact files open and read within the bound.
    let fx = Fixture::new();
    for alg in ALGS {
        let file = small_file(&fx, alg);
        assert_eq!(open_measured(&fx, file, &format!("{alg}: intact")).unwrap(), 100);
    }
    // And it does see large allocations.
    LARGEST.store(0, Ordering::SeqCst);
    TRACKING.store(true, Ordering::SeqCst);
    let v = std::hint::black_box(vec![0u8; 3 << 20]);
    TRACKING.store(false, Ordering::SeqCst);
    drop(v);
    assert!(LARGEST.load(Ordering::SeqCst) >= 3 << 20);
}

#[test]
fn wrong_magic() {
    let _serial = serial();
    let fx = Fixture::new();
    let not = |e: &Error| matches!(e, Error::NotColvault(_));
    for alg in ALGS {
        let file = small_file(&fx, alg);
        let n = file.len();
        for (i, label) in [
            (0, "first"),
            (3, "fourth"),
            (n - 4, "trailing first"),
            (n - 1, "trailing last"),
        ] {
            let mut f = file.clone();
            f[i] ^= 0x20;
            expect_err(&fx, f, &format!("{alg}: {label} magic byte changed"), not);
        }
        let mut f = file.clone();
        f[..4].copy_from_slice(b"PAR1");
        f[n - 4..].copy_from_slice(b"PAR1");
        expect_err(&fx, f, &format!("{alg}: parquet magic"), not);
    }
    // A real Parquet file is not a colvault file.
    let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
    let mut pq = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut pq, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    expect_err(&fx, pq, "a parquet file", not);
}

#[test]
fn unknown_major_version_and_changed_minor() {
    let _serial = serial();
    let fx = Fixture::new();
    for alg in ALGS {
        let file = small_file(&fx, alg);
        let (env_start, _, _) = layout(&file);
        assert_eq!(
            file[env_start],
            colvault::format::VERSION_MAJOR,
            "{alg}: the envelope starts with the major"
        );
        // Only the (unauthenticated) major byte changed, the rest a valid version-1 envelope:
        // damage, not a reason to upgrade.
        for major in [0u8, 2, 3, 0x7f, 0xff] {
            let mut f = file.clone();
            f[env_start] = major;
            expect_err(&fx, f, &format!("{alg}: major byte changed to {major}"), |e| {
                matches!(e, Error::Integrity { .. })
            });
        }
        // A newer major whose envelope this build cannot parse (here: unknown flags): a newer format.
        for major in [2u8, 3] {
            let mut f = file.clone();
            f[env_start] = major;
            f[env_start + 3 + 16] = 0x80;
            expect_err(
                &fx,
                f,
                &format!("{alg}: major version {major}"),
                |e| matches!(e, Error::UnsupportedVersion { found, supported: 1 } if found.starts_with(&format!("{major}."))),
            );
        }
        // A reader accepts any minor of its major, but the envelope is authenticated: a minor changed
        // after writing is an integrity failure, not a silent success.
        let mut f = file.clone();
        f[env_start + 1] = 9;
        expect_err(&fx, f, &format!("{alg}: minor version changed"), |e| {
            matches!(e, Error::Integrity { .. })
        });
    }
}

#[test]
fn trailer_lengths_outside_the_file() {
    let _serial = serial();
    let fx = Fixture::new();
    for alg in ALGS {
        let file = small_file(&fx, alg);
        let n = file.len() as u32;
        let (_, env, body) = layout(&file);
        let (env, body) = (env as u32, body as u32);
        let room = n - 16; // what magic and trailer leave for chunks, envelope and body
        let cases: Vec<(u32, u32, &str)> = vec![
            (u32::MAX, body, "envelope length 0xFFFFFFFF"),
            (env, u32::MAX, "body length 0xFFFFFFFF"),
            (u32::MAX, u32::MAX, "both lengths 0xFFFFFFFF"),
            (0x8000_0000, 0x8000_0000, "lengths summing to 2^32"),
            (n, body, "envelope as long as the file"),
            (env, n, "body as long as the file"),
            (room - body + 1, body, "envelope one byte too long"),
            (env, room - env + 1, "body one byte too long"),
            (1 << 20, body, "envelope at the 1 MiB bound"),
            ((1 << 20) + 1, body, "envelope over the 1 MiB bound"),
            (env, 256 << 20, "body at the 256 MiB bound"),
            (env, (256 << 20) + 1, "body over the 256 MiB bound"),
        ];
        for (e, b, label) in cases {
            expect_err(&fx, with_trailer(&file, e, b), &format!("{alg}: {label}"), refused);
        }
    }
}

#[test]
fn trailer_lengths_inside_the_file_but_wrong() {
    let _serial = serial();
    let fx = Fixture::new();
    for alg in ALGS {
        let file = small_file(&fx, alg);
        let (_, env, body) = layout(&file);
        let room = file.len() - 16;
        let mut cases = vec![
            (0usize, body),
            (env, 0),
            (0, 0),
            (room - body, body),
            (env, room - env),
            (room, 0),
            (0, room),
        ];
        for d in [1usize, 2, 7, 16, 100] {
            cases.extend([
                (env - d, body),
                (env + d, body),
                (env, body - d),
                (env, body + d),
                (env + d, body - d),
                (env - d, body + d),
            ]);
        }
        for (e, b) in cases {
            if e + b > room {
                continue;
            }
            expect_err(
                &fx,
                with_trailer(&file, e as u32, b as u32),
                &format!("{alg}: envelope {e} (really {env}), body {b} (really {body})"),
                refused,
            );
        }
    }
}

#[test]
fn empty_and_tiny_files() {
    let _serial = serial();
    let fx = Fixture::new();
    let not = |e: &Error| matches!(e, Error::NotColvault(_));
    expect_err(&fx, Vec::new(), "empty file", not);
    for n in 1..16 {
        let mut f = MAGIC.repeat(4);
        f.truncate(n);
        expect_err(&fx, f, &format!("{n}-byte file of magics"), not);
        expect_err(&fx, vec![0u8; n], &format!("{n}-byte file of zeros"), not);
    }
    // 15 bytes: magic, 7 bytes, magic.
    let mut f = MAGIC.to_vec();
    f.extend_from_slice(&[0; 7]);
    f.extend_from_slice(&MAGIC);
    assert_eq!(f.len(), 15);
    expect_err(&fx, f, "15-byte file", not);
    // The smallest framing, 16 bytes: magic and trailer with empty envelope and body.
    let mut f = MAGIC.to_vec();
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&MAGIC);
    expect_err(&fx, f.clone(), "16-byte file, empty envelope and body", refused);
    for (e, b) in [(1u32, 0u32), (0, 1), (u32::MAX, 0), (0, u32::MAX), (u32::MAX, u32::MAX)] {
        expect_err(
            &fx,
            with_trailer(&f, e, b),
            &format!("16-byte file, lengths {e} and {b}"),
            refused,
        );
    }
    // 17..64 bytes of magic-framed zeros and ones.
    for n in 17..64 {
        for fill in [0u8, 0xff] {
            let mut f = MAGIC.to_vec();
            f.resize(n - 12, fill);
            f.extend_from_slice(&[fill; 8]);
            f.extend_from_slice(&MAGIC);
            expect_err(&fx, f, &format!("{n}-byte file of {fill:#04x}"), refused);
        }
    }
}

// ---- forged footers of `none` files (the checksum is public: anyone can recompute it) ----

/// Re-seals a `none` file after `edit` changed its footer body (and rebuilds the trailer).
fn forge(file: &[u8], edit: impl FnOnce(&mut FooterBody, &mut Vec<u8>)) -> Vec<u8> {
    let (env_start, env_len, body_len) = layout(file);
    let env = file[env_start..env_start + env_len].to_vec();
    let sealed = &file[env_start + env_len..env_start + env_len + body_len];
    let mut body = FooterBody::decode(&sealed[..sealed.len() - 32]).expect("a none body is plaintext");
    let mut chunks = file[..env_start].to_vec();
    edit(&mut body, &mut chunks);
    let mut plain = body.encode();
    let sealed_len = plain.len() + 32;
    let file_len = chunks.len() + env.len() + sealed_len + TRAILER_LEN;
    let aad = body_aad(&env, file_len as u64, sealed_len as u64);
    seal_body(None, &[0u8; 12], &aad, &mut plain).unwrap();
    let mut out = chunks;
    out.extend_from_slice(&env);
    out.extend_from_slice(&plain);
    out.extend_from_slice(&(env.len() as u32).to_be_bytes());
    out.extend_from_slice(&(plain.len() as u32).to_be_bytes());
    out.extend_from_slice(&MAGIC);
    out
}

#[test]
fn forged_none_footers() {
    let _serial = serial();
    let fx = Fixture::new();
    let file = small_file(&fx, Algorithm::None);
    // The forgery itself is faithful: re-sealing the unchanged body gives a file that reads.
    let same = forge(&file, |_, _| {});
    assert_eq!(same, file, "forging an unchanged body must give the same bytes");

    let typed = |e: &Error| refused(e) || matches!(e, Error::Parquet(_));
    type Forge = Box<dyn Fn(&mut FooterBody, &mut Vec<u8>)>;
    let cases: Vec<(&str, Forge)> = vec![
        (
            "a chunk of length u64::MAX",
            Box::new(|b, _| b.chunks[0].len = u64::MAX),
        ),
        (
            "a chunk at offset u64::MAX",
            Box::new(|b, _| b.chunks[1].offset = u64::MAX),
        ),
        (
            "two chunks overlapping",
            Box::new(|b, _| {
                b.chunks[1].offset -= 1;
                b.chunks[1].len += 1;
            }),
        ),
        (
            "chunk lengths exchanged",
            Box::new(|b, _| {
                let (l0, l1) = (b.chunks[0].len, b.chunks[1].len);
                b.chunks[0].len = l1;
                b.chunks[1].offset = b.chunks[0].offset + l1;
                b.chunks[1].len = l0;
            }),
        ),
        ("row groups claimed 2^24", Box::new(|b, _| b.row_groups = 1 << 24)),
        ("leaves claimed 2^16", Box::new(|b, _| b.leaves = 1 << 16)),
        ("no chunks at all", Box::new(|b, _| b.chunks.clear())),
        ("empty parquet metadata", Box::new(|b, _| b.parquet_metadata.clear())),
        (
            "parquet metadata of 0xff",
            Box::new(|b, _| b.parquet_metadata.fill(0xff)),
        ),
        (
            "truncated parquet metadata",
            Box::new(|b, _| {
                let n = b.parquet_metadata.len() / 2;
                b.parquet_metadata.truncate(n)
            }),
        ),
        (
            "a chunk's tags digest changed",
            Box::new(|b, _| b.chunks[2].tags_digest[0] ^= 1),
        ),
        ("chunks removed from the file", Box::new(|_, c| c.truncate(4))),
    ];
    for (label, edit) in cases {
        expect_err(&fx, forge(&file, edit), &format!("forged none footer: {label}"), typed);
    }
}

/// Every byte of a `none` file's Parquet metadata replaced by a few values, re-sealed with a valid
/// checksum: the reader may refuse (typed error) or read, but never panic or allocate beyond the
/// bound.
#[test]
fn forged_none_parquet_metadata_bytes() {
    let _serial = serial();
    let fx = Fixture::new();
    let file = small_file(&fx, Algorithm::None);
    let (env_start, env_len, body_len) = layout(&file);
    let sealed = &file[env_start + env_len..env_start + env_len + body_len];
    let meta_len = FooterBody::decode(&sealed[..sealed.len() - 32])
        .unwrap()
        .parquet_metadata
        .len();
    let mut failures = Vec::new();
    for i in 0..meta_len {
        for v in [0x00u8, 0x7f, 0xff] {
            let f = forge(&file, |b, _| b.parquet_metadata[i] = v);
            match try_open_measured(&fx, f, &format!("parquet metadata byte {i} set to {v:#04x}")) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if refused(&e) || matches!(e, Error::Parquet(_) | Error::Arrow(_)) => {}
                Ok(Err(e)) => failures.push(format!("byte {i} = {v:#04x}: untyped error {e:?}")),
                Err(p) => failures.push(format!("byte {i} = {v:#04x}: PANIC: {p}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} forged metadata bytes were not handled (a panic is a bug even for `none`: any \
         writer of the file can compute its checksum):\n{}",
        failures.len(),
        meta_len * 3,
        failures.join("\n")
    );
}
