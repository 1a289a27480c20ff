//! The gRPC test peers themselves, without fulcrum: every `test.Echo` method and health.

#[path = "support/grpc.rs"]
mod grpc;

use std::sync::atomic::Ordering;

use grpc::{GrpcBackend, GrpcClient, Msg};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

#[tokio::test]
async fn echo_methods_and_health_answer_directly() {
    let backend = GrpcBackend::start("a").await;
    let mut client = GrpcClient::connect(backend.addr).await;

    let reply = client.unary("hello").await.expect("unary");
    assert_eq!(
        (reply.text.as_str(), reply.backend.as_str()),
        ("hello", "a")
    );

    let res = client
        .unary_with_meta("hi", "m1")
        .await
        .expect("unary with meta");
    let echoed = res
        .metadata()
        .get("x-meta-echo")
        .expect("x-meta-echo trailer");
    assert_eq!(echoed, "m1");

    let status = client.unary("fail:14").await.expect_err("asked to fail");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "asked to fail");

    let mut stream = client.server_stream(3, 10).await.expect("server stream");
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.expect("stream message") {
        assert_eq!((m.backend.as_str(), m.payload.len()), ("a", 10));
        got.push(m.text);
    }
    assert_eq!(got, ["0", "1", "2"]);
    assert_eq!(backend.produced.load(Ordering::Relaxed), 3);

    let texts = vec!["x".to_string(), "y".to_string(), "z".to_string()];
    let joined = client.client_stream(texts).await.expect("client stream");
    assert_eq!((joined.text.as_str(), joined.n), ("x,y,z", 3));

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut echoes = client.bidi(ReceiverStream::new(rx)).await.expect("bidi");
    for i in 0..3 {
        let text = format!("ping{i}");
        let ping = Msg {
            text: text.clone(),
            ..Msg::default()
        };
        tx.send(ping).await.expect("send ping");
        let pong = echoes.message().await.expect("pong").expect("a pong");
        assert_eq!((pong.text, pong.backend.as_str()), (text, "a"));
    }
    drop(tx);
    assert!(echoes.message().await.expect("bidi ends ok").is_none());

    assert_eq!(backend.calls.load(Ordering::Relaxed), 6);
    assert_eq!(client.health("").await.expect("health"), 1);
    assert_eq!(client.health("test.Echo").await.expect("health"), 1);
    backend.set_serving(false).await;
    assert_eq!(client.health("").await.expect("health"), 2);
    assert_eq!(client.health("test.Echo").await.expect("health"), 2);

    drop(client);
    backend.shutdown_gracefully().await;
}
