//! The entry points that the fuzz targets (`fuzz/`) and the property tests
//! (`tests/properties.rs`) share; not a supported API.
//!
//! `HttpHead` feeds arbitrary bytes as one client connection through the real HTTP serving
//! path (`proxy::http::serve`) over an in-memory duplex, against an in-process backend on
//! 127.0.0.1 that checks what fulcrum forwards. `HttpHead::run` turns every rule a hostile
//! client must not break into an `Err`: a fuzzer panics on it, a property test fails.
//!
//! Test harness code, never on the proxy's path: it may index its own fixed-size buffers.
#![allow(clippy::indexing_slicing)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::snapshot::{Live, Snapshot};

/// The client address fulcrum sees (TEST-NET-1, RFC 5737).
pub const CLIENT: &str = "192.0.2.1:40000";

/// The header the backend answers with when a forwarded request breaks a rule of `violation` below.
pub const VIOLATION: &str = "x-fuzz-violation";

/// A hop-by-hop header the backend sends (named by its `Connection`): must never reach the
/// client.
const HOP: &str = "x-hop";

/// The longest one exchange may take: every input ends in EOF, so anything that waits this
/// long is a hang, not a slow machine.
const BOUND: Duration = Duration::from_secs(10);

/// The HTTP/2 connection preface: input that starts with it is answered in HTTP/2 frames.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One listener in front of one in-process backend.
pub struct HttpHead {
    config: Arc<Config>,
}

impl HttpHead {
    /// Starts the backend on the current tokio runtime (its tasks run whenever the runtime
    /// does) and validates the configuration that points at it.
    pub async fn start() -> std::io::Result<HttpHead> {
        let backend = TcpListener::bind("127.0.0.1:0").await?;
        let addr = backend.local_addr()?;
        tokio::spawn(serve_backend(backend));
        let text = format!(
            "[[listener]]\nname = \"fuzz\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
             upstream = \"app\"\ntimeouts = {{ header_read = \"2s\", idle = \"2s\" }}\n\n\
             [upstream.app]\nbackends = [{{ addr = \"{addr}\" }}]\nresponse_timeout = \"5s\"\n\
             [upstream.app.health]\ncheck = \"none\"\nunhealthy_threshold = 100\n"
        );
        let config = Config::from_toml(&text, Path::new("fuzz.toml"))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(HttpHead {
            config: Arc::new(config),
        })
    }

