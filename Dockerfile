# cmfhir's runtime image: the server and its locked runtime dependencies, no test tools.
# Build: docker build -t cmfhir .   Run: see docs/deployment.md and docker-compose.yml.

# Stage 1: the runtime dependencies (pyproject.toml's, at the versions of requirements.lock)
# in a virtual environment; the test extras are never installed.
FROM python:3.11-slim AS build
WORKDIR /build
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > runtime.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --constraint requirements.lock -r runtime.txt

# Stage 2: what runs. The code is used in place (src/, profiles/ and migrations/ side by side,
# as in a checkout), as a non-root user; the embedded PostgreSQL, used when
# CMFHIR_DATABASE_URL is unset, keeps its files in the /data volume.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/src \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CMFHIR_DATA_DIR=/data
RUN groupadd --gid 10001 cmfhir \
 && useradd --create-home --uid 10001 --gid 10001 cmfhir \
 && mkdir /data \
 && chown cmfhir:cmfhir /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY src ./src
COPY profiles ./profiles
COPY migrations ./migrations
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
# Ready: the database answers and its schema is at this release's migration.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:8080/readyz', timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "cmfhir", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
