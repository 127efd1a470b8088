"""Every key secreg knows, with its default: the embedded bottom layer of the settings (`secreg.config`).

A key missing here is refused wherever it is given (file, environment, flags), so this tree is also the list of
what can be set. Comments say what a value means; README "Configuration" shows the same block.
"""

from __future__ import annotations

from typing import Any

ENV_PREFIX = "SECREG_"
# Named like settings but read by compose.yaml and the Dockerfile, not by secreg (an exported .env must not
# stop `secreg serve`).
COMPOSE_VARIABLES = frozenset({"PUBLIC_HOST", "AUTH_PORT", "UID",
                               "S3_ENDPOINT", "S3_BUCKET", "S3_ACCESSKEY", "S3_SECRETKEY", "BALANCER_ADDR",
                               "BALANCER_SUBNET"})

DEFAULTS: dict[str, Any] = {
    "version": "0.1",
    "log": {
        "level": "info",
        "accesslog": {"format": "json", "disabled": False},  # one line per request on stdout
        "audit": {"file": ""},  # security events are also appended here (0600) when set
    },
    "metrics": {
        "enabled": True,  # GET /metrics (Prometheus text format)
        "token": "",  # bearer secret for /metrics; when empty, only loopback clients may scrape
    },
    "http": {
        "addr": "0.0.0.0:5000",
        "host": "",  # public base URL (https://registry.example.com:5000); derived from the request when empty
        "workers": "auto",  # one worker process per CPU the server may run on (its affinity mask), or a count
        "http2": True,  # offer h2 by ALPN next to HTTP/1.1 (TLS listeners)
        "eventloop": "asyncio",  # or uvloop (pip install uvloop), or auto: uvloop when it is installed
        # TLS over the socket itself (OpenSSL reads and writes it), or asyncio's TLS over memory buffers
        "tlstransport": "socket",
        "insecure": False,  # plain HTTP listener, only for use behind a TLS-terminating proxy
        # Reverse proxies (CIDRs) whose X-Forwarded-For names the client (rate limits, logs); empty: nobody's
        "trustedproxies": [],
        # TCP load balancers (CIDRs) that begin each connection with a PROXY header (haproxy send-proxy-v2) naming
        # the client; a connection from them without one is closed; empty: nobody's header is read
        "proxyprotocol": [],
        # Seconds: request headers must be complete this long after their first byte; a request body may pause
        # this long between two pieces; an idle keep-alive connection is closed after this long.
        "timeouts": {"header": 20, "body": 60, "idle": 75},
        # Connections to the server (all workers together), in total and from one client address (oldest idle
        # ones shed first).
        "limits": {"connections": 4096, "perclient": 256},
        "tls": {
            "certificate": "",  # default: <certs>/server.crt
            "key": "",  # default: <certs>/server.key
            "directory": "./certs",
            "autogenerate": True,
        },
    },
    "storage": {
        "filesystem": {"rootdirectory": "./data", "directio": True},
        # S3-compatible object storage, used instead of the filesystem when `bucket` is set (README "Scaling out")
        "s3": {
            "bucket": "", "region": "us-east-1", "regionendpoint": "", "rootdirectory": "",
            "accesskey": "", "secretkey": "", "secure": True, "v4auth": True,
            "chunksize": 10 * 1024 * 1024, "multipartcopythresholdsize": 32 * 1024 * 1024,
            "multipartcopychunksize": 32 * 1024 * 1024,
        },
        "redirect": {"enabled": False, "expiry": 60},  # blob GET: 307 to a presigned object-store URL (S3 only)
        "delete": {"enabled": False},
        # Seconds a tag's digest is kept in memory for writers outside this server (other replicas, tools on the
        # same tree); this server's own tag writes are seen by all its workers at once. 0: read every time.
        "cache": {"tagmaxage": 1},
        "maintenance": {
            "readonly": {"enabled": False},
            "uploadpurging": {"enabled": True, "age": 604800, "interval": 86400},
        },
    },
    "validation": {"manifests": {"maxsize": 4 * 1024 * 1024}},
    "auth": {
        "enabled": True,
        "directory": "./auth",
        "htpasswd": "",  # default: <auth dir>/htpasswd
        "policy": "",  # default: <auth dir>/policy.yaml
        "token": {
            "realm": "",  # default: <this server>/auth/token
            "service": "secreg",
            "issuer": "secreg",
            "key": "",  # default: <certs>/token.key
            "certificate": "",  # default: <certs>/token.crt
            "expiration": 300,
            "refreshexpiration": 30 * 24 * 3600,
            "reuse": 10,  # s: one client's repeated GET for the same grant gets the same token (0 = off)
            "maxbody": 64 * 1024,  # bytes a POST /auth/token body may hold (larger: 413 at once, unread)
        },
        "ratelimit": {"attempts": 5, "window": 60, "lockout": 60},
    },
    # Shared state of several replicas (login rate limit, refresh-token revocation, GC lock); empty: local only
    "redis": {"addr": "", "password": "", "db": 0},
    "gc": {"schedule": {"enabled": False, "interval": 86400, "delay": 300}, "grace": 3600},
    "ui": {
        "enabled": True,  # the web UI under /ui/ on the same listener
        "session": {"lifetime": 1800},  # seconds a UI login lasts without activity
    },
    # Pull-through cache (secreg.config.proxy): upstreams, or registry:2's single remoteurl.
    "proxy": {"upstreams": [], "remoteurl": "", "username": "", "password": "", "passwordfile": "", "ca": "",
              "ttl": "", "eviction": {"interval": 600}},
}
