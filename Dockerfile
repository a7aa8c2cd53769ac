# A static (musl) metrics-relay on scratch: no shell, no libc, runs as uid 65532.
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/metrics-relay:TAG --push .
# One Dockerfile for amd64 and arm64 (BuildKit sets TARGETARCH; the build stage
# runs on the target's platform, so no cross toolchain is needed).
FROM rust:1-bookworm AS build
ARG TARGETARCH
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)" \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, in a layer of their own: a source change rebuilds only
# the crate (stub sources stand in for the real ones here).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches config \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs config/ack-one.yml \
 && echo 'fn main() {}' > benches/hot_path.rs && cp benches/hot_path.rs benches/alloc_count.rs \
 && cargo build --release --locked --target "$(cat /rust-target)" --bin metrics-relay \
 && rm -rf src benches config
COPY src ./src
COPY benches ./benches
COPY proto ./proto
COPY config ./config
# `render` prints the shipped manifests: it embeds them.
COPY deploy ./deploy
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --target "$(cat /rust-target)" --bin metrics-relay \
 && mkdir -p /out/var/lib/metrics-relay \
 && cp "target/$(cat /rust-target)/release/metrics-relay" /out/metrics-relay

FROM scratch
# CA roots, for a remote-write receiver with a publicly issued certificate
# (read from this path when no ca_file is configured).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/metrics-relay /metrics-relay
# The data directory, owned by the user that runs (usable without a volume).
COPY --from=build --chown=65532:65532 /out/var/lib/metrics-relay /var/lib/metrics-relay
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/metrics-relay"]
CMD ["run", "--config", "/etc/metrics-relay/config/config.yml", "--data-dir", "/var/lib/metrics-relay"]