    /// Sends `input` as one client connection, then EOF, and reads until fulcrum closes.
    /// Fresh live state each time (health, pool), so one input never depends on another.
    /// `Err` names the rule broken: no answer within `BOUND`, an answer that is not HTTP, a
    /// forwarded request the backend found wrong, a hop-by-hop header passed to the client.
    pub async fn run(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        let snapshot = Snapshot::build(Arc::clone(&self.config), None, Default::default())
            .map_err(|e| e.to_string())?;
        snapshot.publish();
        let live = Arc::new(Live::from_pointee(snapshot));
        let listener = &self.config.listeners[0];
        let peer: SocketAddr = CLIENT.parse().map_err(|_| "bad CLIENT".to_owned())?;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let addrs = crate::proxy_protocol::Addresses {
            client: peer,
            listener: listener.bind,
        };
        let conn = crate::proxy::http::Client {
            addrs,
            listener: Arc::from(listener.name.as_str()),
            proto: "http",
            cover: None,
            timeouts: listener.timeouts.clone(),
        };
        let graceful = CancellationToken::new();
        let serve = crate::proxy::http::serve(server, conn, live, &graceful);
        // Writing and reading at once: a client that reads only after writing everything
        // could fill both directions' buffers and wait forever on pipelined answers.
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async move {
            // fulcrum may close before reading everything (a 400): not an error here.
            let _ = wr.write_all(input).await;
            let _ = wr.shutdown().await;
        };
        let read = async move {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let exchange = async {
            let ((), (), out) = tokio::join!(serve, write, read);
            out
        };
        let out = tokio::time::timeout(BOUND, exchange)
            .await
            .map_err(|_| format!("no answer and no close within {BOUND:?}"))?;
        check(input, &out)?;
        Ok(out)
    }
}

/// The answer is empty (closed), HTTP/2 frames to an HTTP/2 preface, or starts with an
/// HTTP/1 status line; it carries no backend complaint and no backend hop-by-hop header.
fn check(input: &[u8], out: &[u8]) -> Result<(), String> {
    let lower = out.to_ascii_lowercase();
    if let Some(at) = find(&lower, VIOLATION.as_bytes()) {
        let line = out[at..].split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(format!(
            "backend got a request that breaks a forwarding rule: {}",
            String::from_utf8_lossy(line)
        ));
    }
    if find(&lower, format!("{HOP}:").as_bytes()).is_some() {
        return Err("a hop-by-hop header of the backend reached the client".into());
    }
    if out.is_empty() || input.starts_with(H2_PREFACE) {
        return Ok(());
    }
    let status_line = out.len() >= 13
        && (out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "))
        && out[9..12].iter().all(u8::is_ascii_digit)
        && out[12] == b' ';
    if !status_line {
        return Err(format!(
            "answer is not HTTP: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(64)])
        ));
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The backend: HTTP/1.1 keep-alive with upgrades; `/status/NNN` answers NNN.
async fn serve_backend(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(backend);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn backend(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let wrong = violation(&req);
    let upgrade = req.headers().contains_key(http::header::UPGRADE);
    let status = req
        .uri()
        .path()
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (200..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if wrong.is_none() && upgrade {
        // A tunnel: whatever the client sends is read and dropped, then a fixed line. Nothing
        // the client sends is ever echoed, so it cannot plant text that `check` looks for.
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = on.await {
                let mut io = TokioIo::new(io);
                let mut sink = Vec::new();
                let _ = io.read_to_end(&mut sink).await;
                let _ = io.write_all(b"tunnel closed\n").await;
                let _ = io.shutdown().await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        // A fixed protocol name, not the client's: nothing a client sends is echoed back.
        resp.headers_mut().insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static("websocket"),
        );
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        return Ok(resp);
    }
    // The request body streams through fulcrum: read it all (a broken one is fine).
    let mut body = req.into_body();
    while let Some(Ok(_)) = body.frame().await {}
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static(HOP),
    );
    h.insert(HOP, http::HeaderValue::from_static("1"));
    if let Some(why) = wrong {
        h.insert(VIOLATION, http::HeaderValue::from_static(why));
    }
    *resp.status_mut() = match wrong {
        Some(_) => StatusCode::INTERNAL_SERVER_ERROR,
        None => status,
    };
    Ok(resp)
}

/// The first forwarding rule (what a backend may receive) that a request breaks, if any.
fn violation(req: &Request<Incoming>) -> Option<&'static str> {
    let h = req.headers();
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        return Some("request target not in origin form");
    }
    if h.get_all(http::header::HOST).iter().count() > 1 {
        return Some("more than one host header");
    }
    let proto: Vec<_> = h.get_all("x-forwarded-proto").iter().collect();
    if proto.len() != 1 || proto[0] != "http" {
        return Some("x-forwarded-proto is not exactly one \"http\"");
    }
    let ip = CLIENT.split(':').next().unwrap_or_default();
    let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
    let last = xff
        .last()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next());
    if xff.len() != 1 || last.map(str::trim) != Some(ip) {
        return Some("x-forwarded-for does not end with the client address");
    }
    for name in ["keep-alive", "proxy-connection", "te", "expect"] {
        if h.contains_key(name) {
            return Some("a hop-by-hop header was forwarded");
        }
    }
    // hyper's client frames a body of unknown length itself, with chunked alone.
    if h.get(http::header::TRANSFER_ENCODING)
        .is_some_and(|v| v != "chunked")
    {
        return Some("the client's transfer-encoding was forwarded");
    }
    if !upgrade_pair_ok(h) {
        return Some("connection/upgrade forwarded outside a websocket-style upgrade");
    }
    None
}

/// `Connection` and `Upgrade` reach the backend only together, as fulcrum writes them.
fn upgrade_pair_ok(h: &HeaderMap) -> bool {
    let connection: Vec<_> = h.get_all(http::header::CONNECTION).iter().collect();
    let upgrade = h.get_all(http::header::UPGRADE).iter().count();
    match (connection.as_slice(), upgrade) {
        ([], 0) => true,
        ([c], 1) => *c == "upgrade",
        _ => false,
    }
}
