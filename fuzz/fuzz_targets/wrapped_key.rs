//! Fuzz target `wrapped_key`: see `colvault::fuzzing::wrapped_key`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| colvault::fuzzing::wrapped_key(data));
