# One image for every Sealstream process; docker-compose.yml picks the command
# (gateway, worker, sink clickhouse, sink objects, topics create, schemas register, ...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The project, installed from pyproject.toml (the package data, schemas/avro/*.avsc, comes along).
COPY pyproject.toml README.md ./
COPY sealstream sealstream
COPY schemas schemas
COPY producers producers
COPY streams streams
COPY sinks sinks
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app sealstream \
    # the keys volume is mounted here: a fresh named volume takes this directory's owner
    && mkdir -p /var/lib/sealstream/keys \
    && chown -R sealstream /var/lib/sealstream

# Runtime files the settings point at: /app/config/policy.yaml, routes.yaml, tenants.yaml, ...
COPY config config

USER sealstream
ENTRYPOINT ["sealstream"]
CMD ["--help"]
