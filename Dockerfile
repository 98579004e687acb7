# syntax=docker/dockerfile:1
#
# labelsync's image: static binaries of every command (worker, exporter,
# lsctl, devstack) plus the healthcheck, on a distroless base with no shell,
# running as a non-root user. The worker is the default command:
#
#   docker build -t labelsync .
#   docker run labelsync                                  # the worker
#   docker run --entrypoint /usr/local/bin/exporter labelsync
#
# The `seed` target is docker-compose.yml's one-shot demo seeder (lsctl and
# a POSIX shell): docker build --target seed -t labelsync-seed .
# docs/operations.md says how to deploy it.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY cmd ./cmd
COPY internal ./internal
COPY deploy/healthcheck ./deploy/healthcheck
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags='-s -w' -o /out/ ./cmd/... ./deploy/healthcheck
# The embedded NATS server's data directory (LABELSYNC_DATA_DIR), owned by
# the runtime user; with an external NATS (LABELSYNC_NATS_URL) it stays empty.
RUN mkdir -p /rootfs/data

# docker-compose.yml's seeder: creates the demo buckets, uploads a file,
# shows the task it became, posts an annotation webhook and shows the
# object the exporter wrote (scripts/run.sh's demo).
FROM busybox:1.37.0-musl AS seed
COPY --from=build /out/lsctl /usr/local/bin/lsctl
COPY deploy/compose/seed.sh /usr/local/bin/seed
COPY README.md /usr/share/labelsync/README.md
USER 65532:65532
ENTRYPOINT ["/bin/sh", "/usr/local/bin/seed"]

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /out/ /usr/local/bin/
COPY --from=build --chown=65532:65532 /rootfs/data /data
ENV LABELSYNC_DATA_DIR=/data
VOLUME /data
USER 65532:65532
# worker (LABELSYNC_HTTP_ADDR default :8080), exporter (:8081)
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/healthcheck"]
ENTRYPOINT ["/usr/local/bin/worker"]
