"""`trimaran scrub` (issue 6, DESIGN.md G5): every body re-read and re-hashed, metadata
invariants checked and repaired, damaged bodies put back from a backup, and garbage
collection that never removes a body a message or a delivery in flight refers to."""

import threading
import time

import pytest

from test_backup import ACCOUNTS, backup, deliver, imap, message
from test_integrity import overwrite, stored

pytestmark = pytest.mark.timeout(600)


def scrub(server, *args, check=True):
    return server.cli("scrub", "--quiet", *args, check=check)


def lines(proc, prefix):
    return [line.split("\t") for line in proc.stdout.decode().splitlines() if line.startswith(prefix)]


def test_clean_store_scrubs_clean(make_server):
    server = make_server(accounts=ACCOUNTS[:2])
    for account in ACCOUNTS[:2]:
        deliver(server, account, [message(i, account, 500) for i in range(10)])
    proc = scrub(server)
    assert "20 bodies checked" in proc.stdout.decode(), proc.stdout
    assert all(row[2] == "ok" for row in lines(proc, "invariant")), proc.stdout


def test_damaged_body_is_found_and_put_back_from_a_backup(make_server, tmp_path):
    server = make_server(accounts=ACCOUNTS[:1])
    account = ACCOUNTS[0]
    deliver(server, account, [message(i, account, 2000) for i in range(5)])
    backup(server, tmp_path / "repo")
    row = server.mail_list(account)[2]
    good = server.mail_show(account, row["uid"])
    compression, data = stored(server, row["blake3"])
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    overwrite(server, row["blake3"], compression, bytes(damaged))

    proc = scrub(server, check=False)
    assert proc.returncode != 0
    assert [r[1] for r in lines(proc, "damaged body")] == [row["blake3"]]
    proc = scrub(server, "--repair-from", str(tmp_path / "repo"))
    assert lines(proc, "damaged body")[0][3] == "repaired from the backup"
    assert server.mail_show(account, row["uid"]) == good
    assert scrub(server).returncode == 0


def test_missing_body_is_reported(make_server):
    server = make_server(accounts=ACCOUNTS[:1])
    deliver(server, ACCOUNTS[0], [message(1, ACCOUNTS[0])])
    [row] = server.mail_list(ACCOUNTS[0])
    server.sql(f"DELETE FROM blobs WHERE hash = '{row['blake3']}'")
    proc = scrub(server, check=False)
    assert proc.returncode != 0
    [bad] = lines(proc, "damaged body")
    assert bad[1] == row["blake3"] and "missing" in bad[2]


def test_broken_invariants_are_reported_and_repaired(make_server):
    server = make_server(accounts=ACCOUNTS[:1])
    deliver(server, ACCOUNTS[0], [message(i, ACCOUNTS[0]) for i in range(4)])
    server.stop()
    server.sql("UPDATE mailboxes SET uidnext = 2, highestmodseq = 0 WHERE name = 'INBOX'")
    proc = scrub(server, check=False)
    assert proc.returncode != 0
    broken = {r[1]: r[2] for r in lines(proc, "invariant") if r[2] != "ok"}
    assert broken == {"message UID at or above its mailbox's UIDNEXT": "3 violations",
                      "message MODSEQ above its mailbox's HIGHESTMODSEQ": "4 violations"}, proc.stdout
    proc = scrub(server, "--repair")
    assert {r[2] for r in lines(proc, "invariant")} == {"ok", "3 violations, repaired", "4 violations, repaired"}
    [(uidnext,)] = server.sql("SELECT uidnext FROM mailboxes WHERE name = 'INBOX'")
    assert int(uidnext) == 5
    assert scrub(server).returncode == 0
    # New mail gets a UID no message had.
    server.start()
    deliver(server, ACCOUNTS[0], [message(9, ACCOUNTS[0])])
    assert [r["uid"] for r in server.mail_list(ACCOUNTS[0])] == [1, 2, 3, 4, 5]


def blob_count(server):
    [(n,)] = server.sql("SELECT count(*) FROM blobs")
    return int(n)


def test_garbage_collection_removes_only_unreferenced_bodies(make_server):
    server = make_server(accounts=ACCOUNTS[:2])
    alice, bob = ACCOUNTS[:2]
    deliver(server, alice, [message(i, alice, 800) for i in range(10)])
    m = imap(server, alice)
    m.append("INBOX", None, None, message(77, alice, tag="shared"))
    m.logout()
    m = imap(server, bob)
    m.append("INBOX", None, None, message(77, alice, tag="shared"))
    m.logout()
    before = blob_count(server)
    m = imap(server, alice)
    m.select("INBOX")
    m.store("1:6,11", "+FLAGS", r"(\Deleted)")
    m.expunge()
    m.logout()
    time.sleep(1.1)  # older than the current second
    proc = scrub(server, "--collect-garbage", "--min-age", "0h")
    # Six bodies only alice had; the shared one is still bob's.
    assert "6 unreferenced bodies collected" in proc.stdout.decode(), proc.stdout
    assert blob_count(server) == before - 6
    for account in (alice, bob):
        for row in server.mail_list(account):
            server.mail_show(account, row["uid"], mailbox=row["mailbox"])
    assert scrub(server).returncode == 0


def test_garbage_collection_never_takes_a_body_a_delivery_is_storing(make_server):
    """The same bytes appended again and again while their earlier copies are expunged and the
    collector runs: each new copy finds the old body, and the collector must not remove it
    between that and the commit of its reference."""
    server = make_server(accounts=ACCOUNTS[:1])
    account = ACCOUNTS[0]
    body = message(1, account, 3000, tag="again")
    stop = threading.Event()
    errors = []

    def churn():
        try:
            m = imap(server, account)
            m.select("INBOX")
            while not stop.is_set():
                m.append("INBOX", None, None, body)
                m.store("1:*", "+FLAGS", r"(\Deleted)")
                m.expunge()
                m.append("INBOX", None, None, body)
            m.logout()
        except Exception as e:
            errors.append(e)

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    deadline = time.monotonic() + 20
    collected = 0
    while time.monotonic() < deadline:
        out = scrub(server, "--collect-garbage", "--min-age", "0h", check=False).stdout.decode()
        collected += int(out.split(" unreferenced bodies collected")[0].split()[-1])
    stop.set()
    worker.join(60)
    assert not errors, errors
    # Every message there reads back: no reference to a collected body.
    rows = server.mail_list(account)
    assert rows
    for row in rows:
        server.mail_show(account, row["uid"])
    assert scrub(server).returncode == 0
    print(f"collector removed the body {collected} times while it was being re-appended")
