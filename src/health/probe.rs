//! Active probes: a tcp connect, an HTTP/1.1 `GET` whose status line decides, or over HTTP/2
//! (`over_h2`) a `GET` or a gRPC health check, each after the PROXY header when the upstream
//! sends one. The HTTP/1.1 check is written by hand rather than with a client: it needs one
//! request and the first line of the answer, nothing more.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::config::{Check, Health, ProxyProtocol, UpstreamProtocol};

/// Enough for any sane status line; a backend that sends more before a line break fails.
const MAX_STATUS_LINE: usize = 1024;

/// Where and how to check one backend.
pub struct Target {
    pub dial: SocketAddr,
    /// The backend's label, for logs and tests.
    pub label: Arc<str>,
    /// The `Host` of an http check: the backend's `addr` as written.
    pub host: Arc<str>,
    /// The upstream's `send_proxy_protocol`.
    pub send: ProxyProtocol,
    /// The upstream's `protocol`: http and grpc checks speak what live traffic speaks.
    pub protocol: UpstreamProtocol,
    /// With `[upstream.NAME.tls]`: http checks speak TLS, verified as live traffic is. An
    /// error (the backend's host is no TLS name) fails every check, as it fails live traffic:
    /// a plaintext check would say nothing of the TLS the backend is reached with.
    pub tls: Option<Result<(TlsConnector, ServerName<'static>), String>>,
}

/// Checks `target`, all within `health.timeout`. The error is the reason logged when the
/// check marks it down.
pub async fn probe(target: Target, health: &Health) -> Result<(), String> {
    let kind = match health.check {
        Check::Http => "http check",
        Check::Grpc => "grpc check",
        Check::Tcp | Check::None => "tcp check",
    };
    match timeout(health.timeout, attempt(target, health)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{kind}: {e}")),
        Err(_) => Err(format!("{kind}: timeout")),
    }
}

async fn attempt(mut target: Target, health: &Health) -> Result<(), String> {
    let tls = target.tls.take().transpose()?;
    let mut stream = TcpStream::connect(target.dial)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // A backend that requires the header would refuse the check without one: a check speaks
    // for no client, so v1 UNKNOWN or v2 LOCAL.
    if let Some(header) = crate::proxy_protocol::local(target.send) {
        stream
            .write_all(header)
            .await
            .map_err(|e| format!("send PROXY header: {e}"))?;
    }
    if matches!(health.check, Check::Tcp | Check::None) {
        // A tcp check only connects: whether the backend's certificate verifies shows on the
        // first live connection, which fails over and counts against it.
        return Ok(());
    }
    let need_h2 = target.protocol.h2_only() || health.check == Check::Grpc;
    let Some((connector, name)) = tls else {
        return match target.protocol {
            UpstreamProtocol::H2c => over_h2(TokioIo::new(stream), &target, health, false).await,
            _ => http(stream, &target.host, &health.path).await,
        };
    };
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        over_h2(TokioIo::new(tls), &target, health, true).await
    } else if need_h2 {
        Err("the backend did not choose h2 by ALPN".into())
    } else {
        http(tls, &target.host, &health.path).await
    }
}

/// An http or grpc check over HTTP/2.
async fn over_h2<I>(io: I, target: &Target, health: &Health, tls: bool) -> Result<(), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    match health.check {
        Check::Grpc => super::over_h2::grpc(io, &target.host, tls, &health.service).await,
        _ => super::over_h2::http(io, &target.host, tls, &health.path).await,
    }
}

async fn http<S>(mut stream: S, host: &str, path: &str) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fulcrum-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') {
        if buf.len() > MAX_STATUS_LINE {
            return Err("status line too long".into());
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    match status(&buf) {
        Some(200..=399) => Ok(()),
        Some(code) => Err(format!("status {code}")),
        None => Err("no HTTP status line".into()),
    }
}

/// The status code of `HTTP/1.x NNN ...`.
fn status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests;
