"""G2: when the store fails (PostgreSQL stopped, SQLite's disk full or frozen) clients get 4xx,
never 5xx; the reply waits for a short outage; after recovery mail flows again, with no
duplicates."""

import os
import smtplib
import subprocess
import threading
import time

import pytest

from harness import Postgres
from smtpwire import Wire

pytestmark = pytest.mark.timeout(300)


def try_send(port, account, subject, size=2000, timeout=60):
    """Returns the final reply code of one delivery attempt (or 'conn' if unreachable)."""
    body = f"Subject: {subject}\r\n\r\n".encode() + b"x" * size + b"\r\n"
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
            s.sendmail("b@elsewhere.test", [account], body)
            return 250
    except smtplib.SMTPRecipientsRefused as e:
        return list(e.recipients.values())[0][0]
    except smtplib.SMTPResponseException as e:
        return e.smtp_code
    except (OSError, smtplib.SMTPServerDisconnected):
        return "conn"


def subjects(server, account):
    return [r["subject"] for r in server.mail_list(account)]


@pytest.fixture
def own_pg():
    instance = Postgres()
    instance.start()
    yield instance
    instance.destroy()


@pytest.mark.parametrize("backend", ["postgres"])
def test_postgres_stopped_under_load(make_server, own_pg):
    server = make_server("--store-wait", "3", pg_instance=own_pg)
    assert try_send(server.smtp_port, "alice@example.test", "before") == 250
    results = []
    stop = threading.Event()

    def load(n):
        i = 0
        while not stop.is_set():
            i += 1
            subject = f"load-{n}-{i}"
            results.append((subject, try_send(server.smtp_port, "alice@example.test", subject)))

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1)
    own_pg.stop("immediate")
    time.sleep(5)
    own_pg.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    codes = [code for _, code in results]
    assert not [c for c in codes if c != "conn" and c >= 500], f"5xx seen: {codes}"
    assert any(c != 250 and c != "conn" and 400 <= c < 500 for c in codes), "the outage was noticed"
    assert codes[-1] == 250 or 250 in codes[-8:], "mail flows again after recovery"
    # A retry after recovery succeeds, and nothing is stored twice.
    assert try_send(server.smtp_port, "alice@example.test", "after") == 250
    stored = subjects(server, "alice@example.test")
    assert len(stored) == len(set(stored))
    accepted = {s for s, c in results if c == 250}
    assert accepted <= set(stored)


@pytest.mark.parametrize("backend", ["postgres"])
def test_short_postgres_outage_is_waited_out(make_server, own_pg):
    """A failover shorter than --store-wait is invisible to the sender: the reply just waits."""
    server = make_server("--store-wait", "30", pg_instance=own_pg)
    w = Wire(server.smtp_port, timeout=60)
    w.cmd("EHLO c")
    assert w.cmd("MAIL FROM:<b@elsewhere.test>")[0] == 250
    assert w.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert w.cmd("DATA")[0] == 354
    own_pg.stop("immediate")
    threading.Timer(2.0, own_pg.start).start()
    started = time.time()
    code, _ = w.cmd(b"Subject: waited\r\n\r\nbody\r\n.\r\n")
    assert code == 250
    assert time.time() - started >= 1.5
    assert subjects(server, "alice@example.test") == ["waited"]


def sqlite_on(path, backend_fixture_server):
    return backend_fixture_server


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_disk_full(make_server, tmpfs):
    server = make_server("--store-wait", "2", data_dir=tmpfs / "data")
    assert try_send(server.smtp_port, "alice@example.test", "before") == 250
    filler = tmpfs / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    codes = [try_send(server.smtp_port, "alice@example.test", f"full-{i}", size=300_000) for i in range(3)]
    assert all(c in (451, 452) for c in codes), codes
    assert 452 in codes, "a full disk says so (452 4.3.1)"
    os.remove(filler)
    assert try_send(server.smtp_port, "alice@example.test", "full-0", size=300_000) == 250
    assert subjects(server, "alice@example.test") == ["before", "full-0"]


