//! The scanner, typed views and response writer on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sipreg::fuzzing::scan(data));
