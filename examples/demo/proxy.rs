//! The real fulcrum process: where its binary is, starting and signalling it, and its view of
//! the backends, read from the admin listener's `/status` or, without one, from its log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep};

use crate::plan::{N, ROLES};

/// The `fulcrum` binary of this example's profile: `target/<profile>/examples/demo` runs
/// `target/<profile>/fulcrum`. `cargo run --example` builds the example only, and a binary
/// left by an older build would show old behaviour, so under cargo (`$CARGO` is set) the demo
/// asks cargo to bring the binary up to date first: a no-op when it is.
pub fn locate() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the demo's own path")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected example path")?;
    let bin = profile_dir.join(format!("fulcrum{}", std::env::consts::EXE_SUFFIX));
    if let Some(cargo) = std::env::var_os("CARGO") {
        // The directory is named after the profile, except `dev`'s.
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        println!("building fulcrum: cargo build --profile {profile} --bin fulcrum");
        let status = Command::new(cargo)
            .args(["build", "--profile", profile, "--bin", "fulcrum"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!("cargo build --bin fulcrum failed ({status})");
        }
    }
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo build --release` first, or start the demo with \
             `cargo run --release --example demo`",
            bin.display()
        );
    }
    Ok(bin)
}

/// The fulcrum process; killed if the demo ends early.
pub struct Process(Child);

impl Process {
    /// `bin -c config`, stderr (its log) to `log`.
    pub fn start(bin: &Path, config: &Path, log: &Path) -> Result<Process> {
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Process(child))
    }

    /// Waits until the http listener accepts; a fulcrum that exits instead shows its log.
    pub async fn wait_ready(&mut self, web: SocketAddr, log: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                bail!("fulcrum exited at start ({status}):\n{text}");
            }
            if TcpStream::connect(web).await.is_ok() {
                return Ok(());
            }
            sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "fulcrum did not listen on {web} within 10 s; its log: {}",
            log.display()
        )
    }

    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = i32::try_from(self.0.id()).context("pid out of range")?;
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM, then up to 5 s for the drain (demo.toml's `shutdown_timeout` is 2 s); how it
    /// ended, in words.
    pub async fn terminate(&mut self) -> String {
        if let Err(e) = self.signal(libc::SIGTERM) {
            return e.to_string();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.0.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) => sleep(Duration::from_millis(50)).await,
                Err(e) => return e.to_string(),
            }
        }
        let _ = self.0.kill();
        "still running 5 s after SIGTERM, killed".to_owned()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// fulcrum's view of the HTTP backends, those of `ROLES`.
pub struct View {
    /// `Some(true)` up, `Some(false)` down, `None` unknown.
    pub health: [Option<bool>; N],
    pub weights: [u64; N],
    /// Read from `/status`; otherwise health comes from the log and weights from the file.
    pub from_status: bool,
}

/// `/status` when the admin listener answers; otherwise the latest "backend down" / "backend
/// up" line of each backend in the log (backends start healthy) and the weights written.
pub async fn view(
    admin: Option<SocketAddr>,
    log: &Path,
    addrs: &[SocketAddr; N],
    weights: &[u32; N],
) -> View {
    if let Some(view) = from_status(admin, addrs).await {
        return view;
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let health = std::array::from_fn(|i| {
        let addr = format!("addr={}", addrs[i]);
        let mine = |l: &&str| l.split_whitespace().any(|w| w == addr);
        let latest = text.lines().rev().filter(mine).find_map(|l| {
            if l.contains("backend down") {
                Some(false)
            } else {
                l.contains("backend up").then_some(true)
            }
        });
        Some(latest.unwrap_or(true))
    });
    View {
        health,
        weights: weights.map(u64::from),
        from_status: false,
    }
}

async fn from_status(admin: Option<SocketAddr>, addrs: &[SocketAddr; N]) -> Option<View> {
    let body = crate::traffic::fetch(admin?, "/status").await.ok()?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    let upstreams = json["upstreams"].as_array()?;
    // Each backend in its own upstream: the same address could serve two.
    let find = |i: usize| {
        let addr = addrs[i].to_string();
        upstreams.iter().find(|u| u["name"] == ROLES[i].upstream)?["backends"]
            .as_array()?
            .iter()
            .find(|b| b["addr"].as_str() == Some(&addr))
    };
    let seen: [Option<&serde_json::Value>; N] = std::array::from_fn(find);
    Some(View {
        health: seen.map(|b| b.and_then(|b| b["healthy"].as_bool())),
        weights: seen.map(|b| b.and_then(|b| b["weight"].as_u64()).unwrap_or(0)),
        from_status: true,
    })
}

/// The log lines worth seeing after the run (backends down and up, reloads), each with its
/// time since the first request, to match the table's `t`.
pub fn log_timeline(log: &str, start: SystemTime) -> String {
    let mut out = String::new();
    for line in log.lines().filter(|l| {
        ["backend down", "backend up", "reload"]
            .iter()
            .any(|k| l.contains(k))
    }) {
        // Text format: `2026-01-01T12:00:00.123456Z  INFO fulcrum::upstream: backend down ...`
        let mut parts = line.split_whitespace();
        let at = parts
            .next()
            .and_then(|ts| humantime::parse_rfc3339_weak(ts).ok());
        let message = line.split_once(": ").map_or(line, |(_, m)| m);
        match at.and_then(|at| at.duration_since(start).ok()) {
            Some(d) => out.push_str(&format!("  {:>5.1}s  {message}\n", d.as_secs_f64())),
            None => out.push_str(&format!("  {line}\n")),
        }
    }
    if out.is_empty() {
        return out;
    }
    format!("fulcrum logged:\n{out}")
}
