//! The `test.Echo` service of the gRPC test peers (`grpc.rs`), written by hand the way
//! tonic's generated code is: its four methods, one per kind of call.

use super::*;

/// State shared by every call to one backend.
#[derive(Clone)]
pub(super) struct Echo {
    pub(super) tag: &'static str,
    pub(super) calls: Arc<AtomicU64>,
    pub(super) produced: Arc<AtomicU64>,
}

impl NamedService for Echo {
    const NAME: &'static str = SERVICE;
}

impl Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let echo = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
            let res = match req.uri().path() {
                "/test.Echo/Unary" => {
                    // tonic sends response metadata as headers; trailers carry only the
                    // status, so `x-meta-echo` is added to the trailers frame here.
                    let meta = req.headers().get("x-meta").cloned();
                    let res = grpc.unary(echo, req).await;
                    match meta {
                        Some(v) => res.map(|body| {
                            Body::new(body.map_frame(move |mut frame| {
                                if let Some(t) = frame.trailers_mut() {
                                    t.insert("x-meta-echo", v.clone());
                                }
                                frame
                            }))
                        }),
                        None => res,
                    }
                }
                "/test.Echo/ServerStream" => grpc.server_streaming(echo, req).await,
                "/test.Echo/ClientStream" => grpc.client_streaming(echo, req).await,
                "/test.Echo/Bidi" => grpc.streaming(echo, req).await,
                path => Status::unimplemented(format!("no method {path}")).into_http(),
            };
            Ok(res)
        })
    }
}

impl tonic::server::UnaryService<Msg> for Echo {
    type Response = Msg;
    type Future = BoxFuture<Response<Msg>, Status>;

    /// `fail:N` answers status code N, `slow:MS` waits MS milliseconds first.
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let tag = self.tag;
        Box::pin(async move {
            let meta = req.metadata().get("x-meta").cloned();
            let msg = req.into_inner();
            if let Some(code) = msg.text.strip_prefix("fail:") {
                let code = code
                    .parse::<i32>()
                    .map_err(|_| Status::invalid_argument("fail:N"))?;
                let mut status = Status::new(Code::from(code), "asked to fail");
                if let Some(v) = meta {
                    status.metadata_mut().insert("x-meta-echo", v);
                }
                return Err(status);
            }
            if let Some(ms) = msg.text.strip_prefix("slow:") {
                let ms = ms
                    .parse::<u64>()
                    .map_err(|_| Status::invalid_argument("slow:MS"))?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Ok(Response::new(Msg {
                backend: tag.to_string(),
                ..msg
            }))
        })
    }
}

impl tonic::server::ServerStreamingService<Msg> for Echo {
    type Response = Msg;
    type ResponseStream = BoxStream<Msg>;
    type Future = BoxFuture<Response<BoxStream<Msg>>, Status>;

    /// Messages are made as tonic polls for them, so `produced` shows how far it got.
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let Echo { tag, produced, .. } = self.clone();
        let msg = req.into_inner();
        let stream = tokio_stream::iter(0..msg.n).map(move |i| {
            produced.fetch_add(1, Ordering::Relaxed);
            Ok(Msg {
                text: i.to_string(),
                backend: tag.to_string(),
                n: i,
                payload: msg.payload.clone(),
            })
        });
        Box::pin(async move { Ok(Response::new(Box::pin(stream) as BoxStream<Msg>)) })
    }
}

impl tonic::server::ClientStreamingService<Msg> for Echo {
    type Response = Msg;
    type Future = BoxFuture<Response<Msg>, Status>;

    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        let tag = self.tag;
        Box::pin(async move {
            let mut stream = req.into_inner();
            let mut texts = Vec::new();
            while let Some(m) = stream.message().await? {
                texts.push(m.text);
            }
            Ok(Response::new(Msg {
                text: texts.join(","),
                backend: tag.to_string(),
                n: texts.len() as u64,
                payload: Vec::new(),
            }))
        })
    }
}

impl tonic::server::StreamingService<Msg> for Echo {
    type Response = Msg;
    type ResponseStream = BoxStream<Msg>;
    type Future = BoxFuture<Response<BoxStream<Msg>>, Status>;

    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        let tag = self.tag;
        let stream = req.into_inner().map(move |m| {
            m.map(|m| Msg {
                backend: tag.to_string(),
                ..m
            })
        });
        Box::pin(async move { Ok(Response::new(Box::pin(stream) as BoxStream<Msg>)) })
    }
}
