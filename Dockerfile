# qrsync: the container image the Kubernetes examples (deploy/kubernetes/) run.
#
#   docker build -t qrsync .
#   docker run --rm -e QRSYNC_DATABASE_URL=postgresql://... -v "$PWD/qrsync.toml:/etc/qrsync/qrsync.toml:ro" \
#       -p 9108:9108 qrsync daemon
#
# The production install: the package and what it needs, without the embedded PostgreSQL (the
# `embedded` extra) and without the development tools. Runs as an unprivileged user.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY qrsync ./qrsync
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/qrsync --create-home qrsync
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    QRSYNC_CONFIG=/etc/qrsync/qrsync.toml
USER 10001:10001
WORKDIR /var/lib/qrsync
EXPOSE 9108
# Readiness of the daemon (the database answers and takes writes); a one-shot `qrsync sync`
# container exits before the first check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
ENTRYPOINT ["qrsync"]
CMD ["daemon"]
