//! Backends given by host name: every address a name resolves to is a backend of that
//! weight (a Kubernetes headless Service lists one address per pod).
//!
//! Names are looked up with `tokio::net::lookup_host` (the system resolver on the blocking
//! pool, bounded by `LOOKUP_TIMEOUT`), never inside `Snapshot::build`: start-up and reload
//! call `lookup` and hand the answers (`Resolved`) to the build, which only reads them.
//! With `resolve_interval > 0`, `watch` looks the names of that upstream up again every
//! interval and sends what it found to the control loop, which rebuilds the snapshot with
//! `reload::resolved::apply` exactly as a reload would (kept backends keep health, counters and pool). The
//! control loop is the one writer of the snapshot, so a re-resolution never races a reload.
//!
//! # Labels
//! A name that resolves to one address keeps the address as written (`app.internal:3000`),
//! as the `backend` metric label has it. A name with several addresses gives one
//! backend per address, labelled `WRITTEN/IP:PORT` (`app.internal:3000/10.0.0.5:3000`,
//! `app.internal:3000/[fd00::5]:3000`): unique, no spaces (log lines stay `key=value`), and
//! it starts with the address as written, so a search for it finds them all.
//!
//! # Failures
//! `resolve_interval = 0`: a name that does not resolve fails the start or the reload.
//! `resolve_interval > 0`: the name keeps its last known addresses (none at start, with a
//! warning) and is tried again next interval, so a DNS blip never empties an upstream. An
//! answer with no address counts as a failure for the same reason.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{BackendConf, Config, Upstream};

/// The addresses each `(host, port)` of the configuration resolved to, sorted, never empty.
pub type Resolved = HashMap<(String, u16), Vec<SocketAddr>>;

/// A backend name that must resolve (its upstream has `resolve_interval = 0`) and does not.
#[derive(Debug, thiserror::Error)]
#[error("upstream \"{upstream}\": backend \"{addr}\" does not resolve: {reason}")]
pub struct ResolveError {
    pub upstream: String,
    pub addr: String,
    pub reason: String,
}

/// One lookup may take this long: a resolver that does not answer must not hold a reload
/// or a re-resolution round for ever (glibc's default is 5s per try, times attempts).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// With no upstream to re-resolve, look at the configuration again this often (a reload may
/// add one).
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// The backends `b` stands for: `(label, dial address)` each. An IP literal is itself; a
/// name is every address in `resolved` (none when it never resolved).
pub fn expand(b: &BackendConf, resolved: &Resolved) -> Vec<(String, SocketAddr)> {
    if let Some(ip) = b.ip {
        return vec![(b.addr.clone(), ip)];
    }
    match resolved.get(&(b.host.clone(), b.port)).map(Vec::as_slice) {
        None | Some([]) => Vec::new(),
        Some([one]) => vec![(b.addr.clone(), *one)],
        Some(many) => many
            .iter()
            .map(|a| (format!("{}/{a}", b.addr), *a))
            .collect(),
    }
}

/// Looks one name up: its addresses, sorted and without duplicates, or why not.
async fn lookup_one(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(addrs)) => {
            let mut v: Vec<SocketAddr> = addrs.collect();
            v.sort();
            v.dedup();
            if v.is_empty() {
                Err("no address".into())
            } else {
                Ok(v)
            }
        }
    }
}

/// The host-name backends of `upstreams`, one per distinct `(host, port)`.
pub fn names<'a>(upstreams: impl Iterator<Item = &'a Upstream>) -> HashSet<(String, u16)> {
    upstreams
        .flat_map(|u| &u.backends)
        .filter(|b| b.ip.is_none())
        .map(|b| (b.host.clone(), b.port))
        .collect()
}

/// Looks every key up at once; answers by key.
async fn lookup_many(
    keys: HashSet<(String, u16)>,
) -> HashMap<(String, u16), Result<Vec<SocketAddr>, String>> {
    let lookups = keys.into_iter().map(|key| async move {
        let answer = lookup_one(&key.0, key.1).await;
        (key, answer)
    });
    futures_util::future::join_all(lookups)
        .await
        .into_iter()
        .collect()
}

