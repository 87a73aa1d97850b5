//! Fuzz target `import_csv`: see `colvault::fuzzing::import_csv`. Panics that colvault contains (turns into
//! `Error::Malformed`) are not crashes; any other panic is.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    colvault::fuzzing::abort_on_uncontained_panics();
    colvault::fuzzing::import_csv(data)
});
