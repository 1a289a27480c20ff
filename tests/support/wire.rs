//! HTTP messages as bytes on the wire: requests framed by hand (`Content-Length`, chunked with
//! any chunk size, trailers), pipelined; responses read back off a raw socket; the same
//! requests as HTTP/2 streams; and a real backend that says what its socket received.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Long enough for a loaded 2-core CI machine.
const DEADLINE: Duration = Duration::from_secs(20);

pub fn sha_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a request body is framed.
#[derive(Clone, Copy, Debug)]
pub enum Framing {
    /// `Content-Length` (HTTP/2: the header, and DATA frames).
    Length,
    /// chunked (HTTP/2: DATA frames and no length).
    Chunked,
    /// chunked with a trailer field `x-sum` (the body's sha256), announced by `Trailer`.
    ChunkedTrailer,
    /// HTTP/2 only: `Content-Length`, DATA frames, then the `x-sum` trailer (HTTP/1.1 cannot
    /// carry trailers after a length: it sends `ChunkedTrailer` instead).
    LengthTrailer,
}

/// One request: its method, framing, body, and the size of its chunks (HTTP/2: DATA frames).
#[derive(Clone, Debug)]
pub struct Case {
    pub method: &'static str,
    pub framing: Framing,
    pub body: Vec<u8>,
    pub chunk: usize,
}

impl Case {
    /// The request as HTTP/1.1 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            format!("{} /echo HTTP/1.1\r\nHost: fulcrum.test\r\n", self.method).into_bytes();
        match self.framing {
            Framing::Length => {
                out.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes(),
                );
                out.extend_from_slice(&self.body);
            }
            Framing::Chunked | Framing::ChunkedTrailer | Framing::LengthTrailer => {
                let trailer = !matches!(self.framing, Framing::Chunked);
                if trailer {
                    out.extend_from_slice(b"Trailer: x-sum\r\n");
                }
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for chunk in self.body.chunks(self.chunk.max(1)) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                if trailer {
                    out.extend_from_slice(format!("x-sum: {}\r\n", sha_hex(&self.body)).as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    /// What the echo backend must report for trailers.
    fn trailers(&self) -> String {
        match self.framing {
            Framing::ChunkedTrailer | Framing::LengthTrailer => {
                format!("x-sum={}", sha_hex(&self.body))
            }
            _ => String::new(),
        }
    }

    /// Checks the echo backend's answer to this request.
    fn check(&self, answer: &Answer) -> Result<(), String> {
        let want = [
            ("x-method", self.method.to_owned()),
            ("x-sha256", sha_hex(&self.body)),
            ("x-trailers", self.trailers()),
        ];
        if answer.status != 200 {
            return Err(format!(
                "{} {:?} {} bytes: status {}",
                self.method,
                self.framing,
                self.body.len(),
                answer.status
            ));
        }
        for (name, value) in want {
            if answer.header(name) != Some(value.as_str()) {
                return Err(format!(
                    "{} {:?} {} bytes in chunks of {}: {name} is {:?}, sent {value:?}",
                    self.method,
                    self.framing,
                    self.body.len(),
                    self.chunk,
                    answer.header(name)
                ));
            }
        }
        Ok(())
    }
}

/// A response read off the wire.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response with a `Content-Length` body (fulcrum's own answers and the echo
/// backend's carry one); `head` for the answer to a HEAD, which has none. `None`: closed.
async fn read_answer<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, head: bool) -> Option<Answer> {
    let mut line = String::new();
    r.read_line(&mut line).await.ok()?;
    let status = line.get(9..12)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = answer
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if !head {
        answer.body = vec![0; len];
        r.read_exact(&mut answer.body).await.ok()?;
    }
    Some(answer)
}

/// Writes `request` (any number of pipelined requests) on a new connection and reads one
/// answer per entry of `methods`, as many as come before the connection closes.
pub async fn exchange(addr: SocketAddr, request: &[u8], methods: &[&str]) -> Vec<Answer> {
    let s = TcpStream::connect(addr).await.expect("connect to fulcrum");
    let (read, mut write) = s.into_split();
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        write
    });
    let mut r = BufReader::new(read);
    let mut out = Vec::new();
    let read_all = async {
        for m in methods {
            match read_answer(&mut r, *m == "HEAD").await {
                Some(a) => out.push(a),
                None => break,
            }
        }
    };
    let _ = tokio::time::timeout(DEADLINE, read_all).await;
    drop(writer.await);
    out
}

