"""Backups (issue 6, DESIGN.md G5–G7): pack-file repositories made while mail keeps arriving,
restored into empty stores and into running ones, verified after damage, resumed after a
SIGKILL, pruned. Everything is checked against the store's own tables and through IMAP."""

import base64
import collections
import email.utils
import imaplib
import os
import pathlib
import signal
import smtplib
import ssl
import subprocess
import threading
import time

import pytest

from harness import trimaran_bin

pytestmark = pytest.mark.timeout(600)

ACCOUNTS = ("alice@example.test", "bob@example.test", "carol@example.test")


def imap(server, user):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    m = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    m.starttls(ssl_context=ctx)
    m.login(user, "secret")
    return m


def message(i, to, size=0, tag="m", random=False):
    if random:  # does not compress: fills packs at its size
        filler = "\r\n".join(base64.b64encode(os.urandom(57)).decode() for _ in range(size // 78))
    else:
        filler = "".join(f"line {n} of message {i}, {tag}\r\n" for n in range(size // 30))
    return (f"From: sender{i}@remote.test\r\nTo: {to}\r\nSubject: {tag} {i}\r\n"
            f"Message-ID: <{tag}-{i}@remote.test>\r\n"
            f"Date: {email.utils.formatdate(1700000000 + i)}\r\n\r\nBody {i}\r\n{filler}").encode()


def deliver(server, to, messages):
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as s:
        for m in messages:
            s.sendmail("sender@remote.test", [to], m)


def populate(server):
    """Mail in several folders with flags, keywords and internal dates, through IMAP and SMTP."""
    for n, account in enumerate(ACCOUNTS):
        deliver(server, account, [message(i, account, 200 * (i % 7), tag=f"{n}") for i in range(20)])
        m = imap(server, account)
        m.create("Projects")
        m.create("Projects/2026")
        m.append("Projects/2026", r"(\Seen \Flagged $Important)", imaplib.Time2Internaldate(1600000000),
                 message(99, account, 3000, tag="appended"))
        m.append("Archive", r"(\Answered)", imaplib.Time2Internaldate(1500000000),
                 message(98, account, 100, tag="archived"))
        m.select("INBOX")
        m.store("1:5", "+FLAGS", r"(\Seen)")
        m.store("3", "+FLAGS", r"(\Deleted $Label1)")
        m.copy("2:4", "Projects")
        m.logout()
    # The same body in two accounts: stored once, backed up once.
    for account in ACCOUNTS[:2]:
        deliver(server, account, [message(500, "team@example.test", 1000, tag="shared")])


def state(server, accounts=ACCOUNTS):
    """Every message entry of the accounts, from the store's own tables:
    {account: {mailbox: [(uid, hash, flags, keywords, internal_date)]}}."""
    rows = server.sql(
        "SELECT a.address, mb.name, mm.uid, mm.hash, mm.flags, mm.keywords, mm.internal_date "
        "FROM mailbox_messages mm JOIN mailboxes mb ON mb.id = mm.mailbox_id "
        "JOIN accounts a ON a.id = mm.account_id ORDER BY a.address, mb.name, mm.uid")
    out = {}
    for address, mailbox, uid, digest, flags, keywords, date in rows:
        if address in accounts:
            out.setdefault(address, {}).setdefault(mailbox, []).append(
                (int(uid), digest, int(flags), keywords or "", int(date)))
    return out


def assert_same(got, want):
    """State equality, reporting the first entries that differ rather than two huge dicts."""
    assert sorted(got) == sorted(want)
    for account in want:
        assert sorted(got[account]) == sorted(want[account]), account
        for mb, entries in want[account].items():
            diff = [(g, w) for g, w in zip(got[account][mb], entries) if g != w]
            assert not diff and len(got[account][mb]) == len(entries), (account, mb, diff[:3])


def mailboxes(server):
    rows = server.sql("SELECT a.address, mb.name, mb.uidvalidity, mb.uidnext FROM mailboxes mb "
                      "JOIN accounts a ON a.id = mb.account_id")
    return {(a, n): (int(v), int(nx)) for a, n, v, nx in rows}


def backup(server, repo, *extra, check=True):
    return server.cli("backup", "create", "--to", str(repo), "--quiet", *extra, check=check)


def restore(server, repo, *extra, check=True):
    return server.cli("backup", "restore", "--from", str(repo), "--quiet", *extra, check=check)


class Sender(threading.Thread):
    """Keeps delivering to one account until stopped; remembers what was acknowledged."""

    def __init__(self, server, to, tag):
        super().__init__(daemon=True)
        self.server, self.to, self.tag = server, to, tag
        self.acked, self.error = [], None
        self.halt = threading.Event()

    def run(self):
        try:
            with smtplib.SMTP("127.0.0.1", self.server.smtp_port, timeout=60) as s:
                i = 0
                while not self.halt.is_set():
                    body = message(i, self.to, 500, tag=self.tag)
                    s.sendmail("sender@remote.test", [self.to], body)
                    self.acked.append(body)
                    i += 1
                    time.sleep(0.01)
        except Exception as e:  # reported by the test
            self.error = e

    def stop(self):
        self.halt.set()
        self.join(60)
        assert self.error is None, self.error
        return self.acked


def test_backup_during_deliveries_restores_every_account_exactly(make_server, tmp_path):
    source = make_server(accounts=ACCOUNTS)
    populate(source)
    before = state(source)
    sender = Sender(source, "carol@example.test", "during")
    sender.start()
    time.sleep(0.5)
    out = backup(source, tmp_path / "repo").stdout.decode()
    during = sender.stop()
    assert during, "mail kept arriving during the backup"
    assert "backup " in out and " 3 accounts" in out, out

    target = make_server(domain=None, accounts=(), start=False)
    restore(target, tmp_path / "repo")
    after = state(target)
    # Mail that was there before the backup started is all back, with the same UIDs, flags,
    # keywords and internal dates.
    for account in ("alice@example.test", "bob@example.test"):
        assert after[account] == before[account], account
    for name, entries in before["carol@example.test"].items():
        if name != "INBOX":
            assert after["carol@example.test"][name] == entries
    # Carol's INBOX was being written to: the backup holds it as it was at one moment, so
    # what came back is her INBOX up to some UID, exactly.
    now = state(source)["carol@example.test"]["INBOX"]
    restored = after["carol@example.test"]["INBOX"]
    assert restored == now[:len(restored)]
    assert len(restored) >= len(before["carol@example.test"]["INBOX"])
    # Folders with no mail too, subscriptions and account settings.
    assert {n for (a, n) in mailboxes(target) if a == "alice@example.test"} == \
        {n for (a, n) in mailboxes(source) if a == "alice@example.test"}
    # A new store has new UIDVALIDITYs by default: clients that cached the old store resync.
    old, new = mailboxes(source), mailboxes(target)
    assert all(new[k][0] != old[k][0] for k in new if k[1] == "INBOX")
    # The restored server serves it: the password came back too.
    target.start()
    m = imap(target, "alice@example.test")
    m.select("Projects/2026", readonly=True)
    typ, data = m.fetch("1", "(FLAGS INTERNALDATE)")
    assert b"\\Flagged" in data[0] and b"$Important" in data[0] and b"\\Seen" in data[0], data
    m.logout()


def test_restore_moves_a_deployment_keeping_uidvalidity(make_server, tmp_path):
    source = make_server(accounts=ACCOUNTS[:1])
    deliver(source, ACCOUNTS[0], [message(i, ACCOUNTS[0]) for i in range(5)])
    source.stop()
    backup(source, tmp_path / "repo")
    target = make_server(domain=None, accounts=(), start=False)
    restore(target, tmp_path / "repo", "--keep-uidvalidity")
    assert state(target) == state(source)
    assert mailboxes(target) == mailboxes(source)


def test_single_account_restore_merges_with_new_mail_on_a_running_server(make_server, tmp_path):
    server = make_server(accounts=ACCOUNTS[:2])
    alice, bob = ACCOUNTS[:2]
    deliver(server, alice, [message(i, alice, 300) for i in range(30)])
    deliver(server, bob, [message(i, bob) for i in range(3)])
    backup(server, tmp_path / "repo")
    kept = state(server)[alice]["INBOX"]
    uidvalidity, uidnext = mailboxes(server)[(alice, "INBOX")]

    # A mistake after the backup: most of alice's mail is expunged. New mail keeps coming.
    m = imap(server, alice)
    m.select("INBOX")
    m.store("1:20", "+FLAGS", r"(\Deleted)")
    m.expunge()
    deliver(server, alice, [message(i, alice, tag="after") for i in range(5)])
    bob_before = state(server)[bob]
    typ, [exists] = m.select("INBOX")
    seen_uidnext = mailboxes(server)[(alice, "INBOX")][1]

    sender = Sender(server, alice, "meanwhile")
    sender.start()
    out = restore(server, tmp_path / "repo", "--account", alice).stdout.decode()
    meanwhile = sender.stop()
    assert "20 messages restored" in out, out

    now = state(server)
    inbox = now[alice]["INBOX"]
    hashes = collections.Counter(h for _, h, *_ in inbox)
    # Every message of the backup is there once; the mail that came since is there once.
    for _, digest, *_ in kept:
        assert hashes[digest] == 1
    assert len(inbox) == len(kept) + 5 + len(meanwhile)
    assert len({uid for uid, *_ in inbox}) == len(inbox)
    # Same UIDVALIDITY; what came back has UIDs above any the client had seen, so a client
    # that knows the mailbox fetches it as new mail without resynchronising.
    assert mailboxes(server)[(alice, "INBOX")][0] == uidvalidity
    restored_uids = sorted(uid for uid, digest, *_ in inbox if digest in {h for _, h, *_ in kept[:20]})
    assert restored_uids[0] >= seen_uidnext > uidnext
    m.noop()  # the session learns of the new messages
    typ, data = m.uid("SEARCH", f"UID {seen_uidnext}:*")
    found = {int(u) for u in data[0].split()}
    assert set(restored_uids) <= found
    m.logout()
    # Bob is untouched.
    assert now[bob] == bob_before
    # Running it again adds nothing.
    out = restore(server, tmp_path / "repo", "--account", alice).stdout.decode()
    assert " 0 messages restored" in out, out


def pack_files(repo):
    return sorted(pathlib.Path(repo, "packs").glob("*/*.pack"))


def index_entries(pack):
    """The records of a pack from its .idx (format in crates/backup/src/pack.rs)."""
    raw = pack.with_suffix(".idx").read_bytes()
    body = raw[8:-32]
    out = []
    for i in range(0, len(body), 57):
        e = body[i:i + 57]
        out.append((e[:32].hex(), int.from_bytes(e[32:40], "little"), int.from_bytes(e[40:44], "little")))
    return out


def test_damaged_pack_names_exactly_the_messages_it_affects(make_server, tmp_path):
    server = make_server(accounts=ACCOUNTS[:2], start=True)
    for account in ACCOUNTS[:2]:
        # 40 x 60 KB that do not compress, over 1 MiB packs.
        deliver(server, account, [message(i, account, 60000, tag=account, random=True)
                                  for i in range(40)])
    repo = tmp_path / "repo"
    backup(server, repo, "--pack-size", str(1 << 20))
    packs = pack_files(repo)
    assert len(packs) >= 2, packs
    assert server.cli("backup", "verify", "--repo", str(repo)).returncode == 0

    victim = packs[len(packs) // 2]
    digest, offset, length = index_entries(victim)[3]
    data = bytearray(victim.read_bytes())
    data[offset + 49 + length // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    proc = server.cli("backup", "verify", "--repo", str(repo), check=False)
    assert proc.returncode != 0
    damaged = [line.split("\t") for line in proc.stdout.decode().splitlines() if line.startswith("damaged\t")]
    expected = sorted((a, mb, str(uid)) for a, boxes in state(server).items()
                      for mb, entries in boxes.items() for uid, h, *_ in entries if h == digest)
    assert expected and sorted((d[2], d[3], d[4]) for d in damaged) == expected
    assert f"pack {victim.stem}" in proc.stdout.decode()

    # Everything else still restores; the damaged message is named.
    target = make_server(domain=None, accounts=(), start=False)
    proc = restore(target, repo, check=False)
    assert proc.returncode != 0
    assert f"\t{digest}\t" in proc.stdout.decode()
    got = state(target)
    want = state(server)
    for account, boxes in want.items():
        for mb, entries in boxes.items():
            assert [e for e in got.get(account, {}).get(mb, [])] == [e for e in entries if e[1] != digest]


def test_restore_killed_and_run_again_has_no_duplicates(make_server, tmp_path):
    server = make_server(accounts=ACCOUNTS[:1])
    account = ACCOUNTS[0]
    deliver(server, account, [message(i, account, 2000) for i in range(3000)])
    repo = tmp_path / "repo"
    backup(server, repo)
    target = make_server(domain=None, accounts=(), start=False)
    target.start()  # restores go into a running server
    cmd = [trimaran_bin(), "--data-dir", str(target.data_dir), "--store", target.store,
           "backup", "restore", "--from", str(repo), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    count = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            [(count,)] = target.sql("SELECT count(*) FROM mailbox_messages")
            count = int(count)
        except Exception:
            count = 0
        if count > 0:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < count < 3000, f"killed after {count} of 3000 messages"
    restore(target, repo)
    assert_same(state(target), state(server))


def backed_up_and_no_store(make_server, tmp_path, count):
    """A server with `count` messages of 48 KB that do not compress, its backup, and a second
    server that has no store yet: (server, account, repository, target)."""
    server = make_server(accounts=ACCOUNTS[:1])
    account = ACCOUNTS[0]
    deliver(server, account, [message(i, account, 48000, random=True) for i in range(count)])
    repo = tmp_path / "repo"
    backup(server, repo)
    return server, account, repo, make_server(domain=None, accounts=(), start=False)


def test_restore_into_a_new_store_killed_and_run_again(make_server, tmp_path):
    """The disaster case: no store any more. SQLite builds the new one beside its place and
    puts it there complete, so a restore killed half-way leaves no store a server could start
    on with half the mail; the next run starts over and ends with every message once."""
    # Bodies that do not compress: the restore commits a batch per 8 MiB of them, so the
    # kill after the first commit lands with most of the work still to do.
    server, account, repo, target = backed_up_and_no_store(make_server, tmp_path, 1000)
    db = target.data_dir / "trimaran.db"
    building = target.data_dir / "trimaran.db.restoring"
    cmd = [trimaran_bin(), "--data-dir", str(target.data_dir), "--store", target.store,
           "backup", "restore", "--from", str(repo), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def under_way():
        if target.backend == "sqlite":
            try:
                return building.stat().st_size > 1_000_000
            except FileNotFoundError:
                return False
        try:
            [(count,)] = target.sql("SELECT count(*) FROM mailbox_messages")
            return int(count) > 0
        except Exception:
            return False

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not under_way():
        assert proc.poll() is None, proc.communicate()
        if target.backend == "sqlite":
            assert not db.exists(), "the store appeared before it was complete"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if target.backend == "sqlite":
        assert not db.exists(), "a killed restore left a store behind"
        assert building.stat().st_size > 1_000_000
    else:
        [(count,)] = target.sql("SELECT count(*) FROM mailbox_messages")
        assert 0 < int(count) < 1000, f"killed after {count} of 1000 messages"
    out = restore(target, repo).stdout.decode()
    assert "1000 messages restored" in out or target.backend != "sqlite", out
    assert not building.exists()
    assert_same(state(target), state(server))
    target.start()
    m = imap(target, account)
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK" and int(data[0]) == 1000, data
    m.logout()


def test_restore_into_a_new_store_on_a_full_disk_puts_nothing_in_place(make_server, tmp_path, backend):
    """The disk fills up while a new SQLite store is built: a clear error, no store a server
    could start on; once there is room the same command completes."""
    if backend != "sqlite":
        pytest.skip("a SQLite file on a small file system")
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    server, _, repo, target = backed_up_and_no_store(make_server, tmp_path, 300)
    target.data_dir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(target.data_dir)], check=True)
    try:
        proc = restore(target, repo, check=False)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and "restore failed" in err and "full" in err, err
        assert not (target.data_dir / "trimaran.db").exists()
        subprocess.run(["mount", "-o", "remount,size=64m", str(target.data_dir)], check=True)
        out = restore(target, repo).stdout.decode()
        assert "300 messages restored" in out, out
        assert sorted(p.name for p in target.data_dir.iterdir() if p.name.startswith("trimaran.db")) \
            == ["trimaran.db"]
        assert_same(state(target), state(server))
    finally:
        subprocess.run(["umount", "-l", str(target.data_dir)], check=True)


def test_incremental_backups_copy_only_new_bodies_and_prune_keeps_what_is_needed(make_server, tmp_path):
    server = make_server(accounts=ACCOUNTS[:1])
    account = ACCOUNTS[0]
    repo = tmp_path / "repo"
    deliver(server, account, [message(i, account, 500) for i in range(50)])
    first = backup(server, repo).stdout.decode()
    assert "50 new bodies" in first, first
    deliver(server, account, [message(i, account, 500, tag="second") for i in range(7)])
    second = backup(server, repo).stdout.decode()
    assert "57 messages" in second and "7 new bodies" in second, second
    listed = server.cli("backup", "list", "--repo", str(repo)).stdout.decode().splitlines()
    assert len(listed) == 2
    out = server.cli("backup", "prune", "--repo", str(repo), "--keep-last", "1").stdout.decode()
    assert "removed 1 backups" in out, out
    assert server.cli("backup", "verify", "--repo", str(repo)).returncode == 0
    target = make_server(domain=None, accounts=(), start=False)
    restore(target, repo)
    assert_same(state(target), state(server))


def test_bad_repositories_give_one_clear_error(make_server, tmp_path):
    server = make_server(start=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    for args, needle in (
        (["backup", "restore", "--from", str(tmp_path / "missing")], "no backup repository"),
        (["backup", "create", "--to", str(tmp_path / "junk")], "neither empty nor a backup repository"),
        (["backup", "verify", "--repo", str(tmp_path / "missing")], "no backup repository"),
        (["backup", "prune", "--repo", str(tmp_path / "missing"), "--keep-last", "1"], "no backup repository"),
    ):
        proc = server.cli(*args, check=False)
        assert proc.returncode != 0 and needle in proc.stderr.decode(), (args, proc.stderr)
    # A snapshot cut short is reported, not restored from.
    repo = tmp_path / "repo"
    backup(server, repo)
    [snap] = pathlib.Path(repo, "snapshots").glob("*.snap")
    snap.write_bytes(snap.read_bytes()[:-20])
    proc = restore(server, repo, check=False)
    assert proc.returncode != 0 and "snapshot" in proc.stderr.decode(), proc.stderr
    proc = server.cli("backup", "verify", "--repo", str(repo), check=False)
    assert proc.returncode != 0 and b"snapshot" in proc.stdout


def test_a_backup_moves_a_deployment_between_back_ends(tmp_path, pg):
    """SQLite to PostgreSQL and back: the same accounts, mailboxes, UIDs, flags and bodies."""
    from harness import Server
    servers = []
    for d in "abc":
        (tmp_path / d).mkdir()
    try:
        first = Server("sqlite", tmp_path / "a")
        servers.append(first)
        first.add_domain("example.test")
        for account in ACCOUNTS:
            first.add_account(account)
        first.start()
        populate(first)
        first.stop()
        backup(first, tmp_path / "repo1")
        second = Server("postgres", tmp_path / "b", pg=pg)
        servers.append(second)
        restore(second, tmp_path / "repo1", "--keep-uidvalidity")
        assert_same(state(second), state(first))
        assert mailboxes(second) == mailboxes(first)
        backup(second, tmp_path / "repo2")
        third = Server("sqlite", tmp_path / "c")
        servers.append(third)
        restore(third, tmp_path / "repo2", "--keep-uidvalidity")
        assert_same(state(third), state(first))
        # The password came along: the last store serves alice.
        third.start()
        imap(third, "alice@example.test").logout()
    finally:
        for s in servers:
            s.kill9()


def test_restore_and_verify_from_read_only_media(make_server, tmp_path):
    """A backup disk mounted read-only: nothing to lock out, nothing written there."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    server = make_server(accounts=ACCOUNTS[:1])
    deliver(server, ACCOUNTS[0], [message(i, ACCOUNTS[0]) for i in range(5)])
    backup(server, tmp_path / "disk" / "repo")
    (tmp_path / "disk" / "repo" / "lock").unlink()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(tmp_path / "disk"), str(mnt)], check=True)
    try:
        target = make_server(domain=None, accounts=(), start=False)
        restore(target, mnt / "repo")
        assert target.cli("backup", "verify", "--repo", str(mnt / "repo")).returncode == 0
        assert_same(state(target), state(server))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
