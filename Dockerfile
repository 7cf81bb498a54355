FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY consumers consumers
COPY certgen certgen
COPY infra infra
RUN pip install --no-cache-dir .
ENTRYPOINT ["skillcert"]
