# The secreg image: `secreg serve` over HTTPS on port 5000, as a non-root user.
#
#   docker build -t secreg:latest .
#   docker build --build-arg BASE_IMAGE=registry.example.com:5000/python:3.11-slim -t secreg:latest .
#
# BASE_IMAGE: any Debian-based image with Python 3.11+ (python3, venv, pip) and useradd; the build
# stage and the final image use the same one, so the virtualenv copied between them finds its Python.
#
# Mounts, as in the reference registry's docs:
#   /certs            server.crt, server.key, token.key, token.crt (`secreg certs generate`); read-only is fine
#   /auth             htpasswd, groups, policy.yaml; the token server (role all or auth) writes them on
#                     first start, so mount it read-write there
#   /var/lib/secreg   image data (a named volume)
# Bind-mounted /certs and /auth must be readable (and /auth writable) by uid 10001 (SECREG_UID).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY secreg ./secreg
RUN python3 -m venv /opt/secreg \
    && /opt/secreg/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/secreg/bin/secreg --help >/dev/null

FROM ${BASE_IMAGE}
ARG SECREG_UID=10001
RUN groupadd --system --gid "${SECREG_UID}" secreg \
    && useradd --system --uid "${SECREG_UID}" --gid secreg --home-dir /var/lib/secreg --no-create-home \
        --shell /usr/sbin/nologin secreg \
    && mkdir -p /var/lib/secreg /certs /auth /etc/secreg \
    && chown secreg:secreg /var/lib/secreg /certs /auth
COPY --from=build /opt/secreg /opt/secreg
COPY deploy/config.yml /etc/secreg/config.yml
ENV PATH=/opt/secreg/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# From /, the CLI's relative defaults ./certs and ./auth are the mounts: `secreg user add alice` and
# `secreg certs generate --host ...` work in the container without --auth-dir or --out.
WORKDIR /
USER secreg
# A named volume mounted here starts with this directory's owner (secreg), so no chown is needed.
VOLUME ["/var/lib/secreg"]
EXPOSE 5000
# Liveness over TLS on loopback: no certificate check, since the certificate names the public host,
# not 127.0.0.1. Slim images have no curl; Python's ssl does it. Assumes the listener stays on port 5000
# inside the container (publish other ports with -p HOST:5000 instead of changing http.addr).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import ssl, urllib.request; c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE; urllib.request.urlopen('https://127.0.0.1:5000/healthz', context=c, timeout=4)"]
ENTRYPOINT ["secreg"]
CMD ["serve", "--config", "/etc/secreg/config.yml"]
