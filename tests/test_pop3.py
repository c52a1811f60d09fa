"""POP3 (RFC 1939, 2449, 2595, 5034, 6856) with Python's poplib and fetchmail, on SQLite and
PostgreSQL."""

import base64
import poplib
import shutil
import smtplib
import subprocess

import blake3
import pytest

from smtpwire import unverified_context, wait_until

pytestmark = pytest.mark.timeout(120)

PASSWORD = "pop secret"


@pytest.fixture
def box(make_server):
    server = make_server(accounts=())
    server.add_account("alice@example.test", PASSWORD)
    bodies = []
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        for i in range(1, 4):
            body = (f"From: bob@elsewhere.test\r\nSubject: message {i}\r\n\r\nline one\r\n"
                    f".starts with a dot\r\nline three of {i}\r\n").encode()
            s.sendmail("bob@elsewhere.test", ["alice@example.test"], body)
            bodies.append(body)
    server.bodies = bodies
    return server


def login(server, tls="stls"):
    if tls == "implicit":
        p = poplib.POP3_SSL("127.0.0.1", server.pop3s_port, context=unverified_context(), timeout=30)
    else:
        p = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
        p.stls(context=unverified_context())
    p.user("alice@example.test")
    p.pass_(PASSWORD)
    return p


def test_capabilities_and_no_credentials_in_clear(box):
    p = poplib.POP3("127.0.0.1", box.pop3_port, timeout=30)
    assert p.getwelcome().startswith(b"+OK")
    caps = p.capa()
    assert {"TOP", "UIDL", "RESP-CODES", "PIPELINING", "UTF8", "STLS"} <= set(caps)
    assert "USER" not in caps and "SASL" not in caps
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.user("alice@example.test")
    p.stls(context=unverified_context())
    caps = p.capa()
    assert "USER" in caps and caps["SASL"] == ["PLAIN"] and "STLS" not in caps
    p.quit()


def test_stat_list_uidl_retr_top(box):
    p = login(box)
    count, octets = p.stat()
    sizes = {m["uid"]: m["size"] for m in box.mail_list("alice@example.test")}
    assert count == 3 and octets == sum(sizes.values())
    _, listing, _ = p.list()
    assert [tuple(map(int, l.split())) for l in listing] == [(1, sizes[1]), (2, sizes[2]), (3, sizes[3])]
    _, uidls, _ = p.uidl()
    ids = [l.split()[1] for l in uidls]
    assert len(set(ids)) == 3
    # The bytes served are exactly the stored, hash-verified bytes.
    _, lines, _ = p.retr(2)
    served = b"\r\n".join(lines) + b"\r\n"
    stored = box.mail_show("alice@example.test", 2)
    assert served == stored
    assert blake3.blake3(served).hexdigest() == box.mail_list("alice@example.test")[1]["blake3"]
    assert served.endswith(box.bodies[1])
    _, top_lines, _ = p.top(1, 1)
    assert top_lines[-1] == b"line one" and b"Subject: message 1" in top_lines
    _, top0, _ = p.top(1, 0)
    assert top0[-1] == b""
    p.quit()
    # UIDL is stable across sessions.
    p = login(box, tls="implicit")
    assert [l.split()[1] for l in p.uidl()[1]] == ids
    p.quit()


def test_dele_takes_effect_at_quit_only(box):
    p = login(box)
    assert p.dele(1).startswith(b"+OK")
    with pytest.raises(poplib.error_proto):
        p.retr(1)
    with pytest.raises(poplib.error_proto):
        p.dele(1)
    assert p.stat()[0] == 2
    p.rset()
    assert p.stat()[0] == 3
    p.dele(1)
    p.dele(3)
    # Disconnect without QUIT: nothing is removed, and the lock is released.
    p.file.close()
    p.sock.close()
    assert len(box.mail_list("alice@example.test")) == 3
    p = wait_until(lambda: _try_login(box))
    assert p.stat()[0] == 3
    p.dele(1)
    p.dele(3)
    p.quit()
    assert [m["subject"] for m in box.mail_list("alice@example.test")] == ["message 2"]
    p = login(box)
    assert p.stat()[0] == 1
    p.quit()


def _try_login(box):
    try:
        return login(box)
    except poplib.error_proto:
        return None


def test_maildrop_is_locked(box):
    first = login(box)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        login(box)
    first.quit()
    login(box).quit()