/// Resolves every host name of `config` for a start (`previous` = `None`) or a reload
/// (the running snapshot's answers). A failure is an error when its upstream has
/// `resolve_interval = 0`; otherwise the name keeps what `previous` knew of it (or nothing)
/// and a warning says so.
pub async fn lookup(
    config: &Config,
    previous: Option<&Resolved>,
) -> Result<Resolved, ResolveError> {
    let answers = lookup_many(names(config.upstreams.iter())).await;
    let mut out = Resolved::new();
    for u in &config.upstreams {
        for b in u.backends.iter().filter(|b| b.ip.is_none()) {
            let key = (b.host.clone(), b.port);
            let reason = match answers.get(&key) {
                Some(Ok(addrs)) => {
                    out.insert(key, addrs.clone());
                    continue;
                }
                Some(Err(reason)) => reason.clone(),
                None => "not looked up".into(),
            };
            if u.resolve_interval.is_zero() {
                return Err(ResolveError {
                    upstream: u.name.clone(),
                    addr: b.addr.clone(),
                    reason,
                });
            }
            let last = previous
                .and_then(|p| p.get(&key))
                .cloned()
                .unwrap_or_default();
            tracing::warn!(
                upstream = %u.name, addr = %b.addr, reason, known = last.len(),
                "backend does not resolve, keeping its last known addresses and trying again"
            );
            if !last.is_empty() {
                out.insert(key, last);
            }
        }
    }
    Ok(out)
}

/// `resolve_interval > 0`: looks the names of each such upstream up every interval and sends
/// the answers that came back to the control loop (failures are left out, so their names keep
/// their last addresses). Ends when the receiver is gone.
pub async fn watch(config: impl Fn() -> Arc<Config>, found: mpsc::Sender<Resolved>) {
    // Per upstream: its interval and when it is due next. The first round is one interval
    // after start: start-up has just resolved everything.
    let mut due: HashMap<String, (Duration, Instant)> = HashMap::new();
    // Names whose last lookup failed: warned once, not every interval.
    let mut failing: HashSet<(String, u16)> = HashSet::new();
    loop {
        let config = config();
        let now = Instant::now();
        let mut ready: Vec<&Upstream> = Vec::new();
        let wanted: Vec<&Upstream> = config
            .upstreams
            .iter()
            .filter(|u| !u.resolve_interval.is_zero() && u.backends.iter().any(|b| b.ip.is_none()))
            .collect();
        due.retain(|name, _| wanted.iter().any(|u| &u.name == name));
        for u in wanted {
            let entry = due
                .entry(u.name.clone())
                .or_insert((u.resolve_interval, now + u.resolve_interval));
            // A reload changed the interval: count the new one from now.
            if entry.0 != u.resolve_interval {
                *entry = (u.resolve_interval, now + u.resolve_interval);
            }
            if entry.1 <= now {
                entry.1 = now + u.resolve_interval;
                ready.push(u);
            }
        }
        if !ready.is_empty() {
            let answers = lookup_many(names(ready.into_iter())).await;
            let mut ok = Resolved::new();
            for (key, answer) in answers {
                match answer {
                    Ok(addrs) => {
                        if failing.remove(&key) {
                            tracing::info!(host = %key.0, port = key.1, "backend name resolves again");
                        }
                        ok.insert(key, addrs);
                    }
                    Err(reason) => {
                        if failing.insert(key.clone()) {
                            tracing::warn!(
                                host = %key.0, port = key.1, reason,
                                "backend name does not resolve, keeping its last known addresses"
                            );
                        }
                    }
                }
            }
            if !ok.is_empty() && found.send(ok).await.is_err() {
                return;
            }
        }
        let next = due
            .values()
            .map(|&(_, at)| at)
            .min()
            .map_or(now + IDLE_RECHECK, |at| at.min(now + IDLE_RECHECK));
        tokio::time::sleep_until(next).await;
    }
}
