# The API: FastAPI under uvicorn. Inference runs on the CPU here (install the CUDA wheels to use a GPU).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY hilum hilum
COPY service service
COPY worker worker
COPY pipelines pipelines
COPY models models
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu .
RUN useradd --create-home --uid 10001 hilum && mkdir -p /data && chown hilum /data
USER hilum
EXPOSE 8000
CMD ["uvicorn", "service.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
