# pamfr daemon image: only what the daemon needs (no test tools), run as a non-root user.
#   docker build -t pamfr .
#   docker run -p 2575:2575 -v pamfr-data:/var/lib/pamfr pamfr
# compose.yaml runs it with PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/pamfr --create-home pamfr

WORKDIR /opt/pamfr
COPY pyproject.toml README.md ./
COPY pamfr ./pamfr
COPY migrations ./migrations
# The [pg] extra carries the PostgreSQL driver where it is separate from the core.
RUN pip install ".[pg]" && rm -rf /root/.cache

USER pamfr
WORKDIR /var/lib/pamfr
ENV PAMFR_SERVER_HOST=0.0.0.0 \
    PAMFR_DATABASE_URL=sqlite:////var/lib/pamfr/pamfr.db \
    PAMFR_HTTP_LISTEN=0.0.0.0:8090 \
    PAMFR_LOG_FORMAT=json
VOLUME /var/lib/pamfr
EXPOSE 2575 8090
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8090/readyz', timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["pamfr", "serve"]
