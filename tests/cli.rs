//! The command line: `check`, `--version`, `$FULCRUM_CONFIG`, and errors that name the place.

mod support;

use std::process::Command;

fn fulcrum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fulcrum"))
}

#[test]
fn check_accepts_the_example_config_with_a_summary() {
    let out = fulcrum()
        .args(["check", "-c", "conf/fulcrum.toml"])
        .output()
        .expect("run fulcrum check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "conf/fulcrum.toml must pass: {out:?}");
    assert!(stdout.contains("conf/fulcrum.toml: ok"), "{stdout}");
    assert!(
        stdout.contains("listener \"web\""),
        "the summary lists listeners: {stdout}"
    );
    assert!(
        stdout.contains("upstream \"app\" round_robin, health tcp:"),
        "the summary spells settings as the file does: {stdout}"
    );
}

#[test]
fn check_reads_fulcrum_config_from_the_environment() {
    let out = fulcrum()
        .arg("check")
        .env("FULCRUM_CONFIG", "conf/fulcrum.toml")
        .output()
        .expect("run fulcrum check");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_bad_file_is_one_error_line_with_its_place_and_exit_1() {
    let dir = support::temp_dir("cli");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:1\"\nprotocol = \"http\"\nupstream = \"app\"\n\n\
[upstream.app]\nbackends = [{ addr = \"127.0.0.1:2\", weight = 0 }]\n",
    )
    .expect("write");
    let out = fulcrum()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "an invalid file exits 1");
    let want = format!("error: {}:8:", path.display());
    assert!(
        stderr.starts_with(&want),
        "error must name file:line:col: {stderr}"
    );
    assert!(stderr.contains("weight 0"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = fulcrum()
        .args(["check", "-c", "/nonexistent/fulcrum.toml"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.starts_with("error: /nonexistent/fulcrum.toml: "),
        "{stderr}"
    );
}

#[test]
fn version_prints_the_version() {
    let out = fulcrum().arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn run_with_a_port_in_use_fails_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = support::temp_dir("cli");
    let path = dir.join("f.toml");
    std::fs::write(
        &path,
        format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\nupstream = \"app\"\n\n\
[upstream.app]\nbackends = [{{ addr = \"127.0.0.1:2\" }}]\n"
        ),
    )
    .expect("write");
    let out = fulcrum().arg("-c").arg(&path).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("listener \"web\": cannot bind 127.0.0.1:{port}")),
        "{stderr}"
    );
}
