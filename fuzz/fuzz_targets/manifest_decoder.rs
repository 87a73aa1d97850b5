//! Fuzz target `manifest_decoder`: see `colvault::fuzzing::manifest_decoder`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| colvault::fuzzing::manifest_decoder(data));
