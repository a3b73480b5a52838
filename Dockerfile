# The alignd API server image: `alignd serve` (the OpenAI-compatible API plus the controller that
# launches trainer runs). No PyTorch: training happens in the trainer image (trainer_image/Dockerfile),
# which the server starts as Kubernetes Jobs (ALIGND_LAUNCHER=kubernetes). The Helm chart in
# helm/alignd runs this image; its `image.*` values default to ghcr.io/alignd/alignd:<appVersion>.
#
# Build from the repository root (the context needs pyproject.toml, README.md and service/):
#   docker build -t ghcr.io/alignd/alignd:0.1.0 .
#
# Run it alone (SQLite and the local store under /var/lib/alignd, which a volume keeps):
#   docker run -p 8000:8000 -v alignd-data:/var/lib/alignd \
#     -e ALIGND_ADMIN_KEY=sk-alignd-admin-change-me ghcr.io/alignd/alignd:0.1.0
# The image holds no trainer, so runs need ALIGND_LAUNCHER=kubernetes (in a cluster, or outside one
# with ALIGND_K8S_KUBECONFIG); the local launcher is for `pip install '.[server,trainer]'` installs.
# Settings are ALIGND_* environment variables (service/alignd/config.py; README "Configuration").
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The `server` extra, and `integrations` so jobs can log to W&B as on OpenAI, at the versions pinned in
# requirements/server-image.lock (`make lock`), in a layer of their own that a code change does not
# rebuild; then alignd itself with --no-deps. Every dependency ships manylinux wheels, so no compiler is
# needed; the source tree is removed after the install.
WORKDIR /opt/alignd/src
COPY requirements/server-image.lock requirements/
RUN python -m pip install -r requirements/server-image.lock
COPY pyproject.toml README.md ./
COPY service/ service/
RUN python -m pip install --no-deps '.[server,integrations]' \
    && cd / && rm -rf /opt/alignd/src \
    && alignd --help >/dev/null

# Non-root with a numeric uid/gid (10001) so pods can run with runAsNonRoot; /var/lib/alignd is the
# data directory (ALIGND_DATA_DIR: SQLite, local store, signing key) and the only place written to
# besides /tmp, so the root filesystem can be read-only.
RUN groupadd --gid 10001 alignd \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/alignd --no-create-home \
        --shell /usr/sbin/nologin alignd \
    && mkdir -p /var/lib/alignd \
    && chown 10001:10001 /var/lib/alignd

ENV HOME=/var/lib/alignd \
    ALIGND_DATA_DIR=/var/lib/alignd

USER 10001:10001
WORKDIR /var/lib/alignd
EXPOSE 8000
ENTRYPOINT ["alignd"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
