# Builds the `writ` binary. Used by docker-compose.yml and, pushed to your
# registry, by deploy/kubernetes (docs/deployment.md).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin writ

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/writ /usr/local/bin/writ
RUN mkdir -p /data && chown 65532:65532 /data
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532
WORKDIR /data
# gRPC and HTTP (both TLS with [server.tls]).
EXPOSE 7070 7071
ENTRYPOINT ["writ"]
