//! Every fulcrum config we ship, in `conf/` and inside the Kubernetes manifests, passes
//! `fulcrum check`.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

fn check(path: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .arg("check")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run fulcrum check");
    assert!(
        out.status.success(),
        "{} must pass fulcrum check: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `fulcrum.toml: |` blocks of a YAML file, dedented.
fn embedded_configs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = yaml.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_end().ends_with("fulcrum.toml: |") {
            let key_indent = line.len() - line.trim_start().len();
            let mut block = Vec::new();
            for l in &lines[i + 1..] {
                let indent = l.len() - l.trim_start().len();
                if !l.trim().is_empty() && indent <= key_indent {
                    break;
                }
                block.push(*l);
            }
            let strip = block
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            let text: Vec<&str> = block.iter().map(|l| l.get(strip..).unwrap_or("")).collect();
            out.push(text.join("\n"));
        }
    }
    out
}

#[test]
fn every_config_in_conf_passes_check() {
    let mut n = 0;
    for entry in std::fs::read_dir("conf").expect("conf/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            check(&path);
            n += 1;
        }
    }
    assert!(n >= 1, "conf/ holds at least the example config");
}

#[test]
fn every_config_in_the_kubernetes_manifests_passes_check() {
    let dir = support::temp_dir("k8s");
    let mut n = 0;
    for entry in std::fs::read_dir("examples/kubernetes").expect("examples/kubernetes/") {
        let path: PathBuf = entry.expect("entry").path();
        let yaml = std::fs::read_to_string(&path).expect("read manifest");
        for (i, toml) in embedded_configs(&yaml).into_iter().enumerate() {
            let name = format!(
                "{}-{i}.toml",
                path.file_stem().and_then(|s| s.to_str()).unwrap_or("m")
            );
            let file = dir.join(name);
            std::fs::write(&file, toml).expect("write");
            check(&file);
            n += 1;
        }
    }
    assert!(
        n >= 2,
        "the sidecar and edge manifests carry configs, found {n}"
    );
}
