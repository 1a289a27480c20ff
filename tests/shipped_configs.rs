//! Every fulcrum config we ship, in `conf/` and inside the Kubernetes manifests, passes
//! `fulcrum check`; the manifests run the image the README builds, in any namespace. (Their
//! schema is checked by `.ci/run`, with kubernetes-validate.)

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
        for (i, toml) in support::embedded_configs(&yaml).into_iter().enumerate() {
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

/// The image tag the README's build commands give: `fulcrum:` and the crate's version.
fn readme_image() -> String {
    format!("fulcrum:{}", env!("CARGO_PKG_VERSION"))
}

#[test]
fn the_readme_builds_the_image_that_the_kubernetes_manifests_run() {
    let image = readme_image();
    let readme = std::fs::read_to_string("README.md").expect("README.md");
    assert!(
        readme.contains(&format!("docker build -t {image} .")),
        "the README must say how to build {image}"
    );
    for name in ["sidecar.yaml", "edge.yaml"] {
        let yaml = std::fs::read_to_string(Path::new("examples/kubernetes").join(name))
            .expect("read manifest");
        let images: Vec<&str> = yaml
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .filter(|i| i.contains("fulcrum"))
            .collect();
        assert!(
            !images.is_empty() && images.iter().all(|i| *i == image),
            "{name} must run the image the README builds ({image}), not {images:?}"
        );
        // A namespace written into a DNS name breaks the manifest in any other namespace.
        assert!(
            !yaml.contains(".default.svc") && !yaml.contains("namespace: default"),
            "{name} must not hard-code the namespace `default`"
        );
    }
}
