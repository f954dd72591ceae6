# syntax=docker/dockerfile:1
# One image for the four services and the scenario's workload programs:
#   apollo | apollo-extender | apollo-webhook | apollo-orchestrator   (console scripts on PATH)
#   python -m apolloctl.workloads.{dataprep,trainer,monitor}           (the demo Job's containers)
# The manifests choose the program with `command:`. Build:  docker build -t apollo-stack:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: install the project and its dependencies into a virtualenv ---------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/apollo
WORKDIR /src
# Metadata first, so that the dependency layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir -p common && touch common/__init__.py \
 && /opt/apollo/bin/pip install . \
 && /opt/apollo/bin/pip uninstall -y apollo-stack \
 && rm -rf common
COPY common ./common
COPY apollo_api ./apollo_api
COPY apollo ./apollo
COPY extender ./extender
COPY webhook ./webhook
COPY orchestrator ./orchestrator
COPY apolloctl ./apolloctl
RUN /opt/apollo/bin/pip install --no-deps . \
 && /opt/apollo/bin/python -m compileall -q /opt/apollo/lib \
 && /opt/apollo/bin/python -c "import apollo.main, extender.main, webhook.main, orchestrator.main, apolloctl.workloads.trainer"

# ---- runtime: the virtualenv on a clean base, run as an unprivileged user ------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="apollo-stack" \
      org.opencontainers.image.description="APOLLO policy engine, scheduler extender, admission webhook and migration orchestrator" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/apollo/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/apollo /opt/apollo
# Numeric, so that the kubelet can enforce runAsNonRoot; the manifests run as the same UID.
USER 65532:65532
WORKDIR /tmp
# gRPC and HTTP of APOLLO, the extender, the webhook (TLS), the orchestrator's API.
EXPOSE 50051 8080 8888 8443
CMD ["apollo"]
