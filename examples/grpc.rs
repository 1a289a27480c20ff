//! A gRPC upstream: three gRPC servers (tonic, with the standard health service) behind
//! fulcrum, which speaks h2c to them and checks them with `grpc.health.v1`. One client
//! connection's calls are spread by weight over all three, a server that stops serving is
//! taken out by its health answer, and one that restarts gracefully (GOAWAY) loses no call.
//!
//! Run it with `cargo run --release --example grpc`. fulcrum runs in this process, on
//! 127.0.0.1 ports the system picks.

#[path = "../tests/support/grpc.rs"]
mod grpc;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use grpc::{GrpcBackend, GrpcClient};

#[tokio::main]
async fn main() -> Result<()> {
    let backends = [
        GrpcBackend::start("a").await,
        GrpcBackend::start("b").await,
        GrpcBackend::start("c").await,
    ];
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = format!(
        r#"[[listener]]
name = "grpc"
bind = "127.0.0.1:{port}"
protocol = "http"
upstream = "echo"

[upstream.echo]
protocol = "h2c"
backends = [
  {{ addr = "{a}", weight = 1 }},
  {{ addr = "{b}", weight = 2 }},
  {{ addr = "{c}", weight = 3 }},
]

[upstream.echo.health]
check = "grpc"
service = "test.Echo"
interval = "200ms"
unhealthy_threshold = 1
healthy_threshold = 1
"#,
        a = backends[0].addr,
        b = backends[1].addr,
        c = backends[2].addr,
    );
    println!("fulcrum config:\n{config}");
    let config = fulcrum::config::Config::from_toml(&config, std::path::Path::new("grpc.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_control, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        if let Err(e) = fulcrum::server::run(config, rx).await {
            eprintln!("fulcrum: {e}");
        }
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr).await?;

    let mut client = GrpcClient::connect(addr).await;
    let counts = |b: &[GrpcBackend; 3]| b.each_ref().map(|b| b.calls.load(Ordering::Relaxed));
    let before = counts(&backends);
    for _ in 0..60 {
        client.unary("hello").await.context("unary call")?;
    }
    let after = counts(&backends);
    println!(
        "60 calls on one client connection, weights 1/2/3: a {}, b {}, c {}",
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2]
    );

    let mut stream = client.server_stream(3, 8).await?;
    while let Some(m) = stream.message().await? {
        println!("server stream: message {} from {}", m.n, m.backend);
    }

    backends[2].set_serving(false).await;
    println!("c answers NOT_SERVING to its health check...");
    let taken_out = Instant::now();
    loop {
        let replies = futures_util::future::try_join_all((0..6).map(|_| {
            let mut c = client.clone();
            async move { c.unary("x").await }
        }))
        .await?;
        if replies.iter().all(|m| m.backend != "c") {
            break;
        }
        if taken_out.elapsed() > Duration::from_secs(10) {
            bail!("c was never taken out");
        }
    }
    println!(
        "...and gets no calls {} ms later",
        taken_out.elapsed().as_millis()
    );
    backends[2].set_serving(true).await;

    // Four callers keep calls in flight while b shuts down gracefully.
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move {
                let mut failed = 0;
                for _ in 0..200 {
                    failed += usize::from(c.unary("load").await.is_err());
                }
                failed
            })
        })
        .collect();
    let [a, b, c] = backends;
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.shutdown_gracefully().await;
    let mut failed = 0;
    for caller in callers {
        failed += caller.await?;
    }
    println!("b restarted gracefully (GOAWAY) under load: 800 calls, {failed} failed");
    drop((a, c));
    Ok(())
}

async fn wait_listening(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("fulcrum did not listen on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
