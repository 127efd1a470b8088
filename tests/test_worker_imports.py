"""What a worker loads: without a pull-through cache, without Redis and before its first UI page, a worker does
not import httpx (which brings click, rich and pygments), redis or jinja2: 13 MiB of each worker's memory, which
counts once per worker against the 150 MiB of a 1 GiB push (issue 15); with auth off, no jwt, cryptography or
sqlite3 either."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from pathlib import Path

from secreg.app import create_app
from secreg.cli.serve import prepare_auth, prepare_tls
from secreg.config import load_settings

settings = load_settings(None, None, base_dir=Path.cwd())
prepare_tls(settings)
prepare_auth(settings, "all")
create_app(settings, "all")
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_a_worker_without_cache_redis_or_pages_loads_none_of_their_libraries(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert {"secreg", "starlette", "jwt"} <= loaded  # the app was built, auth included
    assert not loaded & {"httpx", "redis", "jinja2", "click", "rich", "pygments"}, loaded


WITHOUT_AUTH = """
import sys
from pathlib import Path

from secreg.app import create_app
from secreg.config import load_settings

settings = load_settings(None, None, base_dir=Path.cwd())
assert not settings.auth.enabled
create_app(settings, "all")
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_a_worker_with_auth_off_loads_no_token_or_rate_limit_libraries(tmp_path: Path) -> None:
    """`auth.enabled: false` (a registry behind an authenticating proxy): a spawned worker builds the app without
    jwt, cryptography or sqlite3 (~10 MiB per worker), nor passlib and bcrypt for the web UI (~3.5 MiB); with auth
    on it loads them (the test above)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    env["SECREG_AUTH_ENABLED"] = "false"
    done = subprocess.run([sys.executable, "-c", WITHOUT_AUTH], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert {"secreg", "starlette"} <= loaded
    token_and_password = {"jwt", "cryptography", "sqlite3", "passlib", "bcrypt"}
    assert not loaded & token_and_password, loaded & token_and_password  # the web UI is built (passlib was)


def test_secreg_serve_builds_only_its_own_command_line() -> None:
    """`secreg serve` is worker 0 and keeps what it imported: parsing its command line does not load the other
    subcommands' libraries (cryptography for `certs`, passlib for `user`); `secreg --help` still lists all."""
    script = ("import sys\nfrom secreg.cli.main import build_parser\n"
              "build_parser('serve').parse_args(['serve'])\n"
              "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert not set(done.stdout.split()) & {"cryptography", "passlib", "bcrypt"}
    from secreg.cli.main import SUBCOMMANDS, build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(commands.choices) == set(SUBCOMMANDS)  # type: ignore[arg-type]
    only = next(a for a in build_parser("serve")._actions if a.dest == "command")
    assert set(only.choices) == {"serve"}  # type: ignore[arg-type]
