//! Fuzz target `footer_decoder`: see `colvault::fuzzing::footer_decoder`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| colvault::fuzzing::footer_decoder(data));
