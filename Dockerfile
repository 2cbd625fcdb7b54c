# The enrich API. Build: docker build -t enrich .   Run the stack: docker compose up
# BASE is any Debian-like image with CPython 3.11 as `python3.11` and its venv module:
# python:3.11-slim by default; deploy/image-smoke.sh builds one from Debian's packages.
ARG BASE=python:3.11-slim

# --- builder: the locked dependencies and the enrich wheel (it carries the migrations as
# app/_migrations) in a venv ---
FROM ${BASE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3.11 -m venv /opt/venv
# Exactly requirements/service.lock, every file's hash checked. Every dependency ships manylinux
# wheels for CPython 3.11, so no compiler is needed. Where the build context has ./wheelhouse
# (wheels built beforehand, as deploy/image-smoke.sh does), they are installed from there
# without an index; the hashes are checked all the same.
COPY requirements/service.lock wheelhous[e] /tmp/in/
RUN if ls /tmp/in/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/in; fi \
    && /opt/venv/bin/pip install --no-deps --require-hashes -r /tmp/in/service.lock
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
# Then what the runtime never loads leaves the venv: pip and setuptools, and phonenumbers'
# geocoder, carrier and time-zone data (45 MB; app/identity/identifiers.py only parses and formats
# numbers, and tests/test_settings_files.py keeps it so).
RUN if ls /tmp/in/enrich-*.whl >/dev/null 2>&1; then mkdir /wheels && cp /tmp/in/enrich-*.whl /wheels/; \
    else /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels .; fi \
    && /opt/venv/bin/pip install --no-deps /wheels/enrich-*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools \
    && rm -rf /opt/venv/lib/python3.11/site-packages/phonenumbers/geodata \
        /opt/venv/lib/python3.11/site-packages/phonenumbers/carrierdata \
        /opt/venv/lib/python3.11/site-packages/phonenumbers/tzdata

# --- runtime: the venv only, run by an unprivileged user ---
FROM ${BASE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENRICH_ENVIRONMENT=production \
    ENRICH_HOST=0.0.0.0 \
    ENRICH_PORT=8000
RUN groupadd --system --gid 10001 enrich \
    && useradd --system --uid 10001 --gid enrich --home-dir /srv/enrich \
        --shell /usr/sbin/nologin enrich \
    && mkdir -p /srv/enrich/var \
    && chown -R enrich:enrich /srv/enrich
COPY --from=builder /opt/venv /opt/venv
# The working directory holds ./var, where the embedded SQLite default lives without a database.
WORKDIR /srv/enrich
USER 10001:10001
EXPOSE 8000
# SIGTERM (docker stop) drains and stops the server: give it ENRICH_SHUTDOWN_DRAIN_SECONDS +
# ENRICH_SHUTDOWN_TIMEOUT_SECONDS (docker stop -t 30; stop_grace_period in docker-compose.yml).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ENRICH_PORT', '8000') + '/healthz', timeout=2)"]
CMD ["enrich", "serve"]
