//! gRPC test peers on 127.0.0.1: a `test.Echo` server with `grpc.health.v1.Health`, and a
//! client that sends every call over one HTTP/2 (h2c) connection. Messages and service are
//! written by hand the way tonic's generated code is, so no protoc is needed.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::body::Body;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{BoxFuture, BoxStream, Service, http};
use tonic::server::NamedService;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tonic_prost::ProstCodec;

#[path = "grpc_echo.rs"]
mod echo;
use echo::Echo;

/// The one message of `test.Echo`, in both directions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(string, tag = "2")]
    pub backend: String,
    #[prost(uint64, tag = "3")]
    pub n: u64,
    #[prost(bytes = "vec", tag = "4")]
    pub payload: Vec<u8>,
}

/// The gRPC service name.
pub const SERVICE: &str = "test.Echo";

/// An accepted connection whose reads and writes fail once the backend is dropped, so that hyper closes
/// it: a dropped backend loses its connections like a dead process would.
struct Conn {
    io: TcpStream,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl Conn {
    /// Runs `f` on the socket, or fails once the backend is dropped.
    fn poll_io<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        f: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let this = self.get_mut();
        if this.killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        f(Pin::new(&mut this.io), cx)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_io(cx, |io, cx| io.poll_read(cx, b))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_io(cx, |io, cx| io.poll_write(cx, b))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_io(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_io(cx, |io, cx| io.poll_shutdown(cx))
    }
}

/// A `test.Echo` + health server. Dropping it stops accepting and kills its connections.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    pub tag: &'static str,
    /// Calls of any `test.Echo` method (health checks not included).
    pub calls: Arc<AtomicU64>,
    /// `ServerStream` messages made so far, over all calls.
    pub produced: Arc<AtomicU64>,
    health: HealthReporter,
    shutdown: Option<oneshot::Sender<()>>,
    kill: CancellationToken,
    task: JoinHandle<()>,
}

impl GrpcBackend {
    /// Starts a backend on an ephemeral port of 127.0.0.1.
    pub async fn start(tag: &'static str) -> GrpcBackend {
        GrpcBackend::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), tag).await
    }

    /// Starts a backend on `addr`, retrying a few seconds while the address is still in use
    /// (a backend restarted on the address of one just dropped).
    pub async fn start_on(addr: SocketAddr, tag: &'static str) -> GrpcBackend {
        let started = Instant::now();
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    assert!(
                        started.elapsed() < Duration::from_secs(5),
                        "bind {addr}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().expect("gRPC backend local addr");
        let (health, health_service) = tonic_health::server::health_reporter();
        let echo = Echo {
            tag,
            calls: Arc::default(),
            produced: Arc::default(),
        };
        let (calls, produced) = (Arc::clone(&echo.calls), Arc::clone(&echo.produced));
        let kill = CancellationToken::new();
        let conn_kill = kill.clone();
        let incoming = TcpListenerStream::new(listener).map(move |io| {
            io.map(|io| Conn {
                io,
                killed: Box::pin(conn_kill.clone().cancelled_owned()),
            })
        });
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(health_service)
                .add_service(echo)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await
                .expect("gRPC backend serves");
        });
        let backend = GrpcBackend {
            addr,
            tag,
            calls,
            produced,
            health,
            shutdown: Some(tx),
            kill,
            task,
        };
        backend.set_serving(true).await;
        backend
    }

    /// Sets the health of the whole server ("") and of `test.Echo`.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
        self.health.set_service_status(SERVICE, status).await;
    }

    /// Stops accepting (the listener closes at once), sends GOAWAY on every connection, and
    /// returns when all of them have closed: in-flight calls, streams included, finish first.
    pub async fn shutdown_gracefully(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.expect("gRPC backend task");
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
        self.kill.cancel();
    }
}

/// A client whose calls all share one HTTP/2 connection.
#[derive(Clone)]
pub struct GrpcClient {
    inner: tonic::client::Grpc<Channel>,
    channel: Channel,
}

impl GrpcClient {
    /// Connects over h2c to `addr`; panics if the connection fails.
    pub async fn connect(addr: SocketAddr) -> GrpcClient {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint URI")
            .connect()
            .await
            .expect("connect gRPC client");
        GrpcClient {
            inner: tonic::client::Grpc::new(channel.clone()),
            channel,
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("service was not ready: {e}")))
    }

    pub async fn unary(&mut self, text: &str) -> Result<Msg, Status> {
        self.unary_request(Request::new(text_msg(text)))
            .await
            .map(Response::into_inner)
    }

    /// Unary call with `x-meta: meta`. tonic merges the response's trailers into
    /// `Response::metadata()` together with its headers, so `x-meta-echo` is read there;
    /// on a failed call it is in `Status::metadata()`.
    pub async fn unary_with_meta(
        &mut self,
        text: &str,
        meta: &str,
    ) -> Result<Response<Msg>, Status> {
        let mut req = Request::new(text_msg(text));
        let value = meta.parse().expect("x-meta must be visible ASCII");
        req.metadata_mut().insert("x-meta", value);
        self.unary_request(req).await
    }

    async fn unary_request(&mut self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static("/test.Echo/Unary");
        self.inner.unary(req, path, ProstCodec::default()).await
    }

    /// Asks for `n` messages, each with a payload of `payload_len` bytes.
    pub async fn server_stream(
        &mut self,
        n: u64,
        payload_len: usize,
    ) -> Result<Streaming<Msg>, Status> {
        self.ready().await?;
        let msg = Msg {
            n,
            payload: vec![b'x'; payload_len],
            ..Msg::default()
        };
        let path = PathAndQuery::from_static("/test.Echo/ServerStream");
        let res = self
            .inner
            .server_streaming(Request::new(msg), path, ProstCodec::default())
            .await?;
        Ok(res.into_inner())
    }

    pub async fn client_stream(&mut self, texts: Vec<String>) -> Result<Msg, Status> {
        self.ready().await?;
        let stream = tokio_stream::iter(texts.into_iter().map(|t| text_msg(&t)));
        let path = PathAndQuery::from_static("/test.Echo/ClientStream");
        let res = self
            .inner
            .client_streaming(Request::new(stream), path, ProstCodec::default())
            .await?;
        Ok(res.into_inner())
    }

    /// Sends what `rx` yields; the answers come back one for one as they are echoed.
    pub async fn bidi(
        &mut self,
        rx: impl Stream<Item = Msg> + Send + 'static,
    ) -> Result<Streaming<Msg>, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static("/test.Echo/Bidi");
        let res = self
            .inner
            .streaming(Request::new(rx), path, ProstCodec::default())
            .await?;
        Ok(res.into_inner())
    }

    /// `grpc.health.v1.Health/Check` of `service` ("" = the whole server), on the same
    /// connection; 1 = SERVING, 2 = NOT_SERVING.
    pub async fn health(&mut self, service: &str) -> Result<i32, Status> {
        let mut client = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let req = tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        };
        Ok(client.check(req).await?.into_inner().status)
    }
}

fn text_msg(text: &str) -> Msg {
    Msg {
        text: text.to_string(),
        ..Msg::default()
    }
}
