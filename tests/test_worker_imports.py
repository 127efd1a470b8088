"""What a worker loads: without a pull-through cache, without Redis and before its first UI page, a worker does
not import httpx (which brings click, rich and pygments), redis or jinja2: 13 MiB of each worker's memory, which
counts once per worker against the 150 MiB of a 1 GiB push (issue 15)."""

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
