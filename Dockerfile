# syntax=docker/dockerfile:1
# catbot's container image: a build stage makes a virtualenv, the final stage copies only it
# onto the same slim Python base. See docs/deployment.md.
#
#   make wheels && podman build -t catbot .   # offline: installs only from ./wheels
#   docker build -t catbot .                   # no ./wheels: pip reads PyPI, pinned by constraints.txt
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# .dockerignore lets in only what the build needs: pyproject.toml, README.md (the package's
# readme), constraints.txt, catbot/ and, when `make wheels` made it, wheels/.
COPY . .
# A wheelhouse means "build offline": catbot's own wheel and every pinned dependency come from
# it and pip never touches the network. Without one, pip builds catbot from source and reads
# PyPI, pinned by the same constraints.txt.
RUN python -m venv /opt/venv \
    && if ls wheels/*.whl >/dev/null 2>&1; then \
        /opt/venv/bin/pip install --no-cache-dir --no-index --find-links wheels \
            -c constraints.txt catbot; \
    else \
        /opt/venv/bin/pip install --no-cache-dir -c constraints.txt . ; \
    fi \
    && /opt/venv/bin/catbot --version

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="catbot" \
      org.opencontainers.image.description="Answers X (Twitter) direct messages with cat facts" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"

# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER, and the
# manifests' runAsUser/fsGroup use the same numbers. /data is the only place catbot writes.
RUN groupadd --gid 10001 catbot \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /data \
        --shell /usr/sbin/nologin catbot \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0750 /data

COPY --from=build /opt/venv /opt/venv

# Read-only root filesystem: state goes to the /data volume (SQLite and its lock file), temp
# files to /tmp (a tmpfs or emptyDir), and Python writes no bytecode next to the code.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    CATBOT_STORE_URL=sqlite:////data/catbot.db
WORKDIR /data
VOLUME ["/data"]

# 8080: the public webhook (X calls it). 9090: /metrics, /livez, /readyz, never public.
EXPOSE 8080 9090

# slim has no curl: ask /livez with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('CATBOT_METRICS_PORT', '9090'), timeout=4)"]

USER 10001:10001
# Exec form: catbot is PID 1 and gets SIGTERM itself; it stops taking events, lets workers
# finish or hand back their jobs within CATBOT_SHUTDOWN_GRACE_SECONDS, and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["catbot"]
CMD ["run"]
