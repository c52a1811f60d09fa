"""Driving deploy/local-cluster/cluster from the tests: the cluster, its state, its figures."""

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest

import harness

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local-cluster" / "cluster"


class Cluster:
    def __init__(self, state_dir):
        self.state = state_dir
        self.env = dict(os.environ, TRIMARAN_CLUSTER_DIR=str(state_dir),
                        TRIMARAN_BIN=harness.trimaran_bin())

    def run(self, *args, timeout=900):
        proc = subprocess.run([str(SCRIPT), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"cluster {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def endpoints(self):
        return json.loads(self.run("endpoints"))

    def trimaran(self, *args, input=None):
        proc = subprocess.run([harness.trimaran_bin(), "--store", self.endpoints()["store"], *args],
                              input=input, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout.decode()

    def members(self):
        """Patroni's view from a site in the etcd majority (a cut-off site's view is stale)."""
        def in_majority(site):
            try:
                with urllib.request.urlopen(site["etcd"] + "/health", timeout=2) as r:
                    return json.loads(r.read()).get("health") == "true"
            except (OSError, ValueError):
                return False
        for site in sorted(self.endpoints()["sites"].values(), key=lambda s: not in_majority(s)):
            try:
                with urllib.request.urlopen(site["patroni"] + "/cluster", timeout=2) as r:
                    return json.loads(r.read())["members"]
            except (OSError, ValueError, KeyError):
                continue
        return []

    def caught_up(self):
        """Three members: a running primary, two streaming replicas (one synchronous), no lag,
        and every site agreeing. One site's /cluster alone is not enough: a site just healed
        from a partition answers from its stale cache for a moment, and before this check
        asked every site it took such a view (the old primary "still leading, replicas caught
        up") for a finished catch-up."""
        sites = self.endpoints()["sites"]
        own, views = {}, []
        for name, site in sites.items():
            try:
                with urllib.request.urlopen(site["patroni"] + "/patroni", timeout=2) as r:
                    own[name] = json.loads(r.read())
                with urllib.request.urlopen(site["patroni"] + "/cluster", timeout=2) as r:
                    views.append(json.loads(r.read())["members"])
            except (OSError, ValueError, KeyError):
                return False
        # What each PostgreSQL says of itself: one primary, two replicas streaming from it.
        primaries = [n for n, p in own.items()
                     if p.get("role") in ("primary", "master") and p.get("state") == "running"]
        streaming = [n for n, p in own.items()
                     if p.get("role") == "replica" and p.get("replication_state") == "streaming"]
        if len(primaries) != 1 or len(streaming) != 2:
            return False
        if len({p.get("timeline") for p in own.values()}) != 1:
            return False

        def whole(members):
            leaders = [m["name"] for m in members
                       if m.get("role") == "leader" and m.get("state") == "running"]
            replicas = [m for m in members if m.get("role") in ("replica", "sync_standby")
                        and m.get("state") == "streaming" and m.get("lag") == 0]
            syncs = [m for m in replicas if m.get("role") == "sync_standby"]
            return leaders == primaries and len(replicas) == 2 and len(syncs) == 1
        return all(whole(v) for v in views)

    def status(self):
        """`trimaran cluster status --json`."""
        return json.loads(self.trimaran("cluster", "status", "--json"))

    def primary(self):
        return next((m["name"] for m in self.members() if m.get("role") == "leader"), None)

    def logs(self):
        out = []
        for log in sorted(pathlib.Path(self.state).glob("site-*/logs/*.log")):
            out.append(f"----- {log} -----\n{log.read_text(errors='replace')[-6000:]}")
        return "\n".join(out)


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def report(capsys, figures):
    path = os.environ.get("TRIMARAN_CLUSTER_REPORT")
    if path:
        text = pathlib.Path(path).read_text() if pathlib.Path(path).exists() else ""
        existing = json.loads(text) if text.strip() else {}
        existing.update(figures)
        pathlib.Path(path).write_text(json.dumps(existing, indent=2))
    with capsys.disabled():
        print("\n" + json.dumps(figures, indent=2))




@contextlib.contextmanager
def running_cluster(accounts, password, *up_args):
    """A cluster up (with `up_args`), the domain cluster.test and `accounts` in it; down after."""
    if os.geteuid() != 0:
        pytest.fail("the cluster tests need root: they create network namespaces")
    # Not under pytest's temporary directory: that is private to root, and Patroni and
    # PostgreSQL run as the postgres user.
    state = pathlib.Path(tempfile.mkdtemp(prefix="trimaran-cluster-", dir="/var/tmp"))
    state.chmod(0o755)
    c = Cluster(state)
    try:
        c.run("up", *up_args)
        c.trimaran("domain", "add", "cluster.test")
        for account in accounts:
            c.trimaran("account", "add", account, input=(password + "\n").encode())
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        try:
            c.run("down")
        except AssertionError as e:
            print(e)
        shutil.rmtree(state, ignore_errors=True)
