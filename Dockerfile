# fulcrum's container image (README.md, "Container image"). Two ways to build one image:
#
#   From source (the default target; BuildKit, Docker 23+), the profile-guided release build
#   of scripts/pgo-build.sh:
#     docker build -t fulcrum:0.1.0 .
#   From a binary built on the host (as the release images of Traefik and Caddy copy theirs),
#   the same profile-guided build or a plain `cargo build --release`:
#     scripts/pgo-build.sh && docker build --target prebuilt \
#       --build-arg FULCRUM_BINARY=target/pgo/release/fulcrum -t fulcrum:0.1.0 .
#
# Run: docker run -p 8080:8080 -p 9901:9901 -v $PWD/my-conf:/etc/fulcrum:ro fulcrum:0.1.0
#
# The bases are build arguments so that a machine without a registry can supply its own
# (the container tests use one made with debootstrap from Debian's packages). The binary is
# linked against glibc: the runtime base must be Debian bookworm or newer, like the builder.
ARG BUILD_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- runtime: everything but the binary -------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# ca-certificates: the system trust roots for TLS to backends without a `ca`. A base that
# already has them (the tests' debootstrap base) is not asked to download anything.
RUN if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update && apt-get install -y --no-install-recommends ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi
# The container config (admin on 0.0.0.0:9901, one listener on 8080, backend `app:8080`):
# a starting point meant to be replaced by a file or a ConfigMap mounted on /etc/fulcrum.
COPY conf/container.toml /etc/fulcrum/fulcrum.toml
ENV FULCRUM_CONFIG=/etc/fulcrum/fulcrum.toml
# Numeric, so that Kubernetes' runAsNonRoot can check it without an /etc/passwd entry.
USER 10001:10001
# fulcrum drains on SIGTERM: /readyz turns 503 for shutdown_delay, then open requests get
# shutdown_timeout. `docker stop -t` / terminationGracePeriodSeconds must cover both.
STOPSIGNAL SIGTERM
# 8080: the http listener of the baked-in config; 9901: the admin listener (/healthz,
# /readyz, /metrics, /status). No HEALTHCHECK: the base has no HTTP client, and platforms
# probe /healthz (liveness) and /readyz (readiness) on 9901 themselves.
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/fulcrum"]
CMD ["run"]

# ---- prebuilt: a binary from the build context ------------------------------------------
# Listed before the Rust stage so that builders without BuildKit, which build every stage
# up to the target, never need the Rust image for this target.
FROM runtime AS prebuilt
ARG FULCRUM_BINARY=target/release/fulcrum
COPY ${FULCRUM_BINARY} /usr/local/bin/fulcrum

# ---- build: the profile-guided release build --------------------------------------------
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# Dependencies first, so a source change does not download them again.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/balance.rs && cargo fetch --locked
COPY src ./src
COPY benches ./benches
COPY examples/pgo_train.rs ./examples/pgo_train.rs
COPY scripts ./scripts
# The profile-guided build (README, Benchmark): instrumented build, about half a minute of
# training load on 127.0.0.1 inside this stage, optimized build.
RUN rustup component add llvm-tools \
    && scripts/pgo-build.sh \
    && strip target/pgo/release/fulcrum

# ---- source: the default target ---------------------------------------------------------
FROM runtime AS source
COPY --from=build /src/target/pgo/release/fulcrum /usr/local/bin/fulcrum
