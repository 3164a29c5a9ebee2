# syntax=docker/dockerfile:1
# The OpenTelemetry Collector image plus one static busybox, so that Docker can health-check it:
# the official image is built FROM scratch, with no shell and no HTTP client to probe the
# health_check extension with (open-telemetry/opentelemetry-collector-contrib issue 30798).
ARG OTELCOL_IMAGE=otel/opentelemetry-collector-contrib:0.114.0

FROM busybox:1.36-musl AS probe

FROM ${OTELCOL_IMAGE}
COPY --from=probe /bin/busybox /usr/local/bin/busybox
