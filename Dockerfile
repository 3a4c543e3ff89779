# syntax=docker/dockerfile:1
# Build: docker build -t provisiond .
# Run:   docker run -p 3002:3002 -v provisiond-certs:/var/lib/provisiond/certs \
#          -e REDIS_URL=redis://redis:6379 provisiond

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
# Stripped: the release profile keeps debug info for profiling (117 MB); the image
# needs none of it (18 MB).
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    --config profile.release.strip=true

FROM debian:bookworm-slim
# Versions are not pinned: security fixes arrive by rebuilding on the current base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 provisiond \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/provisiond provisiond \
    && mkdir -p /var/lib/provisiond/certs \
    && chown -R provisiond:provisiond /var/lib/provisiond \
    && chmod 700 /var/lib/provisiond/certs
COPY --from=build /src/target/release/provisiond /usr/local/bin/provisiond
COPY config.toml /etc/provisiond/config.toml
WORKDIR /var/lib/provisiond
ENV CONFIG=/etc/provisiond/config.toml \
    CERTS_DIR=/var/lib/provisiond/certs \
    HOST=0.0.0.0 \
    PORT=3002
USER 10001:10001
# The CA key, JWT secret and enrollment key live here: keep it, and share it (or set
# JWT_SECRET and mount the same CA) across instances behind one load balancer.
VOLUME ["/var/lib/provisiond/certs"]
EXPOSE 3002
# /health answers 503 only when no store can serve (Redis required and gone). With TLS
# on (TLS_CERT_FILE), the same port speaks HTTPS: the second form covers it. The port is
# the one the server listens on ($PORT), not a fixed 3002.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["sh", "-c", "curl -fsS http://127.0.0.1:${PORT}/health >/dev/null || curl -fsSk https://127.0.0.1:${PORT}/health >/dev/null"]
ENTRYPOINT ["provisiond"]
CMD ["serve"]
