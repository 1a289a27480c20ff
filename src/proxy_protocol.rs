//! The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): the header a balancer
//! in front of fulcrum sends first on a listener with `proxy_protocol = true`, and the one
//! fulcrum sends first to the backends of an upstream with `send_proxy_protocol`.
//!
//! Reading parses with the `ppp` crate over bytes read in chunks; whatever came after the
//! header in the same reads is handed back first by `Prefixed`, so nothing is lost and
//! nothing is peeked in a loop. Writing is a few lines by hand: the layout is fixed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use ppp::v1::Addresses as V1Addresses;
use ppp::v2::{Addresses as V2Addresses, Command};
use ppp::{HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::config::ProxyProtocol;

/// The v2 signature: 12 bytes no other protocol starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/transport, 2-byte length.
const V2_FIXED: usize = 16;
/// Addresses and TLVs of a v2 header we accept. The format allows 64 KiB; HAProxy's own
/// headers are well under 1 KiB, and a client must not make us buffer more per connection.
const V2_MAX_PAYLOAD: usize = 4096;
/// The longest header read: a v1 line is at most 107 bytes, far less.
pub const MAX_HEADER: usize = V2_FIXED + V2_MAX_PAYLOAD;
/// The longest v1 line, CRLF included (the specification's worst case, TCP6).
const V1_MAX: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";

/// v1 health checks and other connections that speak for no client.
const V1_UNKNOWN: &[u8] = b"PROXY UNKNOWN\r\n";
/// v2 `LOCAL` (0x20), family `UNSPEC`, no addresses: the same for version 2.
const V2_LOCAL: [u8; 16] = *b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// The two ends of a client connection: what a PROXY header to a backend names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addresses {
    /// The client: the peer, or the source a PROXY header in front of fulcrum announced.
    pub client: SocketAddr,
    /// The listener's local address the client connected to.
    pub listener: SocketAddr,
}

/// Why a connection's PROXY header was refused; the connection is then closed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no valid PROXY protocol header: {0}")]
    Invalid(String),
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("connection closed before the PROXY protocol header was complete")]
    Closed,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// A complete header at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Bytes the header takes; what follows is the client's payload.
    pub len: usize,
    /// The announced source; `None` for v1 `UNKNOWN`, v2 `LOCAL` or a v2 family without
    /// IP addresses, where the connection's real peer stays the client.
    pub source: Option<SocketAddr>,
}

/// Parses a v1 or v2 header at the start of `buf`: `Ok(None)` while more bytes could still
/// complete it. Never panics, whatever the bytes.
pub fn parse(buf: &[u8]) -> Result<Option<Parsed>, Error> {
    // Refuse an oversized v2 header as soon as its length field is in, not after buffering it.
    if buf.get(..V2_SIGNATURE.len()) == Some(&V2_SIGNATURE[..])
        && let Some(&[hi, lo]) = buf.get(V2_FIXED - 2..V2_FIXED)
        && usize::from(u16::from_be_bytes([hi, lo])) > V2_MAX_PAYLOAD
    {
        return Err(Error::TooLong);
    }
    // A v1 line is parsed only once whole: `ppp` takes a line cut just after the space
    // before the last port for a bad port, and TCP may cut it anywhere.
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf.get(..n) != V2_SIGNATURE.get(..n) && !buf.contains(&b'\n') && buf.len() < V1_MAX {
        let n = buf.len().min(V1_PREFIX.len());
        if buf.get(..n) == V1_PREFIX.get(..n) {
            return Ok(None);
        }
        return Err(Error::Invalid("no PROXY signature".into()));
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return Ok(None);
    }
    let parsed = match result {
        HeaderResult::V1(Ok(h)) => Parsed {
            len: h.header.len(),
            source: match h.addresses {
                V1Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                V1Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                V1Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => Parsed {
            len: h.len(),
            source: match (h.command, h.addresses) {
                (Command::Proxy, V2Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (Command::Proxy, V2Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                _ => None,
            },
        },
        HeaderResult::V1(Err(e)) => return Err(Error::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => return Err(Error::Invalid(e.to_string())),
    };
    Ok(Some(parsed))
}

/// Reads the header a connection must start with and returns the stream with any payload
/// read along with it put back in front, and the announced source. The caller bounds the
/// time; the size is bounded here.
pub async fn read_header<I>(mut io: I) -> Result<(Prefixed<I>, Option<SocketAddr>), Error>
where
    I: AsyncRead + Unpin,
{
    // Reads take what the socket has: a header usually arrives in one segment, often with
    // the first payload bytes, which go back in front of the stream below.
    let mut buf = BytesMut::with_capacity(MAX_HEADER);
    loop {
        if buf.len() >= MAX_HEADER {
            return Err(Error::TooLong);
        }
        let mut limited = (&mut io).take((MAX_HEADER - buf.len()) as u64);
        if limited.read_buf(&mut buf).await? == 0 {
            return Err(Error::Closed);
        }
        if let Some(parsed) = parse(&buf)? {
            // `parse` never reports more bytes than it was given.
            buf.advance(parsed.len.min(buf.len()));
            return Ok((Prefixed::new(buf.freeze(), io), parsed.source));
        }
    }
}

/// A stream that first yields `prefix`, then reads from `io`; writes go straight to `io`.
#[derive(Debug)]
pub struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    pub fn new(prefix: Bytes, io: I) -> Prefixed<I> {
        Prefixed { prefix, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        if this.prefix.is_empty() {
            // Let go of the header buffer the prefix was cut from.
            this.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The header announcing `addrs` to a backend; `None` when `version` is `Off`.
pub fn header(version: ProxyProtocol, addrs: &Addresses) -> Option<Vec<u8>> {
    let (src, dst) = same_family(addrs.client, addrs.listener);
    match version {
        ProxyProtocol::Off => None,
        ProxyProtocol::V1 => {
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            let line = format!(
                "PROXY {family} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            );
            Some(line.into_bytes())
        }
        ProxyProtocol::V2 => {
            let mut out = Vec::with_capacity(V2_FIXED + 36);
            out.extend_from_slice(&V2_SIGNATURE);
            // Version 2, command PROXY.
            out.push(0x21);
            match (src.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    // AF_INET, STREAM; 4 + 4 + 2 + 2 address bytes.
                    out.extend_from_slice(&[0x11, 0, 12]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    // AF_INET6, STREAM; 16 + 16 + 2 + 2 address bytes.
                    out.extend_from_slice(&[0x21, 0, 36]);
                    out.extend_from_slice(&v6(s).octets());
                    out.extend_from_slice(&v6(d).octets());
                }
            }
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
            Some(out)
        }
    }
}

/// The header of a connection made for no client (a health check): v1 `UNKNOWN`, v2 `LOCAL`,
/// which a backend that requires the header accepts and answers as its own peer.
pub fn local(version: ProxyProtocol) -> Option<&'static [u8]> {
    match version {
        ProxyProtocol::Off => None,
        ProxyProtocol::V1 => Some(V1_UNKNOWN),
        ProxyProtocol::V2 => Some(&V2_LOCAL),
    }
}

/// Both addresses in one family, as a header names one: an IPv4 address beside an IPv6 one
/// (a client announced over IPv6 to an IPv4 listener) becomes its IPv4-mapped form.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    let mapped = |s: SocketAddr| SocketAddr::new(IpAddr::V6(v6(s.ip())), s.port());
    (mapped(a), mapped(b))
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests;
