# One image for every Sealstream process; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sealstream sealstream
COPY schemas schemas
COPY producers producers
COPY streams streams
COPY sinks sinks
COPY config config
RUN pip install --no-cache-dir . && useradd --system --uid 10001 sealstream
USER sealstream
ENTRYPOINT ["sealstream"]
