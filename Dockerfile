# One image for every process (api, relay, consumers, checkpoints): `docker-compose.yml` picks the command.
FROM python:3.11-slim

# Printing needs the certificate's faces (certgen/fonts.py): Kai for the fixed wording, Song for the
# fill-ins and the seal, Liberation Serif for English. Without them printing refuses, naming the package.
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-arphic-ukai fonts-arphic-gbsn00lp fonts-liberation fonts-arphic-uming fonts-hanazono \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin skillcert
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY consumers consumers
COPY certgen certgen
COPY infra infra
# The bus contract the API serves at /schemas (infra/bus/schemas.py).
COPY schemas schemas
RUN pip install --no-cache-dir . && rm -rf /root/.cache
ENV SKILLCERT_SCHEMA_DIR=/app/schemas \
    SKILLCERT_DATA_DIR=/tmp/skillcert \
    SKILLCERT_API_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1

USER skillcert
EXPOSE 8000
# The API answers /health; the other processes have no port, and compose gives each a check of its own.
HEALTHCHECK --interval=10s --timeout=3s --start-period=40s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]
ENTRYPOINT ["skillcert"]
CMD ["api"]
