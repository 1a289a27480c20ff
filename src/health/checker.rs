//! One checker task per (upstream, backend) of the running configuration, however many
//! listeners use the upstream, and the registry that keeps that set in step with reloads.
//!
//! A task never holds on to an `Upstream`: a reload may rebuild it around the same `Backend`,
//! so every round looks the upstream up in the current snapshot and finds the backend by addr.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::balance::FULL;
use crate::config::{Check, Health};
use crate::snapshot::Live;
use crate::upstream::{Backend, SLOW_START_FLOOR, Trial, Upstream};

/// An active check: `(dial, addr as written, health settings, send_proxy_protocol)` to pass or
/// the reason it failed.
/// A function so that tests can run the checker loop on a paused clock without sockets.
pub type Probe = Arc<
    dyn Fn(super::probe::Target, Health) -> BoxFuture<'static, Result<(), String>> + Send + Sync,
>;

/// While the backend is missing from the snapshot (a reload is between its swap and the
/// reconcile that stops this task), look again this often.
const MISSING_RETRY: Duration = Duration::from_millis(100);

/// Slow start moves in steps of at least this, so a short ramp is not a busy loop.
const MIN_RAMP_STEP: Duration = Duration::from_millis(100);

/// (upstream name, backend addr as written): what a backend is across reloads.
type Key = (String, Arc<str>);

/// The running checker tasks, by backend.
pub struct Checkers {
    tasks: Mutex<HashMap<Key, CancellationToken>>,
    probe: Probe,
}

impl std::fmt::Debug for Checkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkers")
            .field("running", &self.len())
            .finish()
    }
}

impl Default for Checkers {
    fn default() -> Self {
        Checkers::new()
    }
}

impl Checkers {
    /// Checkers that run the real tcp and http probes.
    pub fn new() -> Checkers {
        Checkers::with_probe(Arc::new(|target, health| {
            Box::pin(async move { super::probe(target, &health).await })
        }))
    }

    pub fn with_probe(probe: Probe) -> Checkers {
        Checkers {
            tasks: Mutex::new(HashMap::new()),
            probe,
        }
    }

    /// Brings the running tasks in line with the snapshot `live` holds: starts one for each
    /// new backend (its first check at once), stops those of removed backends, and leaves the
    /// others running as they are. Call it at start and after every swap.
    pub fn reconcile(&self, live: &Arc<Live>) {
        let snapshot = live.load();
        let mut wanted: HashSet<Key> = HashSet::new();
        for (name, upstream) in &snapshot.upstreams {
            for b in &upstream.backends {
                wanted.insert((name.clone(), Arc::clone(&b.addr)));
            }
        }
        let mut tasks = self.lock();
        tasks.retain(|key, cancel| {
            let keep = wanted.contains(key);
            if !keep {
                cancel.cancel();
            }
            keep
        });
        for key in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let cancel = CancellationToken::new();
            let task = run(Arc::clone(live), key.clone(), Arc::clone(&self.probe));
            let stop = cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = task => {}
                }
            });
            tasks.insert(key, cancel);
        }
    }

    /// Stops every task (shutdown).
    pub fn stop_all(&self) {
        for (_, cancel) in self.lock().drain() {
            cancel.cancel();
        }
    }

    /// How many tasks run.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a task runs for backend `addr` of `upstream`.
    pub fn contains(&self, upstream: &str, addr: &str) -> bool {
        self.lock()
            .keys()
            .any(|(u, a)| u == upstream && &**a == addr)
    }

    /// The map stays consistent on every path (no panics while held), so poison is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, CancellationToken>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The backend `key` in the current snapshot: its upstream and index.
fn locate(live: &Live, key: &Key) -> Option<(Arc<Upstream>, usize)> {
    let snapshot = live.load();
    let upstream = snapshot.upstreams.get(&key.0)?;
    let index = upstream.backends.iter().position(|b| b.addr == key.1)?;
    Some((Arc::clone(upstream), index))
}