/// Sends `cases` pipelined on one HTTP/1.1 connection and checks what the backend received.
pub async fn check_h1(addr: SocketAddr, cases: &[Case]) -> Result<(), String> {
    let bytes: Vec<u8> = cases.iter().flat_map(Case::encode).collect();
    let methods: Vec<&str> = cases.iter().map(|c| c.method).collect();
    let answers = exchange(addr, &bytes, &methods).await;
    if answers.len() != cases.len() {
        return Err(format!(
            "{} answers to {} requests: {answers:?}",
            answers.len(),
            cases.len()
        ));
    }
    cases.iter().zip(&answers).try_for_each(|(c, a)| c.check(a))
}

type H2Body =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// An HTTP/2 (prior knowledge) connection to fulcrum.
async fn h2_connect(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<H2Body> {
    let s = TcpStream::connect(addr).await.expect("connect to fulcrum");
    crate::support::h2_client(s).await
}

/// Sends `cases` as concurrent streams on one HTTP/2 connection and checks each answer.
pub async fn check_h2(addr: SocketAddr, cases: &[Case]) -> Result<(), String> {
    let sender = h2_connect(addr).await;
    let mut streams = Vec::new();
    for case in cases {
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = case
            .body
            .chunks(case.chunk.max(1))
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let mut req = hyper::Request::builder()
            .method(case.method)
            .uri("http://fulcrum.test/echo");
        match case.framing {
            Framing::Length => req = req.header("content-length", case.body.len()),
            Framing::Chunked => {}
            Framing::ChunkedTrailer | Framing::LengthTrailer => {
                if matches!(case.framing, Framing::LengthTrailer) {
                    req = req.header("content-length", case.body.len());
                }
                req = req.header("trailer", "x-sum");
                let mut t = hyper::HeaderMap::new();
                t.insert(
                    "x-sum",
                    sha_hex(&case.body).parse().expect("a header value"),
                );
                frames.push(Ok(Frame::trailers(t)));
            }
        }
        let req = req
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .expect("request");
        let mut sender = sender.clone();
        let head = case.method == "HEAD";
        streams.push(tokio::spawn(async move {
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = if head {
                Vec::new()
            } else {
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes()
                    .to_vec()
            };
            Ok::<_, String>(Answer {
                status,
                headers,
                body,
            })
        }));
    }
    for (case, stream) in cases.iter().zip(streams) {
        let answer = tokio::time::timeout(DEADLINE, stream)
            .await
            .map_err(|_| format!("{} {:?}: no answer in time", case.method, case.framing))?
            .map_err(|e| e.to_string())??;
        case.check(&answer)?;
    }
    Ok(())
}

/// The status of an HTTP/2 GET of `uri` (its authority is `:authority`), with `host` as its
/// `Host` field if given.
pub async fn h2_status(addr: SocketAddr, uri: &str, host: Option<&str>) -> u16 {
    let mut sender = h2_connect(addr).await;
    let mut req = hyper::Request::builder().uri(uri);
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let req = req
        .body(StreamBody::new(futures_util::stream::iter(Vec::new())))
        .expect("request");
    let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .expect("an answer in time")
        .expect("an HTTP/2 answer");
    resp.status().as_u16()
}

/// A real HTTP/1.1 backend: reads each request's body whole (trailers too) and answers with
/// what it got: `x-method`, `x-target`, `x-host`, `x-sha256` of the body, `x-trailers`.
pub async fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let method = req.method().to_string();
                    let target = req.uri().to_string();
                    let host = req.headers().get("host").cloned();
                    let collected = req.into_body().collect().await?;
                    let trailers: Vec<String> = collected
                        .trailers()
                        .map(|t| {
                            t.iter()
                                .map(|(n, v)| {
                                    format!("{n}={}", String::from_utf8_lossy(v.as_bytes()))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let body = collected.to_bytes();
                    let mut resp = hyper::Response::builder()
                        .header("x-method", method)
                        .header("x-target", target)
                        .header("x-sha256", sha_hex(&body))
                        .header("x-trailers", trailers.join(","));
                    if let Some(h) = host {
                        resp = resp.header("x-host", h);
                    }
                    Ok::<_, hyper::Error>(
                        resp.body(Full::new(Bytes::from_static(b"ok")))
                            .expect("response"),
                    )
                },
            );
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}
