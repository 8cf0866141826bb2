# lmroute gRPC routing service (CPU onnxruntime). gRPC on 50051, Prometheus metrics on 9464.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LMROUTE_MODELS_DIR=/app/models_onnx

WORKDIR /app
COPY . /app

# Non-editable install: the package goes to site-packages; /app keeps the models and the config.
RUN pip install --no-cache-dir '.[cpu]' \
    && rm -rf /app/build /app/*.egg-info \
    && useradd --create-home --uid 10001 --user-group lmroute

USER lmroute

EXPOSE 50051 9464

CMD ["lmroute", "serve", "--config", "/app/config.example.yaml", "--host", "0.0.0.0"]
