"""Real IMAP clients against Trimaran: mbsync (isync) two-way sync of 10,000 messages, and
neomutt reading a message, on SQLite and PostgreSQL."""

import concurrent.futures
import imaplib
import os
import pathlib
import re
import shutil
import smtplib
import subprocess
import time

import pytest

from smtpwire import unverified_context

ALICE = "alice@example.test"
PASSWORD = "sync secret"
COUNT = 10_000


def seed(server, count):
    """Delivers `count` distinct messages over 8 SMTP connections."""
    def batch(start):
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as s:
            for i in range(start, count, 8):
                s.sendmail("bob@elsewhere.test", [ALICE],
                           (f"From: bob@elsewhere.test\r\nTo: {ALICE}\r\nSubject: sync {i}\r\n"
                            f"Message-ID: <sync-{i}@elsewhere.test>\r\n\r\nbody {i}\r\n").encode())
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(batch, range(8)))


def mbsync_config(server, tmp_path):
    maildir = tmp_path / "maildir"
    maildir.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""IMAPAccount trimaran
Host 127.0.0.1
Port {server.imaps_port}
User {ALICE}
Pass "{PASSWORD}"
SSLType IMAPS
CertificateFile {server.data_dir}/tls-cert.pem
AuthMechs LOGIN

IMAPStore remote
Account trimaran

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    return rc, maildir


def mbsync(rc):
    run = subprocess.run(["mbsync", "-c", str(rc), "-a"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "error" not in (run.stdout + run.stderr).lower(), run.stdout + run.stderr
    return run


def files(maildir, box):
    d = maildir / box
    return sorted(p for sub in ("cur", "new") for p in (d / sub).iterdir())


def server_state(server, box):
    m = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=unverified_context(), timeout=60)
    m.login(ALICE, PASSWORD)
    typ, data = m.select(box)
    assert typ == "OK"
    state = {}
    if int(data[0]) > 0:
        typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        for item in data:
            if isinstance(item, tuple):
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split()
                mid = item[1].decode().split(":", 1)[1].strip()
                assert mid not in state, f"duplicate {mid} in {box}"
                state[mid] = set(flags)
    m.logout()
    return state


@pytest.mark.timeout(1200)
def test_mbsync_two_way_sync_of_10000_messages(make_server, tmp_path):
    if shutil.which("mbsync") is None:
        pytest.fail("mbsync (isync) is needed; scripts/test installs it")
    server = make_server(accounts=())
    server.add_account(ALICE, PASSWORD)
    seed(server, COUNT)
    rc, maildir = mbsync_config(server, tmp_path)

    started = time.monotonic()
    mbsync(rc)
    pulled = time.monotonic() - started
    inbox = files(maildir, "INBOX")
    assert len(inbox) == COUNT, len(inbox)
    assert (maildir / "Sent").is_dir() and (maildir / "Archive").is_dir()
    print(f"mbsync pulled {COUNT} messages in {pulled:.1f} s")

    def mid(path):
        return re.search(rb"Message-ID: (<[^>]+>)", path.read_bytes()).group(1).decode()

    # Local changes: flag 100, delete 50, move 30 to Archive.
    flagged, deleted, moved = inbox[:100], inbox[100:150], inbox[150:180]
    for p in flagged:
        base = p.name.split(":2,")[0]
        p.rename(p.parent.parent / "cur" / f"{base}:2,FS")
    deleted_ids = {mid(p) for p in deleted}
    for p in deleted:
        p.unlink()
    moved_ids = {mid(p) for p in moved}
    for p in moved:
        base = p.name.split(",U=")[0]
        p.rename(maildir / "Archive" / "cur" / f"{base}:2,S")
    # A server-side change meanwhile: a new message and a flag.
    m = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=unverified_context(), timeout=60)
    m.login(ALICE, PASSWORD)
    m.select("INBOX")
    m.uid("STORE", str(COUNT), "+FLAGS", "(\\Answered)")
    m.append("INBOX", None, None, b"Message-ID: <appended@example.test>\r\nSubject: new\r\n\r\nnew\r\n")
    m.logout()

    mbsync(rc)
    inbox_state = server_state(server, "INBOX")
    archive_state = server_state(server, "Archive")
    assert len(inbox_state) == COUNT + 1 - len(deleted) - len(moved), len(inbox_state)
    assert not (deleted_ids | moved_ids) & inbox_state.keys()
    assert set(archive_state) == moved_ids, "moved exactly once"
    assert all("\\Seen" in f for f in archive_state.values())
    assert sum(1 for f in inbox_state.values() if "\\Flagged" in f and "\\Seen" in f) == len(flagged)
    local = files(maildir, "INBOX")
    assert len(local) == len(inbox_state)
    assert any("appended@example.test" in p.read_text(errors="replace") for p in local)
    assert sum(1 for p in local if re.search(r":2,[A-Z]*R", p.name)) == 1, "server's \\Answered pulled"

    # A third run has nothing left to do and changes nothing.
    run = mbsync(rc)
    assert server_state(server, "INBOX") == inbox_state
    assert len(files(maildir, "INBOX")) == len(local)


@pytest.mark.timeout(180)
def test_neomutt_reads_a_message(make_server, tmp_path):
    if shutil.which("neomutt") is None or shutil.which("tmux") is None:
        pytest.fail("neomutt and tmux are needed; scripts/test installs them")
    server = make_server(accounts=())
    server.add_account(ALICE, PASSWORD)
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        s.sendmail("bob@elsewhere.test", [ALICE],
                   b"From: Bob <bob@elsewhere.test>\r\nTo: alice@example.test\r\n"
                   b"Subject: =?UTF-8?B?7JWI64WV7ZWY7IS47JqU?=\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
                   b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   b"Content-Transfer-Encoding: 8bit\r\n\r\n"
                   + "Neomutt can read this: 한국어 본문.\r\n".encode())
    rc = tmp_path / "neomuttrc"
    rc.write_text(f"""set imap_user = "{ALICE}"
set imap_pass = "{PASSWORD}"
set folder = "imaps://127.0.0.1:{server.imaps_port}/"
set spoolfile = "+INBOX"
set certificate_file = "{server.data_dir}/tls-cert.pem"
set ssl_verify_host = no
set record = ""
set header_cache = ""
set message_cachedir = ""
set charset = "utf-8"
set pager_stop = yes
""")
    session = f"nm{os.getpid()}{server.imaps_port}"
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="xterm-256color", HOME=str(tmp_path))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40",
                    f"neomutt -n -F {rc}"], check=True, env=env)
    try:
        def screen():
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                  capture_output=True, text=True).stdout

        def wait_for(text, timeout=30):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                s = screen()
                if text in s:
                    return s
                time.sleep(0.3)
            raise AssertionError(f"{text!r} not on screen:\n{screen()}")

        index = wait_for("안녕하세요")
        assert "Bob" in index
        subprocess.run(["tmux", "send-keys", "-t", session, "Enter"], check=True)
        page = wait_for("한국어 본문")
        assert "Neomutt can read this" in page
        subprocess.run(["tmux", "send-keys", "-t", session, "q", "q"], check=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    # Reading it set \Seen on the server.
    m = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=unverified_context(), timeout=30)
    m.login(ALICE, PASSWORD)
    m.select("INBOX")
    deadline = time.monotonic() + 10
    while b"\\Seen" not in m.fetch("1", "(FLAGS)")[1][0] and time.monotonic() < deadline:
        time.sleep(0.3)
        m.noop()
    assert b"\\Seen" in m.fetch("1", "(FLAGS)")[1][0]
    m.logout()
