# The ecos container image.
#
#   docker build -t ecos .
#   docker run --rm -p 3000:3000 ecos
#
# Four stages:
#   chef     the Rust toolchain plus cargo-chef
#   planner  turns Cargo.toml + Cargo.lock into recipe.json (dependencies only)
#   builder  compiles the dependencies from recipe.json (a layer that stays
#            cached until Cargo.toml or Cargo.lock change), then ecos itself
#   runtime  distroless (glibc, libgcc, CA certificates, no shell), non-root,
#            holding nothing but the binary; static/index.html is compiled in
#
# The Rust image tag must equal VERSION in RustConfig, where the toolchain is
# pinned for the Heroku buildpack (not in a rust-toolchain file, which rustup
# would also read and which would break cargo wherever that exact toolchain is
# not installed). The build uses the image's own toolchain and does not need
# RustConfig. scripts/check-deploy checks that the two versions agree.
# Builder and runtime are both Debian 12 (bookworm), so the binary links
# against the same glibc it runs with.

FROM rust:1.95.0-slim-bookworm AS chef
WORKDIR /app
RUN cargo install cargo-chef --version 0.1.78 --locked

FROM chef AS planner
# .dockerignore keeps target/, .git, tests/, docs and deploy files out.
COPY . .
RUN cargo chef prepare --recipe-path recipe.json --bin ecos

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Dependencies only: cached until the recipe (manifests, lock file) changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin ecos
# Then the crate itself. Only what the binary is built from: src/ and the
# page that src/http.rs includes with include_str!.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY static ./static
RUN cargo build --release --locked --bin ecos

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /app/target/release/ecos /usr/local/bin/ecos
# Platforms that set PORT (Heroku, Render) override this default.
ENV PORT=3000
EXPOSE 3000
# The distroless "nonroot" user, by number so that Kubernetes' runAsNonRoot
# can verify it.
USER 65532:65532
# `ecos healthcheck` GETs http://127.0.0.1:$PORT/healthz itself: no shell or
# curl needed. Ignored by Heroku's container runtime, used by docker and
# docker compose.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/ecos", "healthcheck"]
# Exec form, no shell: ecos is PID 1 and receives SIGTERM itself. ENTRYPOINT
# rather than CMD because Heroku's container runtime runs CMD through a shell,
# and this image has none.
ENTRYPOINT ["/usr/local/bin/ecos"]
