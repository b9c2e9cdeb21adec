# eventstream container image, built from the repository root:
#   docker build --build-arg EVENTSTREAM_REVISION="$(git rev-parse --short=12 HEAD)" -t eventstream:0.1.0 .
#
# Stage 1 builds the release binary with the workspace's locked dependencies; stage 2 is a slim
# Debian runtime (glibc, /bin/sh for the StatefulSet's entrypoint and preStop hook) running as an
# unprivileged user. The uid/gid 10001 match runAsUser/runAsGroup/fsGroup in
# k8s/statefulset.yaml (scripts/check-ops.sh checks that they agree).

# The toolchain CI tests with. Cargo.toml's rust-version (1.85) is the workspace's own floor, but
# locked dependencies need newer (hdrhistogram 7.6: 1.88, smol_str 0.3.7: 1.89). Same Debian
# release as the runtime stage, so the binary's glibc requirement is met.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole context (see .dockerignore): cargo needs every workspace member to resolve the
# workspace, and crates embed files from outside their directory (README.md doctests,
# exporter/static/).
COPY . .
# eventstream_build_info{revision}: .git is not in the build context, so pass it in:
#   docker build --build-arg EVENTSTREAM_REVISION="$(git rev-parse --short=12 HEAD)" ...
ARG EVENTSTREAM_REVISION=unknown
ENV EVENTSTREAM_REVISION=${EVENTSTREAM_REVISION}
RUN cargo build --release --locked --bin eventstream \
 && install -D -m 0755 target/release/eventstream /out/eventstream

FROM debian:bookworm-slim AS runtime
RUN groupadd --system --gid 10001 eventstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/eventstream --shell /usr/sbin/nologin eventstream \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/eventstream \
 && install -d -m 0755 /etc/eventstream
COPY --from=build /out/eventstream /usr/local/bin/eventstream
USER 10001:10001
WORKDIR /var/lib/eventstream
# 7000: raft peers and clients; 8080: http (metrics, /health, /ready, API, status page)
EXPOSE 7000 8080
VOLUME ["/var/lib/eventstream"]
ENTRYPOINT ["/usr/local/bin/eventstream"]
CMD ["node", "--config", "/etc/eventstream/eventstream.toml"]