/// The life of one backend's checker; it ends only when cancelled.
async fn run(live: Arc<Live>, key: Key, probe: Probe) {
    let mut next_check = Instant::now();
    let mut round: u64 = 0;
    // When to open the next trial, and the trial state it was armed in.
    let mut trial_at: Option<(Instant, Trial)> = None;
    // When the slow start in progress began.
    let mut ramp_start: Option<Instant> = None;
    if let Some((upstream, index)) = locate(&live, &key)
        && let Some(b) = upstream.backends.get(index)
    {
        crate::metrics::backend_healthy(&upstream.name, &b.addr, b.is_healthy());
    }
    loop {
        let Some((upstream, index)) = locate(&live, &key) else {
            tokio::time::sleep(MISSING_RETRY).await;
            continue;
        };
        let Some(backend) = upstream.backends.get(index).map(Arc::clone) else {
            tokio::time::sleep(MISSING_RETRY).await;
            continue;
        };
        let health = upstream.conf.health.clone();
        let slow_start = upstream.conf.slow_start;
        let tls = upstream.tls.as_ref().map(|t| {
            t.target(&backend.host)
                .map_err(|e| format!("no TLS name for the backend: {e}"))
        });
        let target = super::probe::Target {
            dial: backend.dial,
            label: Arc::clone(&backend.addr),
            host: Arc::clone(&backend.written),
            send: upstream.conf.send_proxy_protocol,
            protocol: upstream.conf.protocol,
            tls,
        };
        let now = Instant::now();
        if health.check != Check::None && backend.trial() != Trial::Closed {
            upstream.close_trial(index);
        }
        arm_trial(&mut trial_at, &backend, &health, now);
        let ramp_next = ramp(&mut ramp_start, &upstream, index, &backend, slow_start, now);
        drop(upstream);

        let active = health.check != Check::None;
        tokio::select! {
            () = sleep_until(next_check), if active => {
                round = round.wrapping_add(1);
                next_check = Instant::now() + jittered(health.interval, &key.1, round);
                let result = probe(target, health).await;
                // The probe took a while: a reload may have rebuilt the upstream meanwhile.
                if let Some((upstream, index)) = locate(&live, &key) {
                    let reason = result.as_ref().err().map_or("", String::as_str);
                    upstream.record_check(index, result.is_ok(), reason);
                }
            }
            () = sleep_until(trial_at.map_or(now, |(at, _)| at)), if trial_at.is_some() => {
                trial_at = None;
                if let Some((upstream, index)) = locate(&live, &key) {
                    upstream.open_trial(index);
                }
            }
            () = sleep_until(ramp_next.unwrap_or(now)), if ramp_next.is_some() => {}
            () = backend.changed.notified() => {}
        }
    }
}

/// `check = "none"`: a down backend whose trial is closed (none yet, or the last one failed)
/// gets its next trial `interval` from now; a trial taken but undecided for `interval` is
/// opened again. No timer otherwise.
fn arm_trial(at: &mut Option<(Instant, Trial)>, b: &Backend, h: &Health, now: Instant) {
    let trial = b.trial();
    if b.is_healthy() || h.check != Check::None || trial == Trial::Open {
        *at = None;
    } else if at.is_none_or(|(_, armed)| armed != trial) {
        *at = Some((now + h.interval, trial));
    }
}

/// Slow start: sets the backend's share for `now` and returns when to step next (`None`: no
/// ramp in progress). The ramp starts from whatever share the backend has, so one carried
/// over by a reload goes on where it was.
fn ramp(
    start: &mut Option<Instant>,
    upstream: &Upstream,
    index: usize,
    b: &Backend,
    slow_start: Duration,
    now: Instant,
) -> Option<Instant> {
    let permille = b.permille();
    if !b.is_healthy() || permille >= FULL {
        *start = None;
        return None;
    }
    if slow_start.is_zero() {
        upstream.set_permille(index, FULL);
        *start = None;
        return None;
    }
    let begun = *start.get_or_insert_with(|| {
        let done = permille.saturating_sub(SLOW_START_FLOOR);
        now.checked_sub(slow_start.mul_f64(f64::from(done) / f64::from(FULL - SLOW_START_FLOOR)))
            .unwrap_or(now)
    });
    let p = share(now.saturating_duration_since(begun), slow_start);
    upstream.set_permille(index, p);
    if p >= FULL {
        *start = None;
        return None;
    }
    Some(now + (slow_start / 20).max(MIN_RAMP_STEP))
}

/// The share in permille `elapsed` into a slow start of `total`: 10% growing linearly to 100%.
pub(super) fn share(elapsed: Duration, total: Duration) -> u32 {
    if total.is_zero() || elapsed >= total {
        return FULL;
    }
    let grown = u128::from(FULL - SLOW_START_FLOOR) * elapsed.as_nanos() / total.as_nanos();
    SLOW_START_FLOOR + u32::try_from(grown).unwrap_or(FULL - SLOW_START_FLOOR)
}

/// `interval` within ±10%, different per backend and per round, so the checks of many
/// backends spread out instead of firing together.
pub(super) fn jittered(interval: Duration, addr: &str, round: u64) -> Duration {
    let mut h = std::hash::DefaultHasher::new();
    addr.hash(&mut h);
    round.hash(&mut h);
    let unit = (h.finish() % 1001) as f64 / 1000.0; // 0.0..=1.0
    interval.mul_f64(0.9 + 0.2 * unit)
}
