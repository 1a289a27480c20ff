// cargo run --release --example demo
//! The fulcrum demo: real backends, live traffic through the real `fulcrum` binary, two
//! services behind one listener (a route sends `/api/...` to its own upstream, prefix
//! stripped), one backend stopped and restarted, new weights by SIGHUP, and the count of
//! failed requests (zero expected) at the end.
//!
//! Every port comes from `conf/demo.toml`, read with fulcrum's own config loader, so the file
//! and the demo cannot disagree. fulcrum runs on a temporary copy of that file (the demo
//! rewrites the copy's weights) and logs to a temporary file, so the table stays readable.
//! Everything listens on 127.0.0.1, and the demo ends by itself after about 20 seconds.
//!
//! - `plan`: the backends and their parts, the ports and the api route, from the config.
//! - `backends`: the HTTP backends of different speed and the TCP echo backend.
//! - `traffic`: the keep-alive HTTP clients, the TCP sessions, what they saw.
//! - `proxy`: finding, starting, signalling the binary; its view from `/status` or its log.
//! - `table`: the live table and the closing summary.

mod backends;
mod plan;
mod proxy;
mod table;
mod traffic;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use fulcrum::config::Config;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use backends::Backend;
use plan::{N, Plan, ROLES};
use traffic::Shared;

