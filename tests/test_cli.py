"""The administration CLI: clear output, one-line errors, non-zero exits, passwords never in argv."""

import base64
import re
import subprocess

import pytest

from harness import trimaran_bin

pytestmark = pytest.mark.timeout(120)


def test_help_for_every_subcommand():
    for args in (["--help"], ["serve", "--help"], ["domain", "--help"], ["account", "--help"],
                 ["alias", "--help"], ["mail", "--help"], ["mail", "list", "--help"], ["queue", "--help"],
                 ["dkim", "--help"], ["dkim", "generate", "--help"]):
        out = subprocess.run([trimaran_bin(), *args], capture_output=True, text=True)
        assert out.returncode == 0 and "Usage:" in out.stdout, args


def test_admin_round_trip_while_serving(make_server):
    server = make_server(accounts=())
    assert server.cli("domain", "list").stdout.decode().split() == ["example.test"]
    server.add_account("Bob@Example.test", "pw1")
    server.add_alias("info@example.test", "bob@example.test")
    server.add_alias("info@example.test", "someone@remote.test")
    assert server.cli("account", "list").stdout.decode().split() == ["bob@example.test"]
    assert server.cli("alias", "list").stdout.decode().splitlines() == [
        "info@example.test -> bob@example.test", "info@example.test -> someone@remote.test"]
    server.cli("alias", "remove", "info@example.test", "someone@remote.test")
    server.cli("account", "passwd", "bob@example.test", input=b"pw2\n")
    server.cli("alias", "remove", "info@example.test")
    server.cli("account", "remove", "bob@example.test")
    server.cli("domain", "remove", "example.test")
    assert server.cli("domain", "list").stdout == b""


@pytest.mark.parametrize("args,needle", [
    (["domain", "add", "bad domain"], "not a valid domain"),
    (["account", "add", "nobody@unknown.test"], "domain unknown.test not found"),
    (["account", "add", "not-an-address"], "not a valid address"),
    (["account", "remove", "ghost@example.test"], "not found"),
    (["account", "passwd", "ghost@example.test"], "not found"),
    (["alias", "remove", "ghost@example.test"], "not found"),
    (["mail", "list", "--account", "ghost@example.test"], "not found"),
    (["mail", "list", "--account", "alice@example.test", "--mailbox", "Nope"], "not found"),
    (["mail", "show", "--account", "alice@example.test", "--uid", "7"], "no message"),
    (["domain", "remove", "example.test"], "remove them first"),
])
def test_errors_are_one_clear_line(make_server, args, needle):
    server = make_server(start=False)
    proc = server.cli(*args, input=b"pw\n", check=False)
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err


def test_duplicates_are_refused(make_server):
    server = make_server(start=False)
    for args in (["domain", "add", "example.test"], ["account", "add", "alice@example.test"]):
        proc = server.cli(*args, input=b"pw\n", check=False)
        assert proc.returncode != 0 and b"already exists" in proc.stderr


def test_password_from_stdin_is_required(make_server):
    server = make_server(start=False, accounts=())
    proc = server.cli("account", "add", "x@example.test", input=b"", check=False)
    assert proc.returncode != 0 and b"no password" in proc.stderr


def test_new_accounts_have_special_use_mailboxes(make_server):
    server = make_server(start=False)
    names = {row[0] for row in server.sql(
        "SELECT m.name || ' ' || coalesce(m.special_use, '-') FROM mailboxes m "
        "JOIN accounts a ON a.id = m.account_id WHERE a.address = 'alice@example.test'")}
    assert names == {"INBOX -", "Sent \\Sent", "Drafts \\Drafts", "Trash \\Trash",
                     "Junk \\Junk", "Archive \\Archive"}


