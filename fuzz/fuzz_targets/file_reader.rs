//! Fuzz target `file_reader`: see `colvault::fuzzing::file_reader`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| colvault::fuzzing::file_reader(data));
