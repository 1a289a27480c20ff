# fulcrum: a small runtime image. Build: docker build -t fulcrum .
# Run:   docker run -p 8080:8080 -v $PWD/conf/fulcrum.toml:/etc/fulcrum/fulcrum.toml fulcrum

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not download them again.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/balance.rs && cargo fetch --locked
COPY .cargo ./.cargo
COPY src ./src
COPY benches ./benches
COPY examples/pgo_train.rs ./examples/pgo_train.rs
COPY scripts ./scripts
# The profile-guided build (README, Benchmark), trained here rather than from the committed
# profile, which only matches the toolchain it was made with: instrumented build, about half
# a minute of training load on 127.0.0.1 inside this stage, optimized build.
RUN rustup component add llvm-tools \
    && scripts/pgo-build.sh \
    && strip target/release/fulcrum

FROM debian:bookworm-slim
# ca-certificates: the system trust roots for TLS to backends without a `ca`.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home fulcrum \
    && mkdir -p /etc/fulcrum
COPY --from=build /src/target/release/fulcrum /usr/local/bin/fulcrum
COPY conf/fulcrum.toml /etc/fulcrum/fulcrum.toml
USER 10001
ENV FULCRUM_CONFIG=/etc/fulcrum/fulcrum.toml
# fulcrum drains on SIGTERM: open requests finish within shutdown_timeout.
STOPSIGNAL SIGTERM
# 8080: the example http listener; 9901: the admin listener (/healthz, /readyz, /metrics).
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/fulcrum"]
CMD ["run"]
