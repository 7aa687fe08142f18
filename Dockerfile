# syntax=docker/dockerfile:1
#
# One image recipe for every binary of the workspace.
#
#   docker build --build-arg BIN=borrow-svc -t ghcr.io/library-circulation/borrow-svc:<tag> .
#
# BIN is one of: book-svc, borrow-svc, dashboard-svc, graphql-gateway, library (the all-in-one).
# Each binary lives in the cargo package of the same name (`library` is the root package).
#
# Stages:
#   chef     - the Rust toolchain plus cargo-chef
#   planner  - reduces the workspace to a dependency "recipe" (Cargo.toml files + Cargo.lock)
#   builder  - cooks the recipe (dependencies only: a layer that stays cached until
#              Cargo.lock or a manifest changes), then builds the binary itself
#   runtime  - distroless glibc image, no shell, no package manager, non-root
# No protoc is needed: the proto crate compiles .proto files with protox.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.77
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG BIN
# Fail early, with a clear message, when BIN is missing.
RUN test -n "${BIN}" || { echo "build argument BIN is required (book-svc, borrow-svc, dashboard-svc, graphql-gateway or library)" >&2; exit 1; }
COPY --from=planner /src/recipe.json recipe.json
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json -p "${BIN}" --bin "${BIN}"
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked -p "${BIN}" --bin "${BIN}" \
    && install -D -m 0755 "target/release/${BIN}" /out/app

# distroless/cc: glibc, libgcc and CA certificates, nothing else (no shell: the Kubernetes
# manifests use the native preStop `sleep` action and gRPC/HTTP probes, never exec).
FROM gcr.io/distroless/cc-debian13:nonroot AS runtime
ARG BIN
LABEL org.opencontainers.image.title="${BIN}" \
      org.opencontainers.image.description="library-circulation: ${BIN}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/app /usr/local/bin/app
# A fixed numeric UID/GID, the same as the pods' securityContext (runAsUser/runAsGroup 10001).
USER 10001:10001
# No EXPOSE: the port depends on BIN (50051-50053 for the gRPC services, 8080 for the gateway
# and the all-in-one) and is declared where it matters, in the Kubernetes manifests.
ENTRYPOINT ["/usr/local/bin/app"]
