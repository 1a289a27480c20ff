//! Active probes: a tcp connect, or an HTTP/1.1 `GET` whose status line decides, each after
//! the PROXY header when the upstream sends one. Written by
//! hand rather than with a client: a check needs one request and the first line of the
//! answer, nothing more.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::{Check, Health, ProxyProtocol};

/// Enough for any sane status line; a backend that sends more before a line break fails.
const MAX_STATUS_LINE: usize = 1024;

/// Checks the backend at `dial` (`addr` as written, sent as `Host`), all within
/// `health.timeout`; `send` is the upstream's `send_proxy_protocol`. The error is the reason
/// logged when the check marks it down.
pub async fn probe(
    dial: SocketAddr,
    addr: &str,
    health: &Health,
    send: ProxyProtocol,
) -> Result<(), String> {
    let kind = match health.check {
        Check::Http => "http check",
        Check::Tcp | Check::None => "tcp check",
    };
    match timeout(health.timeout, attempt(dial, addr, health, send)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{kind}: {e}")),
        Err(_) => Err(format!("{kind}: timeout")),
    }
}

async fn attempt(
    dial: SocketAddr,
    addr: &str,
    health: &Health,
    send: ProxyProtocol,
) -> Result<(), String> {
    let mut stream = TcpStream::connect(dial)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // A backend that requires the header would refuse the check without one: a check speaks
    // for no client, so v1 UNKNOWN or v2 LOCAL.
    if let Some(header) = crate::proxy_protocol::local(send) {
        stream
            .write_all(header)
            .await
            .map_err(|e| format!("send PROXY header: {e}"))?;
    }
    match health.check {
        Check::Http => http(stream, addr, &health.path).await,
        Check::Tcp | Check::None => Ok(()),
    }
}

async fn http(mut stream: TcpStream, host: &str, path: &str) -> Result<(), String> {
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
mod tests {
    use super::status;

    #[test]
    fn status_lines_are_parsed_and_junk_is_refused() {
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status(b"HTTP/1.0 302 Found\r\n"), Some(302));
        assert_eq!(status(b"HTTP/1.1 503\r\n"), Some(503));
        assert_eq!(
            status(b"HTTP/2 200\r\n"),
            None,
            "only HTTP/1.x is asked for"
        );
        assert_eq!(status(b"HTTP/1.1 2x0 OK\r\n"), None);
        assert_eq!(status(b"HTTP/1.1"), None, "a cut-off line is no status");
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
    }
}
