//! `conf/demo.toml`, the file `cargo run --release --example demo` reads, stays valid.

use std::process::Command;

#[test]
fn check_accepts_the_demo_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["check", "-c", "conf/demo.toml"])
        .output()
        .expect("run fulcrum check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the demo's config must pass `fulcrum check`: {out:?}"
    );
    assert!(stdout.contains("conf/demo.toml: ok"), "{stdout}");
}
