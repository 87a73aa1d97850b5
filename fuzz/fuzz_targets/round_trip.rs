//! Fuzz target `round_trip`: see `colvault::fuzzing::round_trip`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| colvault::fuzzing::round_trip(data));
