# One image for the hub and the node agent: `docker run gpupool hub`, `docker run gpupool node`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --create-home --uid 10001 gpupool && mkdir -p /data && chown gpupool /data

USER gpupool
WORKDIR /data
ENV GPUPOOL_DB_URL=sqlite:////data/gpupool.db GPUPOOL_HUB_DATA_DIR=/data/hub \
    GPUPOOL_STORAGE_PATH=/data/artifacts GPUPOOL_HUB_HOST=0.0.0.0 DATA_DIR=/data/node
EXPOSE 8203 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["gpupool"]
CMD ["hub"]
