//! TCP stream framing with arbitrary chunking.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sipreg::fuzzing::frame_stream(data));
