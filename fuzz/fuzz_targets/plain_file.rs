//! Fuzz target `plain_file`: see `colvault::fuzzing::plain_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| colvault::fuzzing::plain_file(data));