def test_maildrop_lock_holds_across_processes(box, make_server):
    other = make_server(domain=None, accounts=(), share_store_of=box)
    first = login(box)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        login(other)
    first.quit()
    p = wait_until(lambda: _try_login(other))
    assert p is not None and p.stat()[0] == 3
    # A process that dies holding the lock does not keep it forever: the lease lapses.
    other.kill9()
    p = wait_until(lambda: _try_login(box), timeout=60, interval=1)
    assert p is not None
    p.quit()


def test_mail_arriving_during_a_session_does_not_renumber(box):
    p = login(box)
    with smtplib.SMTP("127.0.0.1", box.smtp_port) as s:
        s.sendmail("bob@elsewhere.test", ["alice@example.test"], b"Subject: late\r\n\r\nlate\r\n")
    assert p.stat()[0] == 3
    p.dele(3)
    p.quit()
    assert [m["subject"] for m in box.mail_list("alice@example.test")] == ["message 1", "message 2", "late"]


def test_sasl_plain_and_errors(box):
    p = poplib.POP3_SSL("127.0.0.1", box.pop3s_port, context=unverified_context(), timeout=30)
    creds = base64.b64encode(b"\0alice@example.test\0" + PASSWORD.encode()).decode()
    assert p._shortcmd(f"AUTH PLAIN {creds}").startswith(b"+OK")
    assert p.stat()[0] == 3
    for bad in ("RETR 0", "RETR 99", "TOP 1", "LIST x", "DELE", "XYZZY", "USER again"):
        with pytest.raises(poplib.error_proto):
            p._shortcmd(bad)
    p.quit()
    p = poplib.POP3_SSL("127.0.0.1", box.pop3s_port, context=unverified_context(), timeout=30)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0alice@example.test\0wrong").decode())
    with pytest.raises(poplib.error_proto):
        p._shortcmd("AUTH PLAIN !!!")
    with pytest.raises(poplib.error_proto):
        p.stat()
    p.quit()


def test_wrong_password_limit(box):
    p = poplib.POP3_SSL("127.0.0.1", box.pop3s_port, context=unverified_context(), timeout=30)
    replies = []
    for _ in range(3):
        p.user("alice@example.test")
        try:
            p.pass_("nope")
        except poplib.error_proto as e:
            replies.append(str(e))
    assert len(replies) == 3 and all("[AUTH]" in r for r in replies)
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        p.stat()


def test_fetchmail_keeps_and_fetches_each_message_once(box, tmp_path):
    if shutil.which("fetchmail") is None:
        pytest.fail("fetchmail is not installed (scripts/test installs it)")
    out = tmp_path / "fetched.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 service {box.pop3_port} protocol pop3 auth password uidl\n"
        f'  user "alice@example.test" password "{PASSWORD}" is root here\n'
        # STLS is required (our server refuses passwords in clear); the certificate is self-signed.
        '  keep sslproto "tls1.2+" no sslcertck\n'
        f"  mda \"/bin/sh -c 'cat >> {out}'\"\n")
    rc.chmod(0o600)

    def fetch():
        return subprocess.run(["fetchmail", "-f", str(rc), "-v"],
                              env={"FETCHMAILHOME": str(tmp_path), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=60)

    first = fetch()
    assert first.returncode == 0, first.stdout + first.stderr
    assert out.read_bytes().count(b"Subject: message ") == 3
    assert "STLS" in first.stdout or "TLS" in first.stdout
    second = fetch()
    # Exit code 1: no new mail. Every message stays on the server ("keep").
    assert second.returncode == 1, second.stdout + second.stderr
    assert out.read_bytes().count(b"Subject: message ") == 3
    assert len(box.mail_list("alice@example.test")) == 3


def test_utf8_user_name(make_server):
    """RFC 6856: after UTF8, user names and passwords are UTF-8."""
    server = make_server(accounts=())
    server.add_account("用户@example.test", "пароль")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        s.sendmail("bob@elsewhere.test", ["用户@example.test"],
                   "Subject: 안녕\r\n\r\n본문\r\n".encode(), mail_options=["SMTPUTF8"])
    p = poplib.POP3_SSL("127.0.0.1", server.pop3s_port, context=unverified_context(), timeout=30)
    assert p.utf8().startswith(b"+OK")
    p.user("用户@example.test")
    p.pass_("пароль")
    _, lines, _ = p.retr(1)
    assert "Subject: 안녕".encode() in lines
    p.quit()
