# The GPU worker: Celery consuming the gpu and ingest queues, PyTorch with CUDA.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hilum hilum
COPY service service
COPY worker worker
COPY pipelines pipelines
COPY models models
RUN pip install --extra-index-url https://download.pytorch.org/whl/cu124 .
RUN useradd --create-home --uid 10001 hilum && mkdir -p /data && chown hilum /data
USER hilum
CMD ["celery", "-A", "worker.celery_app", "worker", "-Q", "gpu,ingest", "-c", "1", "--loglevel", "INFO"]
