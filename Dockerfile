# The one image of the service: scheduler, workers and the command line.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY connectors ./connectors
COPY catalog ./catalog
COPY scheduler ./scheduler
COPY workers ./workers
COPY resolwe_storage ./resolwe_storage
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home storage
USER 10001
ENTRYPOINT ["resolwe-storage"]
CMD ["--help"]