@pytest.fixture
def frozen_fs(tmp_path):
    image = tmp_path / "fs.img"
    mnt = tmp_path / "ext4"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "128M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    yield mnt
    subprocess.run(["fsfreeze", "-u", str(mnt)], capture_output=True)
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_disk_stops_taking_writes(make_server, frozen_fs):
    """A file system that hangs (frozen, a stalled disk) must still get a 4xx within the bound."""
    server = make_server("--store-wait", "2", data_dir=frozen_fs / "data")
    assert try_send(server.smtp_port, "alice@example.test", "before") == 250
    w = Wire(server.smtp_port, timeout=60)
    w.cmd("EHLO c")
    assert w.cmd("MAIL FROM:<b@elsewhere.test>")[0] == 250
    assert w.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert w.cmd("DATA")[0] == 354
    subprocess.run(["fsfreeze", "-f", str(frozen_fs)], check=True)
    try:
        started = time.time()
        code, text = w.cmd(b"Subject: frozen\r\n\r\nbody\r\n.\r\n")
        elapsed = time.time() - started
        assert code == 451 and text[0].startswith("4.3.0")
        assert elapsed < 10
        # New connections get temporary failures too, never 5xx.
        assert try_send(server.smtp_port, "alice@example.test", "frozen-2", timeout=30) in (451, 452)
    finally:
        subprocess.run(["fsfreeze", "-u", str(frozen_fs)], check=True)
    # The sender retries the same message after recovery. Its first transmission may have been
    # committed after all once the disk thawed; either way it is stored once.
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as s:
        assert s.sendmail("b@elsewhere.test", ["alice@example.test"], b"Subject: frozen\r\n\r\nbody\r\n") == {}
    time.sleep(0.5)
    stored = subjects(server, "alice@example.test")
    assert stored.count("frozen") == 1, stored
    assert "frozen-2" not in stored


@pytest.mark.parametrize("backend", ["postgres"])
def test_logins_during_an_outage_are_temporary_failures(make_server, own_pg):
    """A store outage must never look like a wrong password."""
    import poplib
    from smtpwire import unverified_context
    server = make_server("--store-wait", "2", pg_instance=own_pg, accounts=())
    server.add_account("alice@example.test", "right")
    own_pg.stop("immediate")
    try:
        p = poplib.POP3_SSL("127.0.0.1", server.pop3s_port, context=unverified_context(), timeout=30)
        p.user("alice@example.test")
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            p.pass_("right")
        with smtplib.SMTP_SSL("127.0.0.1", server.submissions_port, context=unverified_context(),
                              timeout=30) as s:
            s.ehlo()
            s.user, s.password = "alice@example.test", "right"
            with pytest.raises(smtplib.SMTPAuthenticationError) as e:
                s.auth("PLAIN", s.auth_plain)
            assert e.value.smtp_code == 454
    finally:
        own_pg.start()
    p = poplib.POP3_SSL("127.0.0.1", server.pop3s_port, context=unverified_context(), timeout=30)
    p.user("alice@example.test")
    p.pass_("right")
    p.quit()


@pytest.mark.parametrize("backend", ["postgres"])
def test_imap_during_an_outage_says_unavailable_and_loses_nothing(make_server, own_pg):
    """G2 for IMAP: store trouble is NO [UNAVAILABLE], never a wrong answer or a lost change."""
    import imaplib
    from smtpwire import unverified_context
    server = make_server("--store-wait", "2", pg_instance=own_pg, accounts=())
    server.add_account("alice@example.test", "right")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        s.sendmail("b@elsewhere.test", ["alice@example.test"], b"Subject: one\r\n\r\nbody\r\n")
    m = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=unverified_context(), timeout=30)
    m.login("alice@example.test", "right")
    assert m.select("INBOX") == ("OK", [b"1"])
    own_pg.stop("immediate")
    try:
        for command in [lambda: m.store("1", "+FLAGS", "\\Flagged"),
                        lambda: m.create("New"),
                        lambda: m.status("INBOX", "(MESSAGES)"),
                        lambda: m.append("INBOX", None, None, b"Subject: two\r\n\r\nbody\r\n"),
                        lambda: m.fetch("1", "(BODY[])")]:
            typ, data = command()
            assert typ == "NO" and b"[UNAVAILABLE]" in data[0], (typ, data)
        m2 = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=unverified_context(), timeout=30)
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            m2.login("alice@example.test", "right")
    finally:
        own_pg.start()
    # Nothing half-done: the refused STORE and APPEND did not happen, the session goes on.
    typ, data = m.fetch("1", "(FLAGS)")
    assert typ == "OK" and b"\\Flagged" not in data[0], data
    assert m.status("INBOX", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 1)")
    assert m.append("INBOX", None, None, b"Subject: two\r\n\r\nbody\r\n")[0] == "OK"
    m.logout()
