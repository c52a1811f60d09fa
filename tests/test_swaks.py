"""swaks, an independent SMTP client from Debian, against the real server."""

import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.timeout(120)]


def swaks(*args):
    if shutil.which("swaks") is None:
        pytest.fail("swaks is not installed (scripts/test installs it)")
    return subprocess.run(["swaks", "--server", "127.0.0.1", *args], capture_output=True, text=True, timeout=60)


def test_swaks_delivery_with_pipelining_and_tls(server):
    r = swaks("--port", str(server.smtp_port), "--from", "bob@elsewhere.test", "--to", "alice@example.test",
              "--header", "Subject: from swaks", "--pipeline", "--tls")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = server.mail_list("alice@example.test")
    assert [r["subject"] for r in rows] == ["from swaks"]


def test_swaks_refused_recipient(server):
    r = swaks("--port", str(server.smtp_port), "--from", "bob@elsewhere.test", "--to", "nobody@example.test")
    assert r.returncode == 24, r.stdout
    assert "550 5.1.1" in r.stdout


def test_swaks_submission_auth(make_server):
    server = make_server(accounts=())
    server.add_account("alice@example.test", "s3cret")
    r = swaks("--port", str(server.submission_port), "--tls", "--auth", "PLAIN",
              "--auth-user", "alice@example.test", "--auth-password", "s3cret",
              "--from", "alice@example.test", "--to", "far@remote.test",
              "--header", "From: alice@example.test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(server.queue_list()) == 1
    r = swaks("--port", str(server.submission_port), "--tls", "--auth", "LOGIN",
              "--auth-user", "alice@example.test", "--auth-password", "wrong",
              "--from", "alice@example.test", "--to", "far@remote.test")
    assert r.returncode != 0 and "535 5.7.8" in r.stdout
