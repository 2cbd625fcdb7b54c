# CPython 3.11 and its venv module from Debian's packages, on a base made by debootstrap: what
# deploy/image-smoke.sh passes to the Dockerfile as BASE in place of python:3.11-slim.
ARG DEBIAN=enrich-ci/debian:bookworm
FROM ${DEBIAN}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11-venv \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
