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
# Local connectors' files live under /data. A new named volume mounted there
# (compose.yaml) takes this directory's owner, so uid 10001 can write to it;
# in Kubernetes the pod's fsGroup does the same where the volume supports it.
RUN mkdir -p /data && chown 10001:10001 /data
USER 10001
ENTRYPOINT ["resolwe-storage"]
CMD ["--help"]
