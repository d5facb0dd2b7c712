# syntax=docker/dockerfile:1
# The phaseloop operator image: a static binary on a distroless base.
#
#   docker build -t ghcr.io/phaseloop/phaseloop:0.1.0 .
#
# Needs BuildKit (the default builder of current Docker; `docker buildx build` elsewhere) for the
# cache mounts. See docs/install.md.

# --- build -------------------------------------------------------------------------------------
# The official Rust image at the workspace's rust-version (Cargo.toml: 1.95), on Debian bookworm
# like the development setup.
FROM rust:1.95-bookworm AS builder

# A fully static binary: glibc's static build on the gnu target (`+crt-static`), so the runtime
# image needs no libc at all. The same build as e2e/scripts/build-images.sh, which makes the image
# the e2e suite runs on its real node: the musl target is not used because its standard library is
# a rustup download that offline build machines cannot fetch. The crate uses rustls (no OpenSSL to
# link); `ring` and jemalloc compile some C with the image's gcc.
WORKDIR /src
# Only what cargo needs (see .dockerignore): the workspace manifest and lock file, and both members
# (e2e is a workspace member, so its manifest and sources must be present for cargo to load the
# workspace, even though only the operator is built).
COPY Cargo.toml Cargo.lock ./
# Build-time settings: the jemalloc options compiled into the operator.
COPY .cargo/ .cargo/
COPY operator/ operator/
COPY e2e/ e2e/

# --locked: exactly the dependency versions of Cargo.lock. The cache mounts keep the registry and
# the target directory between builds (BuildKit), so the binary is copied out of the mount.
# With an explicit --target, RUSTFLAGS apply to the binary's crates only, not to build scripts.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --locked --release --bin phaseloop-operator --target x86_64-unknown-linux-gnu \
 && cp target/x86_64-unknown-linux-gnu/release/phaseloop-operator /phaseloop-operator

# --- runtime -----------------------------------------------------------------------------------
# distroless/static: CA certificates, /etc/passwd with the nonroot user, tzdata; no shell, no
# package manager. The :nonroot tag runs as 65532:65532, which the chart's securityContext
# (runAsUser 65532, runAsNonRoot) and the `restricted` Pod Security Standard expect.
FROM gcr.io/distroless/static-debian12:nonroot

COPY --from=builder /phaseloop-operator /phaseloop-operator

# Numeric, so runAsNonRoot can be verified by the kubelet without reading /etc/passwd.
USER 65532:65532

# /metrics, /healthz and /readyz (PHASELOOP_METRICS_ADDR, default 0.0.0.0:8080).
EXPOSE 8080

# Exec form: the binary is PID 1 and receives SIGTERM directly for its graceful shutdown.
ENTRYPOINT ["/phaseloop-operator"]
