//! The Docker engine, driven through the `docker` command: the test base image (made once
//! from Debian's packages and kept in the engine), fulcrum's image (built once per test
//! process from the repository's Dockerfile and the binary under test), and containers and
//! networks that remove themselves when dropped, so a failing test leaves nothing behind.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::support;

/// The base of every test container. No registry is reachable here, so it is made with
/// `debootstrap --variant=minbase` (plus ca-certificates, which fulcrum's runtime stage
/// needs, and busybox, whose `httpd` serves as the backends) and kept in the engine under
/// this tag: only the first run on a machine pays for it (about a minute and a half).
pub const BASE: &str = "fulcrum-test-base:bookworm";

/// Every container and network a test makes carries this label; images too.
const LABEL: &str = "fulcrum.test=1";

/// Runs `docker ARGS`; its trimmed stdout, or an error naming the command and its stderr.
pub fn try_docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `docker ARGS`, which must succeed.
pub fn docker(args: &[&str]) -> String {
    try_docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// A name unique to this test process, and made from its pid so that a later run can tell
/// a leftover (its process is gone) from a neighbour's.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("fulcrum-t{}-{tag}-{n}", std::process::id())
}

/// fulcrum's image, built once per test process; every test that needs it waits for the
/// first build. A failure is reported to each of them.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    match IMAGE.get_or_init(build_image) {
        Ok(id) => id,
        Err(e) => panic!("building fulcrum's image failed: {e}"),
    }
}

fn build_image() -> Result<String, String> {
    let start = Instant::now();
    remove_leftovers();
    ensure_base()?;
    // The build context of `--target prebuilt`: the Dockerfile, the baked-in config and the
    // binary under test where the Dockerfile expects a release build. Debug info is
    // stripped (130 MB -> 22 MB) so the context is sent quickly.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ctx = support::temp_dir("image");
    std::fs::create_dir_all(ctx.join("conf")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(ctx.join("target/release")).map_err(|e| e.to_string())?;
    for file in ["Dockerfile", "conf/container.toml"] {
        std::fs::copy(root.join(file), ctx.join(file)).map_err(|e| format!("{file}: {e}"))?;
    }
    let bin = ctx.join("target/release/fulcrum");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&bin)
        .arg(support::BIN)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(support::BIN, &bin).map_err(|e| format!("copy the binary: {e}"))?;
    }
    let base = format!("RUNTIME_IMAGE={BASE}");
    let ctx_arg = ctx.to_string_lossy().into_owned();
    let id = try_docker(&[
        "build",
        "-q",
        "--target",
        "prebuilt",
        "--build-arg",
        &base,
        "--label",
        LABEL,
        "-t",
        "fulcrum-test:dev",
        &ctx_arg,
    ])?;
    let _ = std::fs::remove_dir_all(&ctx);
    // The image this tag named before is now dangling: remove it unless a container of a
    // run still going uses it.
    let _ = try_docker(&[
        "image",
        "prune",
        "-f",
        "--filter",
        &format!("label={LABEL}"),
    ]);
    eprintln!("fulcrum's image {id} built in {:?}", start.elapsed());
    Ok(id)
}

