# One image for the hub and the node agent: `docker run gpupool hub`, `docker run --gpus all gpupool node`.
# No torch: the `gpu` extra is for PoC generation on a GPU box, not for the hub or the agent.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --create-home --uid 10001 gpupool && mkdir -p /data && chown gpupool /data

USER gpupool
WORKDIR /data
# Every state path under /data (one volume); names and defaults of all settings: .env.example.
ENV GPUPOOL_DB_URL=sqlite:////data/gpupool.db GPUPOOL_HUB_DATA_DIR=/data/hub \
    GPUPOOL_STORAGE_PATH=/data/artifacts GPUPOOL_HUB_HOST=0.0.0.0 DATA_DIR=/data/node
EXPOSE 8203 50051 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["gpupool"]
CMD ["hub"]
