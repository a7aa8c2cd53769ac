# A static (musl) metrics-relay on scratch: no shell, no libc, runs as non-root.
FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY proto ./proto
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin metrics-relay

FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/metrics-relay /metrics-relay
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/metrics-relay"]
CMD ["run", "--config", "/etc/metrics-relay/config.yml", "--data-dir", "/var/lib/metrics-relay"]
