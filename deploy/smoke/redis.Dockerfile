# Redis 7 from Debian's packages, in place of the redis:7 image that docker-compose.yml names.
ARG DEBIAN=enrich-ci/debian:bookworm
FROM ${DEBIAN}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", \
     "--appendonly", "no", "--dir", "/tmp"]
