# pamfr daemon image: only what the daemon needs (no test tools), run as a non-root user.
#   docker build -t pamfr .
#   docker run -p 2575:2575 -v pamfr-data:/var/lib/pamfr pamfr
# compose.yaml runs it with PostgreSQL.
# The tag, not a digest: no digest of it could be checked from a public source when this was
# written (docs/security.md says how to pin one).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/pamfr --create-home pamfr

WORKDIR /opt/pamfr
COPY pyproject.toml README.md ./
COPY requirements/daemon-pg.txt ./requirements/
COPY pamfr ./pamfr
COPY migrations ./migrations
# The daemon's locked set with the [pg] extra (scripts/lock.sh), each file checked against its
# hash; then pamfr itself, with nothing more.
RUN pip install --require-hashes --no-deps -r requirements/daemon-pg.txt \
    && pip install --no-deps --no-build-isolation --no-index . \
    && rm -rf /root/.cache

USER pamfr
WORKDIR /var/lib/pamfr
# Open to the network, so only the private address ranges may send (narrow them to the
# GAM's own address with -e PAMFR_SERVER_ALLOWED_PEERS='["10.1.2.7"]', or use mutual TLS).
# The HTTP port serves /healthz, /readyz and /metrics (no patient data) to the container's
# health check and a scraper; PAMFR_HTTP_PUBLIC_URL names the host a scraper uses.
ENV PAMFR_SERVER_HOST=0.0.0.0 \
    PAMFR_SERVER_ALLOWED_PEERS='["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.1"]' \
    PAMFR_DATABASE_URL=sqlite:////var/lib/pamfr/pamfr.db \
    PAMFR_HTTP_LISTEN=0.0.0.0:8090 \
    PAMFR_HTTP_HEALTH_WITHOUT_TLS=true \
    PAMFR_LOG_FORMAT=json
VOLUME /var/lib/pamfr
EXPOSE 2575 8090
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8090/readyz', timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["pamfr", "serve"]
