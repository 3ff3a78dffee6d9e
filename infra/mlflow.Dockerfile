# The MLflow tracking server of the one-host stack (infra/compose.yaml): `mlflow server` with a
# PostgreSQL backend store and artifacts proxied to S3 (MinIO). The GLEAM image is not reused here: it
# carries torch and Ray, none of which a tracking server needs. Built from the repository root:
#
#   docker build -f infra/mlflow.Dockerfile -t gleam-mlflow:3.17.2 .
#
# Versions are pinned: MLflow is the one the platform's tests run as a server (pyproject allows >=3,<4),
# psycopg2-binary is the PostgreSQL driver, boto3 the S3 client of the artifact proxy. No credentials
# are baked in: the server reads the database URI and AWS_* from its environment.
FROM python:3.11.14-slim-bookworm

ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13
ARG BOTO3_VERSION=1.43.117

LABEL org.opencontainers.image.title="gleam-mlflow" \
      org.opencontainers.image.description="MLflow tracking server (PostgreSQL + S3 artifacts) for GLEAM" \
      org.opencontainers.image.version="${MLFLOW_VERSION}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true

RUN pip install --no-cache-dir \
        "mlflow==${MLFLOW_VERSION}" \
        "psycopg2-binary==${PSYCOPG2_VERSION}" \
        "boto3==${BOTO3_VERSION}" \
    && useradd --create-home --uid 1000 --gid 100 mlflow

USER 1000:100
WORKDIR /home/mlflow
EXPOSE 5000
