//! What the demo prints: a frame of the live table every second, then a summary.

use std::fmt::Write;
use std::path::Path;

use crate::backends::Backend;
use crate::plan::{Plan, ROLES};
use crate::proxy::View;
use crate::traffic::Stats;
use crate::{RELOAD_AT, RESTART_AT, RUN_SECS, STOP_AT};

/// One backend's line: what the clients saw in the last second, and fulcrum's view.
pub struct Row<'a> {
    /// Its upstream in the config.
    pub upstream: &'static str,
    pub backend: &'a Backend,
    pub health: Option<bool>,
    pub weight: u64,
    /// Latencies (µs) of the answers it gave, sorted.
    pub latencies: Vec<u32>,
    /// Average requests in flight at the backend.
    pub in_flight: f64,
}

/// What second `t` of the timeline is about.
fn phase(t: u64) -> &'static str {
    match t {
        0..STOP_AT => "all up: least_load sends the most requests to the fastest backend",
        STOP_AT..RESTART_AT => {
            "fast stopped: fulcrum fails over on connect errors and marks it down"
        }
        RESTART_AT..RELOAD_AT => {
            "fast restarted: health checks mark it up, slow_start ramps it over 3 s"
        }
        _ => "new weights by SIGHUP: the slow backend takes a larger share",
    }
}

/// Answers in `rows` from backends of `upstream`.
fn answers(rows: &[Row], upstream: &str) -> usize {
    rows.iter()
        .filter(|r| r.upstream == upstream)
        .map(|r| r.latencies.len())
        .sum()
}

/// One frame: a headline, then a line per backend.
pub fn render(t: u64, rows: &[Row], stats: &Stats, view: &View, plan: &Plan) -> String {
    let total: usize = rows.iter().map(|r| r.latencies.len()).sum();
    let mut out = format!(
        "fulcrum demo  t={t:>2}s/{RUN_SECS}  {total} requests/s ({} by route \"api\" to {}/)  failed {}  tcp sessions {} ok, {} failed\n{}\n\n",
        answers(rows, "api"),
        plan.api_prefix,
        stats.failures,
        stats.tcp_ok,
        stats.tcp_failed,
        phase(t - 1),
    );
    out.push_str("  upstream  backend        addr             process  fulcrum  weight  share          in-flight      p50      p99\n");
    for r in rows {
        let b = r.backend;
        // The share of its upstream's answers: what the balancing policy decides.
        let of = answers(rows, r.upstream);
        let share = if of == 0 {
            0.0
        } else {
            r.latencies.len() as f64 / of as f64
        };
        let health = r.health.map_or("?", |up| if up { "up" } else { "down" });
        let _ = writeln!(
            out,
            "  {:<9} {:<14} {:<16} {:<8} {:<8} {:>6}  {:>3.0}% {:<10} {:>6.1} {:>10} {:>8}",
            r.upstream,
            format!("{} ({} ms)", b.name, b.delay.as_millis()),
            b.addr,
            if b.is_running() { "running" } else { "stopped" },
            health,
            r.weight,
            share * 100.0,
            "█".repeat((share * 10.0).round() as usize),
            r.in_flight,
            quantile(&r.latencies, 0.50),
            quantile(&r.latencies, 0.99),
        );
    }
    let source = match (view.from_status, plan.admin) {
        (true, Some(a)) => format!("http://{a}/status"),
        _ => "its log (no /status yet)".to_owned(),
    };
    let _ = writeln!(
        out,
        "  fulcrum: its view, from {source}; share: of its upstream's answers; in-flight: mean \
         at the backend; p50/p99: as the clients saw them\n"
    );
    out
}

/// The `q` quantile of sorted latencies in µs, in milliseconds; "-" when there are none.
fn quantile(sorted: &[u32], q: f64) -> String {
    if sorted.is_empty() {
        return "-".to_owned();
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    format!("{:.1} ms", f64::from(sorted[at]) / 1000.0)
}

/// Totals of the whole run, per upstream and backend.
pub fn summary(stats: &Stats, backends: &[Backend], plan: &Plan) -> String {
    let total: u64 = stats.totals.iter().sum();
    let mut out = String::from("\n── summary ─────────────────────────────────────────────\n");
    let _ = writeln!(
        out,
        "{total} HTTP requests through {}: {} failed",
        plan.web, stats.failures
    );
    for s in &stats.samples {
        let _ = writeln!(out, "  failure: {s}");
    }
    for (upstream, how) in [
        ("web", "the listener's default".to_owned()),
        (
            "api",
            format!("route \"api\": {}/..., prefix stripped", plan.api_prefix),
        ),
    ] {
        let mine = || {
            ROLES
                .iter()
                .zip(backends.iter().zip(stats.totals))
                .filter(move |(r, _)| r.upstream == upstream)
                .map(|(_, b)| b)
        };
        let of: u64 = mine().map(|(_, n)| n).sum();
        let _ = writeln!(out, "  upstream {upstream} ({how}): {of} answers");
        for (b, n) in mine() {
            let pct = if of == 0 {
                0.0
            } else {
                n as f64 * 100.0 / of as f64
            };
            let _ = writeln!(
                out,
                "    {:<7} {:<16} {n:>7} answers ({pct:.0}%)",
                b.name, b.addr
            );
        }
    }
    let _ = writeln!(
        out,
        "{} TCP sessions through {}: {} failed",
        stats.tcp_ok + stats.tcp_failed,
        plan.tcp,
        stats.tcp_failed
    );
    out
}

/// Where to look next.
pub fn next_steps(plan: &Plan, status_seen: bool, conf: &Path, log: &Path) -> String {
    let mut out = String::from("\nwhere to look next:\n");
    let _ = writeln!(out, "  fulcrum's log           {}", log.display());
    let _ = writeln!(
        out,
        "  the reloaded config     {}  (from conf/demo.toml)",
        conf.display()
    );
    if let Some(a) = plan.admin {
        let note = if status_seen {
            ""
        } else {
            "  (not in this build yet)"
        };
        let _ = writeln!(
            out,
            "  during the next run     http://{a}/ status page, /status JSON, /metrics Prometheus{note}"
        );
    }
    out
}
