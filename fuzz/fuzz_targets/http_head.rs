//! Any bytes as one HTTP client connection through fulcrum's real serving path (see
//! `fulcrum::fuzzing`): a panic, a hang, an answer that is not HTTP or a forwarding rule
//! broken on the way to the backend is a bug.
#![no_main]

use std::sync::OnceLock;

use fulcrum::fuzzing::HttpHead;
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

/// One runtime and one backend for the whole run: the backend's tasks run whenever an input
/// does. Each input still gets fresh live state (`HttpHead::run`).
fn harness() -> &'static (Runtime, HttpHead) {
    static HARNESS: OnceLock<(Runtime, HttpHead)> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let head = rt.block_on(HttpHead::start()).expect("in-process backend");
        (rt, head)
    })
}

fuzz_target!(|data: &[u8]| {
    let (rt, head) = harness();
    if let Err(broken) = rt.block_on(head.run(data)) {
        panic!("{broken}");
    }
});
