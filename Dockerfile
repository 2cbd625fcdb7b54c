# syntax=docker/dockerfile:1
# The enrich API. Build: docker build -t enrich .   Run the stack: docker compose up
ARG PYTHON_VERSION=3.11

# --- builder: build the wheel (it carries the migrations as app/_migrations) into a venv ---
FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/*.whl

# --- runtime: the venv only, run by an unprivileged user ---
FROM python:${PYTHON_VERSION}-slim
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
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ENRICH_PORT', '8000') + '/healthz', timeout=2)"]
CMD ["enrich", "serve"]
