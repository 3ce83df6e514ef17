# syntax=docker/dockerfile:1
# metadata-worker image (docs/contract.md §7): built on Debian bookworm, run on bookworm-slim
# with the runtime libraries only, as a non-root user.
#   docker build -t metadata-worker .
#   docker run --rm -e KAFKA_BROKERS=… -e DATABASE_URL=… metadata-worker           (run)
#   docker run --rm -e DATABASE_URL=… metadata-worker migrate
#   docker run --rm -i metadata-worker validate - < schemas/example-request.json

# Packages: the "build" and "runtime" sections of deps/packages.txt, the list every installer
# reads. `pkgs=$(…) &&` so that a failing read fails the build instead of installing nothing.
FROM debian:bookworm AS build
COPY deps/ /tmp/deps/
RUN pkgs=$(sh /tmp/deps/packages.sh build) \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs \
 && rm -rf /var/lib/apt/lists/* /tmp/deps
WORKDIR /src
# build/ is excluded by .dockerignore, so nothing built on the host leaks in.
COPY . .
RUN make -j"$(nproc)" \
 && ./build/metadata-worker validate schemas/example-request.json >/dev/null

FROM debian:bookworm-slim
COPY deps/ /tmp/deps/
RUN pkgs=$(sh /tmp/deps/packages.sh runtime) \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs \
 && rm -rf /var/lib/apt/lists/* /tmp/deps \
 && groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid worker --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin worker
COPY --from=build /src/build/metadata-worker /usr/local/bin/metadata-worker
# Fails the build when a shared library is missing from this stage.
RUN metadata-worker --help >/dev/null

# Numeric so that runtimes enforcing runAsNonRoot can check it.
USER 10001:10001
ENV METRICS_ADDR=0.0.0.0:9090 \
    LOG_LEVEL=info
EXPOSE 9090
STOPSIGNAL SIGTERM
# /healthz answers while the process is alive (contract §7); the port follows METRICS_ADDR.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${METRICS_ADDR##*:}/healthz" || exit 1
ENTRYPOINT ["metadata-worker"]
CMD ["run"]
