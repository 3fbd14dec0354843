FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.lock
COPY src ./src
COPY profiles ./profiles
COPY migrations ./migrations
RUN pip install --no-cache-dir --no-deps -e . && useradd --create-home cmfhir
USER cmfhir
ENV CMFHIR_DATA_DIR=/home/cmfhir/data
EXPOSE 8080
CMD ["cmfhir", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