def test_refuses_a_newer_schema(make_server):
    server = make_server(start=False)
    server.sql("UPDATE schema_version SET version = 9999")
    proc = subprocess.run([trimaran_bin(), "--data-dir", str(server.data_dir), "--store", server.store,
                           "serve", "--smtp", "127.0.0.1:0", "--submission", "none", "--submissions", "none",
                           "--pop3", "none", "--pop3s", "none", "--imap", "none", "--imaps", "none",
                           "--https", "none"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "newer than this binary knows" in proc.stderr


def test_config_file_and_disabled_listeners(make_server, tmp_path):
    import smtplib
    from harness import free_port, wait_for_banner
    server = make_server(start=False)
    port = free_port()
    config = tmp_path / "trimaran.toml"
    config.write_text(f'hostname = "from-config.test"\n[listen]\nsmtp = "127.0.0.1:{port}"\n'
                      'submission = "none"\nsubmissions = "none"\npop3 = "none"\npop3s = "none"\nimap = "none"\nimaps = "none"\n'
                      'https = "none"\n')
    proc = subprocess.Popen([trimaran_bin(), "--config", str(config), "--data-dir", str(server.data_dir),
                             "--store", server.store, "serve"], stderr=subprocess.DEVNULL)
    try:
        wait_for_banner(port, proc=proc)
        with smtplib.SMTP("127.0.0.1", port) as s:
            assert b"from-config.test" in s.ehlo()[1]
    finally:
        proc.kill()
        proc.wait()
    bad = tmp_path / "bad.toml"
    bad.write_text("hostnme = 'typo'\n")
    out = subprocess.run([trimaran_bin(), "--config", str(bad), "domain", "list"], capture_output=True, text=True)
    assert out.returncode != 0 and "unknown field" in out.stderr


def published_value(output, selector, domain):
    """The TXT value in `dkim generate`'s zone-file line, its strings joined (RFC 6376 §3.6.2.2)."""
    line = output.splitlines()[1]
    m = re.fullmatch(rf'{re.escape(selector)}\._domainkey\.{re.escape(domain)}\. IN TXT \( (.*) \)', line)
    assert m, line
    strings = re.findall(r'"([^"]*)"', m.group(1))
    assert strings and all(len(s) <= 255 for s in strings), strings
    return "".join(strings)


def test_dkim_keys_are_made_stored_and_published(make_server, tmp_path):
    server = make_server(start=False)
    out = server.cli("dkim", "generate", "Example.TEST", "--selector", "s2026").stdout.decode()
    assert out.splitlines()[0] == "Stored rsa-sha256 key s2026 of example.test. Publish this DNS record:"
    rsa = published_value(out, "s2026", "example.test")
    assert rsa.startswith("v=DKIM1; k=rsa; p="), rsa
    # An independent reader takes p= as a 2048-bit RSA SubjectPublicKeyInfo.
    der = tmp_path / "rsa.der"
    der.write_bytes(base64.b64decode(rsa.split("p=", 1)[1], validate=True))
    text = subprocess.run(["openssl", "pkey", "-pubin", "-inform", "DER", "-in", str(der), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "Public-Key: (2048 bit)" in text, text

    out = server.cli("dkim", "generate", "example.test", "--algorithm", "ed25519").stdout.decode()
    m = re.match(r"Stored ed25519-sha256 key (ed25519-\d{8}) of example\.test\.", out)
    assert m, out
    ed = published_value(out, m.group(1), "example.test")
    # RFC 8463 §4: the raw 32-byte key.
    assert ed.startswith("v=DKIM1; k=ed25519; p=") and len(base64.b64decode(ed.split("p=", 1)[1])) == 32

    listing = [line.split("\t") for line in server.cli("dkim", "list").stdout.decode().splitlines()]
    assert sorted(listing) == sorted([["example.test", "s2026", "rsa-sha256", rsa],
                                      ["example.test", m.group(1), "ed25519-sha256", ed]])

    # Refused, with one clear line each, and nothing changed.
    for args, needle in ((["example.test", "--selector", "s2026"], "already exists"),
                         (["unknown.test"], "domain unknown.test not found"),
                         (["example.test", "--selector", "bad_selector"], "not a valid selector"),
                         (["example.test", "--algorithm", "dsa"], "invalid value")):
        proc = server.cli("dkim", "generate", *args, check=False)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and needle in err, (args, err)
    again = [line.split("\t") for line in server.cli("dkim", "list").stdout.decode().splitlines()]
    assert sorted(again) == sorted(listing)
    # The private key is printed nowhere.
    assert "PRIVATE" not in out and "BEGIN" not in out

    # A key goes with its domain.
    server.cli("account", "remove", "alice@example.test")
    server.cli("domain", "remove", "example.test")
    assert server.cli("dkim", "list").stdout == b""
