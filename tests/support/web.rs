//! HTTP helpers for tests: a keep-alive HTTP/1.1 backend that answers its tag, a one-shot
//! client, and a parser of the Prometheus text format. Raw sockets, so what is checked is
//! what goes over the wire.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts an HTTP/1.1 backend on 127.0.0.1 that answers every request `200` with `tag`.
pub async fn http_backend(tag: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request per head (tests send no request bodies).
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let close = head.contains("\r\nconnection: close");
                        buf.drain(..end + 4);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{tag}",
                            tag.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `GET path` on a fresh connection (`Connection: close`): the status and the body.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format (version 0.0.4); panics with the offending line when a
/// line is malformed, since that is what the tests check.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.split_whitespace();
            let kind = words.next().unwrap_or_default();
            assert!(
                matches!(kind, "HELP" | "TYPE"),
                "a comment line must be HELP or TYPE: {line:?}"
            );
            assert!(words.next().is_some(), "HELP/TYPE needs a name: {line:?}");
            if kind == "TYPE" {
                let t = words.next().unwrap_or_default();
                assert!(
                    matches!(t, "counter" | "gauge" | "histogram" | "summary" | "untyped"),
                    "unknown metric type: {line:?}"
                );
            }
            continue;
        }
        out.push(parse_sample(line));
    }
    out
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("sample without value: {line:?}"));
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name: {line:?}"
    );
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let mut end = None;
        loop {
            // label name
            let mut key = String::new();
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                if c == '}' && key.is_empty() {
                    end = Some(i);
                    break;
                }
                key.push(c);
            }
            if end.is_some() {
                break;
            }
            assert_eq!(
                chars.next().map(|(_, c)| c),
                Some('"'),
                "label value must be quoted: {line:?}"
            );
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => panic!("dangling escape: {line:?}"),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value: {line:?}"),
                }
            }
            labels.insert(key.trim().to_owned(), value);
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    end = Some(i);
                    break;
                }
                other => panic!("expected , or }} after a label, got {other:?}: {line:?}"),
            }
        }
        let end = end.unwrap_or_else(|| panic!("unterminated labels: {line:?}"));
        rest = &r[end + 1..];
    }
    let value = rest.trim();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value {v:?}: {line:?}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// The value of the sample named `name` whose labels include all of `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}
