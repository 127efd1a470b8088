"""The cache as a whole `secreg serve` sets it up: upstreams from command-line flags, the reference registry's
`proxy:` shape (one upstream owning every name), start-up cleanup of a crashed fetch's staging files, tag
lists when the upstream is gone, and the eviction loop keeping an upstream within its maxsize on its own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.oci import push_image
from tests.server import run_secreg

from .test_pull import ACCEPT, proxy_config, pull, upstream_entry
from .upstreams import Pusher, Upstream, env_without_secreg, go_registry_of, go_upstream, random_bytes

STAGING = "docker/registry/v2/_proxy"


def _serve_error(tmp_path: Path, *args: str) -> str:
    """`secreg serve ARGS` that must stop before listening: its stderr."""
    done = subprocess.run([sys.executable, "-m", "secreg", "serve", "--addr", "127.0.0.1:0", *args], cwd=tmp_path,
                          env=env_without_secreg(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr)
    return done.stderr


def test_upstreams_from_the_command_line(tmp_path: Path, go_hub: Upstream, go_pusher: Pusher) -> None:
    digest, content, _ = go_pusher.image("flags/app", "v1", [random_bytes(3000, seed=81)])
    password_file = tmp_path / "upstream.pw"
    password_file.write_text(go_hub.password + "\n")
    spec = (f"name=go,url={go_hub.url},ca={go_hub.ca},username={go_hub.username},passwordfile={password_file},"
            "prefix=mirror/go,ttl=1h")
    args = ["--proxy-upstream", spec, "--proxy-eviction-interval", "5m"]
    with run_secreg(tmp_path / "proxy", {"auth": {"enabled": False}}, args=args) as proxy, proxy.client() as client:
        manifest, blobs = pull(client, "mirror/go/flags/app", "v1")
        assert manifest.content == content and manifest.headers["x-cache"] == "miss"
        assert pull(client, "mirror/go/flags/app", digest)[0].headers["x-cache"] == "hit"
        r = client.post("/v2/mirror/go/mine/blobs/uploads/")
        assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
        assert go_hub.password not in proxy.log()

    # A password on the command line is readable by every local user: refused, pointing at passwordfile=.
    stderr = _serve_error(tmp_path, "--proxy-upstream", "name=a,url=https://a.example,prefix=a,password=hunter2")
    assert "passwordfile=" in stderr and "Traceback" not in stderr
    stderr = _serve_error(tmp_path, "--proxy-upstream", "name=a,url=http://a.example,prefix=a")
    assert "HTTPS only" in stderr and "Traceback" not in stderr
    assert "unknown key 'colour'" in _serve_error(tmp_path, "--proxy-upstream", "name=a,colour=red")


def test_reference_registry_shape_mirrors_every_name(tmp_path: Path, go_registry_bin: str) -> None:
    with go_upstream(tmp_path / "upstream") as upstream:
        pusher = Pusher(upstream)
        digest, _, _ = pusher.image("any/name", "v1", [random_bytes(4000, seed=82)])
        pusher.image("library/tool", "2", [random_bytes(4000, seed=83)])
        pusher.close()
        password_file = tmp_path / "upstream.pw"
        password_file.write_text(upstream.password + "\n")
        # A crashed process's staging directory (older than an hour) goes at start; a recent one stays.
        workdir = tmp_path / "proxy"
        old, recent = workdir / "data" / STAGING / "crashed-fetch", workdir / "data" / STAGING / "recent-fetch"
        for directory in (old, recent):
            directory.mkdir(parents=True)
            (directory / "data").write_bytes(b"partial")
        an_hour_ago = time.time() - 3700
        os.utime(old / "data", (an_hour_ago, an_hour_ago))
        os.utime(old, (an_hour_ago, an_hour_ago))
        args = ["--proxy-remoteurl", upstream.url, "--proxy-username", upstream.username,
                "--proxy-passwordfile", str(password_file), "--proxy-ca", str(upstream.ca)]
        with run_secreg(workdir, {"auth": {"enabled": False}}, args=args) as proxy, proxy.client() as client:
            assert not old.exists() and (recent / "data").exists()

            # Every name is the upstream's (registry:2 proxy mode), Docker Hub short names included.
            manifest, _ = pull(client, "any/name", "v1")
            assert manifest.headers["docker-content-digest"] == digest and manifest.headers["x-cache"] == "miss"
            assert pull(client, "library/tool", "2")[0].status_code == 200
            assert upstream.requests_to("GET", "/v2/any/name/manifests/") == 1
            catalog = client.get("/v2/_catalog").json()
            assert catalog["cached"] == {"any/name": "default", "library/tool": "default"}
            # ... so nothing can be pushed anywhere.
            for name in ("any/name", "own/app"):
                r = client.post(f"/v2/{name}/blobs/uploads/")
                assert r.status_code == 405, r.text
                error = r.json()["errors"][0]
                assert error["code"] == "UNSUPPORTED" and "pure mirror" in error["message"]

            assert client.get("/v2/any/name/tags/list").json() == {"name": "any/name", "tags": ["v1"]}
            process = go_registry_of(upstream).process
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
            # The upstream is gone: the tag list is what the cache holds, and the failures are counted.
            tags = client.get("/v2/any/name/tags/list")
            assert tags.status_code == 200 and tags.json() == {"name": "any/name", "tags": ["v1"]}
            assert client.get("/v2/any/name/manifests/v1", headers=ACCEPT).headers["x-cache"] in ("hit", "stale")
            metrics = client.get("/metrics").text
            errors = re.search(r'^secreg_proxy_upstream_errors_total\{reason="other",upstream="default"\} (\S+)$',
                               metrics, re.MULTILINE)
            assert errors is not None and float(errors.group(1)) >= 1
            log = proxy.log()
            assert "tags of any/name" in log and "listing the cached tags" in log
            assert upstream.password not in log and upstream.password not in metrics


def _evicted(client: httpx.Client) -> float:
    found = re.search(r'^secreg_proxy_evicted_total\{upstream="go"\} (\S+)$', client.get("/metrics").text,
                      re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_the_server_evicts_the_least_recently_pulled_image(tmp_path: Path, go_hub: Upstream,
                                                           go_pusher: Pusher) -> None:
    old, _, old_layers = go_pusher.image("evict/old", "v1", [random_bytes(600_000, seed=84)])
    new, _, _ = go_pusher.image("evict/new", "v1", [random_bytes(600_000, seed=85)])
    config = proxy_config(upstream_entry("go", go_hub, "go", maxsize="1MB"))
    config["proxy"]["eviction"] = {"interval": "1s"}
    with run_secreg(tmp_path / "proxy", config) as proxy, proxy.client() as client:
        own, _ = push_image(client, "own/app", "v1", seed="own", layers=3)
        pull(client, "go/evict/old", "v1")
        pull(client, "go/evict/new", "v1")  # 1.2 MB cached now: over the 1 MB bound
        deadline = time.monotonic() + 120  # passes every second; generous for a loaded machine
        while _evicted(client) < 1:
            assert time.monotonic() < deadline, proxy.log()
            time.sleep(0.2)
        repositories = proxy.storage / "docker/registry/v2/repositories"
        revisions = "_manifests/revisions/sha256"
        assert not (repositories / "go/evict/old" / revisions / old[7:]).exists()
        assert not (repositories / "go/evict/old/_layers/sha256" / old_layers[0][7:]).exists()
        assert (repositories / "go/evict/new" / revisions / new[7:]).exists()
        assert _evicted(client) == 1
        # Our own image is never the cache's to evict.
        assert client.get(f"/v2/own/app/manifests/{own}", headers=ACCEPT).status_code == 200
        assert f"proxy: evicted go/evict/old@{old} from the cache of go (maxsize)" in proxy.log()


@pytest.mark.parametrize("interval, message", [("0", "at least 1 second"), ("soon", "duration")])
def test_a_bad_eviction_interval_is_refused(tmp_path: Path, interval: str, message: str) -> None:
    assert message in _serve_error(tmp_path, "--proxy-eviction-interval", interval)


def test_two_workers_run_one_eviction_pass_per_interval(tmp_path: Path) -> None:
    """With two workers, each waking every interval, the passes still come one per interval: over any stretch
    of time at most its length in intervals plus one (every worker running its own pass made about twice that).
    The upstream needs no answer: a pass looks at storage only."""
    upstream = {"name": "hub", "url": "https://127.0.0.1:9", "prefix": "hub", "maxage": "1h"}
    config = {**proxy_config(upstream), "http": {"workers": 2}}
    config["proxy"]["eviction"] = {"interval": "1s"}
    passes = "proxy: eviction pass over 1 upstream(s)"
    with run_secreg(tmp_path / "proxy", config) as proxy:
        deadline = time.monotonic() + 60
        while proxy.log().count(passes) < 1:  # the first pass: 1 s after the start
            assert time.monotonic() < deadline, proxy.log()
            time.sleep(0.1)
        children = subprocess.run(["pgrep", "-P", str(proxy.process.pid)], capture_output=True, text=True,
                                  check=False).stdout.split()
        assert len(children) == 1, "the second worker is not running"
        began, before = time.monotonic(), proxy.log().count(passes)
        time.sleep(8)
        elapsed, after = time.monotonic() - began, proxy.log().count(passes)
    assert 1 <= after - before <= elapsed / 1.0 + 1, (after - before, elapsed)
