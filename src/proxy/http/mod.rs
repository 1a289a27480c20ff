//! Layer 7: hyper serves the client connection (`serve`), each request is routed and answered
//! (`request`, with a route's redirects, fixed answers and header rules in `route`), sent to a
//! backend with failover (`forward`) after the header rules (`outgoing`, `headers`) and target
//! rules (`message`): on a pooled HTTP/1.1 connection or a stream of a shared HTTP/2 one
//! (`exchange`), opened when needed (`dial`, `noticed`), rewritten for HTTP/2 (`h2`), with
//! gRPC's own answers and verdicts (`grpc`); the response streams back (`body`), or becomes a
//! tunnel after a `101` (`tunnel`).

mod body;
mod dial;
mod exchange;
mod forward;
mod grpc;
mod h2;
mod headers;
pub mod message;
mod noticed;
mod outgoing;
mod request;
mod route;
mod serve;
mod tunnel;

pub use body::RespBody;
pub use serve::serve;

/// Largest request head accepted (431 beyond); nginx's large buffers are
/// 4 x 8 KiB, HAProxy's bufsize 16 KiB: 64 KiB is generous without inviting abuse.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a request head (431 beyond): HAProxy's default is 101.
pub const MAX_HEADERS: usize = 100;

/// Who is on the other end of a client connection and how it came in: what every request of
/// the connection needs from the listener.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client (as a PROXY header in front of fulcrum announced it, if any) and listener.
    pub addrs: crate::proxy_protocol::Addresses,
    pub listener: std::sync::Arc<str>,
    /// `X-Forwarded-Proto`: "http", or "https" on a TLS listener.
    pub proto: &'static str,
    /// TLS: the names of the certificate the connection was served with; a request for any
    /// other host is answered 421.
    pub cover: Option<std::sync::Arc<crate::tls::Cover>>,
    pub timeouts: crate::config::ListenerTimeouts,
}
