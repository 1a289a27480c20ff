//! Checks over HTTP/2, for upstreams that speak it: an http check's `GET path`, and the
//! grpc check, `grpc.health.v1.Health/Check` (the gRPC health checking protocol), whose
//! answer passes only when it says SERVING. The two protobuf messages involved have one field
//! each, so they are written and read here rather than generated.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A health answer larger than this is no health answer.
const MAX_ANSWER: usize = 4096;

/// `GET path` over HTTP/2; 2xx and 3xx pass, as for HTTP/1.1.
pub async fn http<I>(io: I, authority: &str, tls: bool, path: &str) -> Result<(), String>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let req = Request::get(uri(authority, tls, path)?)
        .header(header::USER_AGENT, "fulcrum-health")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("request: {e}"))?;
    let resp = exchange(io, req).await?;
    match resp.status().as_u16() {
        200..=399 => Ok(()),
        code => Err(format!("status {code}")),
    }
}

/// `grpc.health.v1.Health/Check` for `service` ("" asks about the whole server).
pub async fn grpc<I>(io: I, authority: &str, tls: bool, service: &str) -> Result<(), String>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let req = Request::post(uri(authority, tls, "/grpc.health.v1.Health/Check")?)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, "fulcrum-health")
        .body(Full::new(check_request(service)))
        .map_err(|e| format!("request: {e}"))?;
    let resp = exchange(io, req).await?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("status {}", resp.status().as_u16()));
    }
    let head_status = resp.headers().get("grpc-status").cloned();
    let collected = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("read: {e}"))?;
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status").cloned())
        .or(head_status);
    match status.as_ref().map(|v| v.as_bytes()) {
        Some(b"0") => {}
        Some(code) => {
            return Err(format!("grpc-status {}", String::from_utf8_lossy(code)));
        }
        None => return Err("no grpc-status".into()),
    }
    match serving_status(collected.to_bytes()) {
        Some(SERVING) => Ok(()),
        Some(other) => Err(format!("{} (not SERVING)", status_name(other))),
        None => Err("unreadable HealthCheckResponse".into()),
    }
}

fn uri(authority: &str, tls: bool, path: &str) -> Result<http::Uri, String> {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| format!("bad authority {authority:?}: {e}"))
}

/// One request on a fresh HTTP/2 connection, closed afterwards.
async fn exchange<I>(
    io: I,
    req: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io)
        .await
        .map_err(|e| format!("http/2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("http/2: {e}"))
}

/// HealthCheckResponse.ServingStatus SERVING.
const SERVING: u64 = 1;

fn status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => format!("status {n}"),
    }
}

/// A gRPC message (flag byte, 4-byte length) holding HealthCheckRequest { service = 1 }.
fn check_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn get_varint(buf: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `status` (field 1) of the one uncompressed HealthCheckResponse in `body`; 0 (UNKNOWN)
/// when absent, as protobuf defaults it. Unknown fields are skipped.
fn serving_status(mut body: Bytes) -> Option<u64> {
    if body.remaining() < 5 || body.get_u8() != 0 {
        return None;
    }
    let len = body.get_u32() as usize;
    if body.remaining() < len {
        return None;
    }
    let mut message = body.split_to(len);
    let mut status = 0;
    while message.has_remaining() {
        let key = get_varint(&mut message)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut message)?,
            (_, 0) => {
                get_varint(&mut message)?;
            }
            (_, 2) => {
                let n = get_varint(&mut message)? as usize;
                if message.remaining() < n {
                    return None;
                }
                message.advance(n);
            }
            (_, 1) if message.remaining() >= 8 => message.advance(8),
            (_, 5) if message.remaining() >= 4 => message.advance(4),
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_service_and_the_answer_is_read() {
        assert_eq!(&check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &check_request("ab")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        let serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 1]);
        assert_eq!(serving_status(serving), Some(SERVING));
        let not = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 2]);
        assert_eq!(serving_status(not), Some(2));
        let empty = Bytes::from_static(&[0, 0, 0, 0, 0]);
        assert_eq!(serving_status(empty), Some(0), "absent is UNKNOWN");
        assert_eq!(serving_status(Bytes::from_static(&[0, 0, 0])), None);
        assert_eq!(
            serving_status(Bytes::from_static(&[1, 0, 0, 0, 0])),
            None,
            "compressed answers are not read"
        );
    }
}