/// The demo's configuration in the repository.
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/demo.toml");
/// Concurrent keep-alive HTTP clients.
const CLIENTS: usize = 8;
/// The timeline, in seconds from the first request.
const RUN_SECS: u64 = 20;
const STOP_AT: u64 = 6;
const RESTART_AT: u64 = 11;
const RELOAD_AT: u64 = 16;
/// The backend stopped and restarted: the fast one carries the most traffic, so its loss shows.
const VICTIM: usize = 0;
/// The weights of the first backends of `ROLES` (fast, medium, slow of upstream "web") that
/// the reload at `RELOAD_AT` brings.
const NEW_WEIGHTS: [u32; 3] = [1, 2, 6];

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(r) => r.block_on(run()),
        Err(e) => Err(anyhow!("cannot start the tokio runtime: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let text = std::fs::read_to_string(CONFIG).with_context(|| format!("cannot read {CONFIG}"))?;
    let config = Config::from_toml(&text, Path::new(CONFIG)).map_err(|e| anyhow!("{e}"))?;
    let plan =
        Plan::from_config(&config).with_context(|| format!("{CONFIG} is not the demo's shape"))?;

    let bin = proxy::locate()?;
    // fulcrum's ports must be free too: it would fail to start, and say so less plainly.
    let mut ours = vec![
        (plan.web, "fulcrum's http listener"),
        (plan.tcp, "fulcrum's tcp listener"),
    ];
    ours.extend(plan.admin.map(|a| (a, "fulcrum's admin listener")));
    for (addr, what) in ours {
        drop(backends::bind(addr, what).await?);
    }
    let mut backends = Vec::new();
    for (role, addr) in ROLES.iter().zip(plan.backends) {
        backends.push(Backend::start(role.name, addr, role.delay).await?);
    }
    tokio::spawn(backends::serve_echo(
        backends::bind(plan.echo, "the echo backend").await?,
    ));

    let dir = std::env::temp_dir().join(format!("fulcrum-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (conf, log) = (dir.join("demo.toml"), dir.join("fulcrum.log"));
    std::fs::write(&conf, &text).with_context(|| format!("cannot write {}", conf.display()))?;
    let mut proc = proxy::Process::start(&bin, &conf, &log)?;
    proc.wait_ready(plan.web, &log).await?;
    println!(
        "fulcrum {} runs on {}, logs to {}",
        bin.display(),
        conf.display(),
        log.display()
    );

    let stats: Shared = Arc::default();
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let api: Arc<str> = Arc::from(plan.api_prefix.as_str());
    for _ in 0..CLIENTS {
        tasks.spawn(traffic::client(
            plan.web,
            Arc::clone(&api),
            Arc::clone(&stats),
            stop.clone(),
        ));
    }
    tasks.spawn(traffic::tcp_sessions(
        plan.tcp,
        Arc::clone(&stats),
        stop.clone(),
    ));

    let tty = std::io::stdout().is_terminal();
    let mut weights = plan.weights;
    let mut events = String::new();
    let mut busy_before = [0u64; N];
    let mut status_seen = false;
    let mut victim_at_restart = 0;
    let (start, start_wall) = (Instant::now(), SystemTime::now());
    for t in 1..=RUN_SECS {
        tokio::time::sleep_until(start + Duration::from_secs(t)).await;
        let window = std::mem::take(&mut traffic::lock(&stats).window);
        let view = proxy::view(plan.admin, &log, &plan.backends, &weights).await;
        status_seen |= view.from_status;
        let rows: Vec<table::Row> = backends
            .iter()
            .zip(window)
            .enumerate()
            .map(|(i, (b, mut latencies))| {
                let busy = b.busy_us.load(Ordering::Relaxed);
                let before = std::mem::replace(&mut busy_before[i], busy);
                let in_flight = busy.saturating_sub(before) as f64 / 1e6;
                latencies.sort_unstable();
                table::Row {
                    upstream: ROLES[i].upstream,
                    backend: b,
                    health: view.health[i],
                    weight: view.weights[i],
                    latencies,
                    in_flight,
                }
            })
            .collect();
        let frame = table::render(t, &rows, &traffic::lock(&stats), &view, &plan);
        if tty {
            print!("\x1b[H\x1b[2J{frame}{events}");
        } else {
            print!("{frame}");
        }
        let _ = std::io::stdout().flush();
        let victim = format!("{} {}", backends[VICTIM].name, backends[VICTIM].addr);
        let event = match t {
            STOP_AT => {
                backends[VICTIM].stop();
                format!("{victim} stopped: its listener and open connections are gone")
            }
            RESTART_AT => match backends[VICTIM].restart().await {
                Ok(()) => {
                    victim_at_restart = traffic::lock(&stats).totals[VICTIM];
                    format!(
                        "{victim} restarted: health checks bring it back, slow_start ramps it up"
                    )
                }
                Err(e) => format!("{victim} could not restart: {e:#}"),
            },
            RELOAD_AT => match reload(&conf, &plan.backends, &proc) {
                Ok(()) => {
                    for (w, new) in weights.iter_mut().zip(NEW_WEIGHTS) {
                        *w = new;
                    }
                    let [f, m, s] = NEW_WEIGHTS;
                    format!(
                        "weights fast {f}, medium {m}, slow {s} written to the config copy, SIGHUP sent"
                    )
                }
                Err(e) => format!("no reload: {e:#}"),
            },
            _ => continue,
        };
        let line = format!("  {t:>2}s  {event}\n");
        if !tty {
            print!("{line}");
        }
        events.push_str(&line);
    }
    stop.cancel();
    // Requests in progress finish; one that hangs (a fulcrum gone wrong) must not hold the end.
    let drained = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(traffic::REQUEST_TIMEOUT, drained).await;
    tasks.abort_all();
    let exit = proc.terminate().await;

    let stats = traffic::lock(&stats);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    print!("{}", table::summary(&stats, &backends, &plan));
    print!("{}", proxy::log_timeline(&log_text, start_wall));
    if stats.totals[VICTIM] == victim_at_restart {
        println!(
            "note: {} got no traffic after its restart: this fulcrum build has no active health \
             checks yet, and a backend marked down stays down without them",
            backends[VICTIM].name
        );
    }
    print!("{}", table::next_steps(&plan, status_seen, &conf, &log));
    println!("fulcrum stopped by SIGTERM: {exit}");
    Ok(())
}

/// Writes `NEW_WEIGHTS` into fulcrum's config copy (for the first backends of `addrs`, as
/// many as it has), checks the result as fulcrum will, and sends SIGHUP.
fn reload(conf: &Path, addrs: &[SocketAddr; N], proc: &proxy::Process) -> Result<()> {
    let text =
        std::fs::read_to_string(conf).with_context(|| format!("cannot read {}", conf.display()))?;
    let new = rewrite_weights(&text, addrs, &NEW_WEIGHTS);
    Config::from_toml(&new, conf).map_err(|e| anyhow!("{e}"))?;
    std::fs::write(conf, new).with_context(|| format!("cannot write {}", conf.display()))?;
    proc.signal(libc::SIGHUP)
}

/// The config text with the weight of each backend in `addrs` set to `weights`: the line that
/// names the backend's address keeps everything else.
fn rewrite_weights(text: &str, addrs: &[SocketAddr], weights: &[u32]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let hit = addrs
            .iter()
            .zip(weights)
            .find(|(a, _)| line.contains(&format!("\"{a}\"")));
        match (hit, line.find("weight = ")) {
            (Some((_, w)), Some(at)) => {
                let rest = &line[at + "weight = ".len()..];
                let digits = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                out.push_str(&format!("{}weight = {w}{}", &line[..at], &rest[digits..]));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