/// Makes the base image unless the engine has it. Several test processes may start at
/// once: an exclusive lock on a file makes one of them build it and the others wait.
fn ensure_base() -> Result<(), String> {
    let lock = std::fs::File::create(std::env::temp_dir().join("fulcrum-test-base.lock"))
        .map_err(|e| format!("lock file: {e}"))?;
    // SAFETY: flock(2) on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err("cannot lock the base image's lock file".into());
    }
    if try_docker(&["image", "inspect", "--format", "{{.Id}}", BASE]).is_ok() {
        return Ok(());
    }
    let start = Instant::now();
    let dir = support::temp_dir("rootfs");
    let rootfs = dir.join("root");
    // /usr/sbin is not on every PATH (a non-root shell); debootstrap must run as root anyway.
    let debootstrap = ["/usr/sbin/debootstrap", "debootstrap"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("debootstrap");
    let out = Command::new(debootstrap)
        .args([
            "--variant=minbase",
            "--include=ca-certificates,busybox",
            "bookworm",
        ])
        .arg(&rootfs)
        .output()
        .map_err(|e| format!("cannot run debootstrap (apt-get install debootstrap): {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "debootstrap failed: {}",
            [&out.stdout[..], &out.stderr[..]]
                .concat()
                .as_slice()
                .utf8_chunks()
                .map(|c| c.valid().to_owned())
                .collect::<String>()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    // What debian:bookworm-slim leaves out too: docs, manuals, translations, apt's caches.
    for d in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/cache/apt",
        "var/lib/apt/lists",
        "var/log",
    ] {
        let p = rootfs.join(d);
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::create_dir_all(&p);
    }
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("tar: {e}"))?;
    let stdout = tar.stdout.take().ok_or("tar has no stdout")?;
    let import = Command::new("docker")
        .args(["import", "-c", "CMD [\"/bin/sh\"]", "-", BASE])
        .stdin(stdout)
        .output()
        .map_err(|e| format!("docker import: {e}"))?;
    let tarred = tar.wait().map_err(|e| format!("tar: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !tarred.success() {
        // A truncated root file system must not be cached as the base for good.
        let _ = Command::new("docker").args(["rmi", "-f", BASE]).output();
        return Err(format!(
            "tar of the base's root file system failed: {tarred}"
        ));
    }
    if !import.status.success() {
        return Err(format!(
            "docker import: {}",
            String::from_utf8_lossy(&import.stderr)
        ));
    }
    eprintln!("base image {BASE} made in {:?}", start.elapsed());
    Ok(())
}

/// Containers and networks of test processes that are gone (killed before their guards
/// ran): removed, so that they hold no ports, addresses or disk.
fn remove_leftovers() {
    let alive = |name: &str| {
        name.strip_prefix("fulcrum-t")
            .and_then(|r| r.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_none_or(|pid| Path::new(&format!("/proc/{pid}")).exists())
    };
    let filter = format!("label={LABEL}");
    let names = try_docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
    for name in names.unwrap_or_default().lines().filter(|n| !alive(n)) {
        let _ = try_docker(&["rm", "-f", "-v", name]);
    }
    let nets = try_docker(&[
        "network",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Name}}",
    ]);
    for name in nets.unwrap_or_default().lines().filter(|n| !alive(n)) {
        let _ = try_docker(&["network", "rm", name]);
    }
}

/// A user-defined bridge network (it has Docker's DNS for container names), removed on drop.
pub struct Network {
    pub name: String,
}

impl Network {
    pub fn create(tag: &str) -> Network {
        let name = unique(tag);
        docker(&["network", "create", "--label", LABEL, &name]);
        Network { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = try_docker(&["network", "rm", &self.name]);
    }
}

/// A running container, removed (with its anonymous volumes) on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name NAME ARGS`; `args` are `run`'s options, the image and its
    /// command.
    pub fn run(name: &str, args: &[&str]) -> Container {
        let mut all = vec!["run", "-d", "--name", name, "--label", LABEL];
        all.extend_from_slice(args);
        // The guard exists before the container does: a failed `run` leaves nothing either.
        let c = Container {
            name: name.to_owned(),
        };
        docker(&all);
        c
    }

    /// The host port on 127.0.0.1 that the container's `port`/tcp is published on.
    pub fn port(&self, port: u16) -> std::net::SocketAddr {
        let out = docker(&["port", &self.name, &format!("{port}/tcp")]);
        out.lines()
            .find_map(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: {port}/tcp is not published: {out:?}", self.name))
    }

    pub fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .expect("docker logs");
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        s
    }

    /// `docker inspect -f FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "-f", format, &self.name])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = try_docker(&["rm", "-f", "-v", &self.name]);
    }
}

/// A backend: busybox's httpd on `port`, answering `GET /` with `name` and `GET /healthz`
/// with `ok`. It exits at once on SIGTERM (`docker stop`), as most applications do.
pub fn backend(name: &str, network: &[&str], port: u16) -> Container {
    let script = format!(
        "trap 'exit 0' TERM; mkdir -p /www && echo {name} > /www/index.html \
         && echo ok > /www/healthz && busybox httpd -f -p {port} -h /www & wait"
    );
    let mut args = network.to_vec();
    args.extend_from_slice(&["--entrypoint", "/bin/sh", BASE, "-c", &script]);
    Container::run(name, &args)
}

/// A directory holding `fulcrum.toml`, to mount on /etc/fulcrum as a ConfigMap would be.
pub struct ConfigDir {
    pub dir: std::path::PathBuf,
}

impl ConfigDir {
    pub fn new(toml: &str) -> ConfigDir {
        let c = ConfigDir {
            dir: support::temp_dir("mounted"),
        };
        c.write(toml);
        c
    }

    /// Replaces the file whole (a rename), so fulcrum never reads half of it.
    pub fn write(&self, toml: &str) {
        let tmp = self.dir.join(".fulcrum.toml.new");
        let mut f = std::fs::File::create(&tmp).expect("write config");
        f.write_all(toml.as_bytes()).expect("write config");
        drop(f);
        std::fs::rename(&tmp, self.dir.join("fulcrum.toml")).expect("rename config");
    }

    /// The `-v` argument that mounts it read-only on /etc/fulcrum.
    pub fn mount(&self) -> String {
        format!("{}:/etc/fulcrum:ro", self.dir.display())
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
