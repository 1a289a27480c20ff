//! Steady load from the host to a published port on 127.0.0.1: a few client threads, each
//! sending `GET /` on a new connection (no keep-alive race with a draining server to blur
//! the result), paced, bounded in count and time. Nothing is retried: a request either got
//! a 2xx from a backend, whose name is its body, or it is a failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// No request may take longer: fulcrum's own timeouts in these tests are shorter.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Every load stops by itself after this long or this many requests per client.
const MAX_RUN: Duration = Duration::from_secs(60);
const MAX_REQUESTS: usize = 20_000;

/// `GET path` on a new connection: the status and the body, or why there is none.
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: fulcrum.test\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&all);
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.trim().to_owned()))
}

/// One request's outcome: when it was sent, and the backend that answered it or the failure.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub sent: Instant,
    pub result: Result<String, String>,
}

/// What a load saw.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn ok(&self) -> usize {
        self.outcomes.iter().filter(|o| o.result.is_ok()).count()
    }

    /// Requests sent at `t` or later that `backend` answered.
    pub fn served_by_since(&self, backend: &str, t: Instant) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.sent >= t && o.result.as_deref() == Ok(backend))
            .count()
    }

    pub fn failures(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| o.result.is_err()).collect()
    }

    /// The failures, each as `+MS after t0: why`, for assertion messages.
    pub fn describe_failures(&self, t0: Instant) -> String {
        let f: Vec<String> = self
            .failures()
            .iter()
            .take(10)
            .map(|o| {
                let ms = o.sent.saturating_duration_since(t0).as_millis();
                format!("+{ms}ms: {}", o.result.as_ref().unwrap_err())
            })
            .collect();
        format!(
            "{} failed of {}: {f:?}",
            self.failures().len(),
            self.outcomes.len()
        )
    }
}

/// A running load; `stop` ends it and returns the report.
pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    /// `clients` threads, each sending a request, waiting for its answer, then `pace`.
    pub fn start(addr: SocketAddr, clients: usize, pace: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let clients = (0..clients)
            .map(|_| {
                let (stop, report) = (Arc::clone(&stop), Arc::clone(&report));
                std::thread::spawn(move || {
                    let start = Instant::now();
                    for _ in 0..MAX_REQUESTS {
                        if stop.load(Ordering::SeqCst) || start.elapsed() > MAX_RUN {
                            break;
                        }
                        let sent = Instant::now();
                        let result = match get(addr, "/") {
                            Ok((s, body)) if (200..300).contains(&s) => Ok(body),
                            Ok((s, body)) => Err(format!("status {s}: {body}")),
                            Err(e) => Err(e),
                        };
                        report
                            .lock()
                            .unwrap()
                            .outcomes
                            .push(Outcome { sent, result });
                        std::thread::sleep(pace);
                    }
                })
            })
            .collect();
        Load {
            stop,
            report,
            clients,
        }
    }

    /// Requests so far that `backend` answered, sent at `t` or later.
    pub fn served_by_since(&self, backend: &str, t: Instant) -> usize {
        self.report.lock().unwrap().served_by_since(backend, t)
    }

    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        for c in std::mem::take(&mut self.clients) {
            c.join().expect("a load client panicked");
        }
        std::mem::take(&mut *self.report.lock().unwrap())
    }
}

/// A test that fails mid-load stops its clients too, rather than leaving them to send to a
/// removed container's port until `MAX_RUN`.
impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Sends `n` requests one after another and counts the answers by backend; any failure
/// panics, naming `why`.
pub fn count_backends(
    addr: SocketAddr,
    n: usize,
    why: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..n {
        match get(addr, "/") {
            Ok((200, body)) => *counts.entry(body).or_insert(0) += 1,
            other => panic!("{why}: request {i} failed: {other:?}"),
        }
    }
    counts
}
