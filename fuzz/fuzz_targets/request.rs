//! The whole sans-IO request path: bytes in, answers and timers out.
#![no_main]
use std::cell::RefCell;

use sipreg::fuzzing::RequestHarness;

thread_local! {
    static HARNESS: RefCell<RequestHarness> = RefCell::new(RequestHarness::new());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        let mut h = h.borrow_mut();
        // A fresh table now and then keeps memory bounded across millions of runs.
        if h.runs() >= 50_000 {
            *h = RequestHarness::new();
        }
        h.run(data);
    });
});
