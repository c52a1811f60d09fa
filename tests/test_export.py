"""`trimaran export` and `trimaran import` (DESIGN.md G7): mbox, Maildir and eml-zip, checked by
independent readers (Python's `mailbox` and `zipfile`), round trips into a fresh account with the
same bodies (BLAKE3), folders, flags and internal dates, isolation between accounts, and bad
input. On SQLite and PostgreSQL."""

import base64
import imaplib
import json
import mailbox
import os
import pathlib
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import zipfile
from collections import Counter

import blake3
import pytest

from harness import dovecot_config, free_ports
from smtpwire import unverified_context

pytestmark = pytest.mark.timeout(300)

PASSWORD = "export secret"
ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"
BOB_MARKER = "BOB-ONLY-7d1f3c"
FORMATS = ["mbox", "maildir", "eml-zip"]
# Folders made by the test: hierarchy, a dot (the Maildir++ separator) and non-ASCII in a name.
FOLDERS = ["Archive/2024", "Lists.rust", "Entwürfe"]


def imap(server, user=ALICE):
    m = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=unverified_context(),
                          timeout=30)
    m.login(user, PASSWORD)
    return m


def mutf7(name):
    """A mailbox name in modified UTF-7 (RFC 3501 §5.1.3), as imaplib's IMAP4rev1 needs it."""
    out, pending = [], []

    def flush():
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode()
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()
    for c in name:
        if " " <= c <= "~":
            flush()
            out.append("&-" if c == "&" else c)
        else:
            pending.append(c)
    flush()
    return "".join(out)


def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def quoted(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def msg(subject, body="hello\r\n", extra=""):
    return (f"From: Bob <bob@elsewhere.test>\r\nTo: Alice <alice@example.test>\r\n"
            f"Subject: {subject}\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n{extra}\r\n"
            f"{body}").encode()


# (folder, flags, internal date, message)
APPENDS = [
    ("INBOX", r"(\Seen \Flagged)", '"01-Mar-2024 12:34:56 +0000"',
     msg("quoting", "From here the line looks like a separator\r\n>From and quoted\r\n"
                    ">>From twice\r\nend\r\n")),
    ("INBOX", r"(\Answered \Draft $Forwarded work)", '"02-Mar-2024 08:00:00 +0000"',
     msg("keywords")),
    ("INBOX", r"(\Deleted)", '"03-Mar-2024 09:00:00 +0000"',
     b"Subject: no final newline\r\n\r\nthe end has no line break"),
    ("Archive", r"(\Seen)", '"04-Jan-2023 00:00:01 +0000"', msg("archived")),
    ("Archive/2024", r"(\Seen $Label1)", '"05-Feb-2024 10:11:12 +0000"',
     msg("deep", "Status: RO\r\n\r\nnot a header here\r\n")),
    ("Lists.rust", "()", '"06-Jun-2024 06:06:06 +0000"', msg("dotted folder")),
    ("Entwürfe", r"(\Draft)", '"07-Jul-2024 07:07:07 +0000"',
     msg("gruesse", "Gr\u00fc\u00dfe aus K\u00f6ln\r\n",
         "Content-Type: text/plain; charset=utf-8\r\n")),
]


def send(server, to, body):
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        s.sendmail("someone@elsewhere.test", to, body)


@pytest.fixture
def filled(make_server):
    """A server where Alice has mail in several folders with flags and keywords, Bob has his
    own mail, and Carol has none."""
    server = make_server(accounts=())
    for user in (ALICE, BOB, CAROL):
        server.add_account(user, PASSWORD)
    m = imap(server)
    for folder in FOLDERS:
        ok(m.create(quoted(mutf7(folder))))
    for folder, flags, date, raw in APPENDS:
        ok(m.append(quoted(mutf7(folder)), flags, date, raw))
    m.logout()
    # SMTP: a Return-Path for the From_ line, a message both accounts get (one shared body),
    # and one only Bob gets.
    send(server, [ALICE], msg("by smtp"))
    send(server, [ALICE, BOB], msg("to both"))
    send(server, [BOB], msg(f"secret of bob {BOB_MARKER}", f"{BOB_MARKER}\r\n"))
    return server


def state(server, user):
    """(mailbox, BLAKE3, flags, internal date) of every message, as a multiset."""
    rows = server.mail_list(user)
    by_box = {}
    for r in rows:
        by_box.setdefault(r["mailbox"], {})[r["uid"]] = r["blake3"]
    m = imap(server, user)
    out = Counter()
    for name, uids in by_box.items():
        ok(m.select(quoted(mutf7(name)), readonly=True))
        for item in ok(m.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE)")):
            text = item.decode() if isinstance(item, bytes) else item[0].decode()
            uid = int(re.search(r"UID (\d+)", text).group(1))
            flags = frozenset(re.search(r"FLAGS \(([^)]*)\)", text).group(1).split()) - {
                "\\Recent"}
            date = re.search(r'INTERNALDATE "([^"]+)"', text).group(1)
            stamp = time.mktime(imaplib.Internaldate2tuple(
                f'INTERNALDATE "{date}"'.encode()))
            out[(name, uids[uid], flags, stamp)] += 1
    m.logout()
    return out


def folders(server, user):
    m = imap(server, user)
    names = set()
    for line in ok(m.list()):
        names.add(re.search(rb'"([^"]*)"$|(\S+)$', line).group(0).decode().strip('"'))
    m.logout()
    return names


def export(server, fmt, target, user=ALICE, *extra):
    server.cli("export", "--account", user, "--format", fmt, "--to", str(target), *extra)


def target_path(tmp_path, fmt, name="out"):
    return tmp_path / (f"{name}.zip" if fmt == "eml-zip" else name)


def check_independently(fmt, path, server):
    """Reads the export with Python's own readers and compares with what the store holds."""
    stored = {(r["mailbox"], r["uid"]): r["blake3"] for r in server.mail_list(ALICE)}
    by_subject = {r["subject"]: r for r in server.mail_list(ALICE)}
    if fmt == "eml-zip":
        with zipfile.ZipFile(path) as z:
            assert z.testzip() is None
            manifest = json.loads(z.read("trimaran-export.json"))
            assert len(manifest["messages"]) == len(stored)
            for entry in manifest["messages"]:
                body = z.read(entry["file"])
                assert blake3.blake3(body).hexdigest() == entry["blake3"]
                assert stored[(entry["mailbox"], entry["uid"])] == entry["blake3"]
                assert entry["file"].endswith(f"/{entry['uid']}.eml")
            names = z.namelist()
            assert "Archive/2024/1.eml" in names and "Entwürfe/1.eml" in names
            keywords = [e for e in manifest["messages"] if "work" in e["keywords"]][0]
            assert set(keywords["flags"]) == {"\\Answered", "\\Draft"}
            assert keywords["internal_date"] == 1709366400
    elif fmt == "maildir":
        md = mailbox.Maildir(path, factory=None, create=False)
        assert set(md.list_folders()) >= {"Archive", "Archive.2024", "Lists%2Erust",
                                          "Entw&APw-rfe", "Sent"}
        seen = 0
        for folder, box in [("INBOX", md)] + [
                (n, md.get_folder(n)) for n in ("Archive", "Archive.2024", "Lists%2Erust",
                                               "Entw&APw-rfe")]:
            for key in box.keys():
                message = box.get_message(key)
                body = box.get_bytes(key)
                digest = blake3.blake3(body).hexdigest()
                assert digest in stored.values(), folder
                subject = message["Subject"]
                if subject == "quoting":
                    assert set(message.get_flags()) == {"S", "F"}
                    assert int(message.get_date()) == 1709296496
                if subject == "keywords":
                    assert set(message.get_flags()) >= {"D", "R", "P"}
                if subject == "no final newline":
                    assert message.get_flags() == "T"
                seen += 1
        assert seen == len(stored)
        inbox_keywords = (path / "dovecot-keywords").read_text().split("\n")
        assert "0 $Forwarded" in inbox_keywords and "1 work" in inbox_keywords
    else:
        files = {p.relative_to(path).as_posix() for p in path.rglob("*.mbox")}
        assert {"INBOX.mbox", "Archive.mbox", "Archive/2024.mbox", "Lists.rust.mbox",
                "Entwürfe.mbox", "Sent.mbox"} <= files
        box = mailbox.mbox(path / "INBOX.mbox", create=False)
        subjects = {}
        for message in box:
            subjects[message["Subject"]] = message
        assert set(subjects) == {"quoting", "keywords", "no final newline", "by smtp", "to both"}
        assert set(subjects["quoting"].get_flags()) == {"R", "O", "F"}
        assert set(subjects["keywords"].get_flags()) == {"O", "A", "T"}
        assert "D" in subjects["no final newline"].get_flags()
        assert subjects["keywords"]["X-Keywords"].split() == ["$Forwarded", "work"]
        assert subjects["by smtp"].get_from().startswith("someone@elsewhere.test ")
        assert subjects["quoting"].get_from().endswith("Fri Mar  1 12:34:56 2024")
        raw = (path / "INBOX.mbox").read_bytes()
        # mboxrd: one more ">" on every line that could be taken for a separator.
        assert b"\n>From here" in raw and b"\n>>From and" in raw and b"\n>>>From twice" in raw
        assert b"\r\n" not in raw.split(b"Subject: quoting")[1].split(b"\nFrom ")[0]
        archived = mailbox.mbox(path / "Archive" / "2024.mbox", create=False)
        [deep] = list(archived)
        assert deep["X-Keywords"] == "$Label1" and "R" in deep.get_flags()
        assert by_subject["deep"]["mailbox"] == "Archive/2024"


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_into_a_fresh_account(filled, tmp_path, fmt):
    server = filled
    path = target_path(tmp_path, fmt)
    export(server, fmt, path)
    check_independently(fmt, path, server)
    proc = server.cli("import", "--account", CAROL, "--format", fmt, "--from", str(path))
    assert b"imported 9 message(s)" in proc.stderr, proc.stderr
    before = state(server, ALICE)
    assert sum(before.values()) == 9 and len({flags for (_, _, flags, _) in before}) >= 6
    assert state(server, CAROL) == before
    assert folders(server, CAROL) == folders(server, ALICE)
    # Run again (as after an interruption): what is there already is not added twice.
    proc = server.cli("import", "--account", CAROL, "--format", fmt, "--from", str(path))
    assert b"imported 0 message(s), 9 already there" in proc.stderr, proc.stderr
    assert state(server, CAROL) == before


@pytest.mark.parametrize("fmt", ["mbox", "eml-zip"])
def test_one_mailbox(filled, tmp_path, fmt):
    server = filled
    path = tmp_path / ("Archive.mbox" if fmt == "mbox" else "archive.zip")
    export(server, fmt, path, ALICE, "--mailbox", "Archive/2024")
    if fmt == "mbox":
        [only] = list(mailbox.mbox(path, create=False))
        assert only["Subject"] == "deep"
    else:
        with zipfile.ZipFile(path) as z:
            assert [n for n in z.namelist() if n.endswith(".eml")] == ["Archive/2024/1.eml"]
    server.cli("import", "--account", CAROL, "--format", fmt, "--from", str(path))
    target = "Archive" if fmt == "mbox" else "Archive/2024"
    assert [r["subject"] for r in server.mail_list(CAROL, target)] == ["deep"]


def test_eml_zip_to_stdout(filled, tmp_path):
    proc = filled.cli("export", "--account", ALICE, "--format", "eml-zip", "--to", "-")
    path = tmp_path / "stdout.zip"
    path.write_bytes(proc.stdout)
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert len(json.loads(z.read("trimaran-export.json"))["messages"]) == 9


def all_bytes(path):
    """Every byte of an export, zip entries decompressed."""
    if path.is_file():
        with zipfile.ZipFile(path) as z:
            return b"".join(z.read(n) for n in z.namelist())
    return b"".join(p.read_bytes() + str(p).encode() for p in path.rglob("*") if p.is_file())


def test_export_holds_nothing_of_another_account(filled, tmp_path):
    server = filled
    # Bob shares a folder with Alice (RFC 4314): she can read it, but it is not her mail.
    m = imap(server, BOB)
    ok(m.create("Team"))
    ok(m.append("Team", None, None, msg(f"team {BOB_MARKER}", f"{BOB_MARKER} shared\r\n")))
    ok(m.setacl("Team", ALICE, "lrs"))
    m.logout()
    m = imap(server, ALICE)
    assert any(b"Other Users/bob@example.test/Team" in line for line in ok(m.list()))
    m.logout()
    for fmt in FORMATS:
        path = target_path(tmp_path, fmt, f"alice-{fmt}")
        export(server, fmt, path)
        data = all_bytes(path)
        assert BOB_MARKER.encode() not in data, fmt
        assert b"to both" in data  # Alice's copy of the shared message is hers
    bob = target_path(tmp_path, "eml-zip", "bob")
    export(server, "eml-zip", bob, BOB)
    with zipfile.ZipFile(bob) as z:
        manifest = json.loads(z.read("trimaran-export.json"))
    assert sorted(m["file"] for m in manifest["messages"]) == [
        "INBOX/1.eml", "INBOX/2.eml", "Team/1.eml"]


def test_existing_targets_are_not_overwritten(filled, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("mine")
    (tmp_path / "x.zip").write_text("mine")
    for fmt, to in (("maildir", "full"), ("mbox", "full"), ("eml-zip", "x.zip")):
        proc = filled.cli("export", "--account", ALICE, "--format", fmt, "--to",
                          str(tmp_path / to), check=False)
        assert proc.returncode != 0 and proc.stderr.startswith(b"error: "), proc.stderr
    proc = filled.cli("export", "--account", ALICE, "--format", "maildir", "--mailbox", "Nope",
                      "--to", str(tmp_path / "nope"), check=False)
    assert proc.returncode != 0 and b'mailbox "Nope" not found' in proc.stderr, proc.stderr
    assert not (tmp_path / "nope").exists()
    assert (tmp_path / "full" / "keep").read_text() == "mine"
    assert (tmp_path / "x.zip").read_text() == "mine"


def import_fails(server, fmt, path, *needles):
    proc = server.cli("import", "--account", CAROL, "--format", fmt, "--from", str(path),
                      check=False)
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "panicked" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_input_is_reported_not_imported(filled, tmp_path):
    server = filled
    good = tmp_path / "good.zip"
    export(server, "eml-zip", good)

    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    import_fails(server, "eml-zip", truncated, str(truncated), "not a readable zip archive")
    assert server.mail_list(CAROL) == []

    # Zip slip: names that would leave the extraction directory are refused, the rest imported.
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escaped.eml", msg("escaped"))
        z.writestr("INBOX/../../up.eml", msg("up"))
        z.writestr("Folder/fine.eml", msg("fine"))
    err = import_fails(server, "eml-zip", evil, "../../escaped.eml: unsafe entry name",
                       "INBOX/../../up.eml: unsafe entry name")
    assert "2 message(s) or file(s) skipped" in err
    assert [(r["mailbox"], r["subject"]) for r in server.mail_list(CAROL)] == [
        ("Folder", "fine")]
    assert not list(tmp_path.parent.rglob("escaped.eml"))

    # A manifest whose hash does not match the entry (a body changed after export).
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "INBOX/1.eml":
                data = data.replace(b"quoting", b"QUOTING")
            dst.writestr(info, data)
    import_fails(server, "eml-zip", tampered, "INBOX/1.eml: content does not match")

    not_mbox = tmp_path / "notes.mbox"
    not_mbox.write_bytes(b"Subject: not an mbox\n\nplain text\n")
    import_fails(server, "mbox", not_mbox, str(not_mbox), "not an mbox file")

    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    os.mkdir(bytes(maildir) + b"/.bad\xffname")
    import_fails(server, "maildir", maildir, "not UTF-8")
    import_fails(server, "maildir", tmp_path / "nothing-here", "nothing-here")


def test_oversize_messages_are_skipped(filled, tmp_path):
    server = filled
    path = tmp_path / "all"
    export(server, "maildir", path)
    big = path / "cur" / "1.big:2,S"
    big.write_bytes(b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n")
    config = tmp_path / "small.toml"
    config.write_text("[smtp]\nmax_message_size = 4000\n")
    server.config = config
    err = import_fails(server, "maildir", path, "1.big:2,S: larger than the maximum message size")
    server.config = None
    assert "imported 9 message(s)" in err
    assert "big" not in {r["subject"] for r in server.mail_list(CAROL)}


def test_foreign_files_from_python_mailbox(filled, tmp_path):
    """Files written by another program (Python's mailbox, LF line ends): flags, keywords and
    folders come in; line ends become CRLF."""
    server = filled
    md = mailbox.Maildir(tmp_path / "Maildir", create=True)
    m1 = mailbox.MaildirMessage(b"Subject: one\n\nfirst\n")
    m1.set_flags("FS")
    m1.set_subdir("cur")
    md.add(m1)
    sub = md.add_folder("Projects.x")
    m2 = mailbox.MaildirMessage(b"Subject: two\n\nsecond\n")
    m2.set_flags("R")
    m2.set_subdir("cur")
    sub.add(m2)
    md.add(mailbox.MaildirMessage(b"Subject: new one\n\nunread\n"))
    server.cli("import", "--account", CAROL, "--format", "maildir", "--from",
               str(tmp_path / "Maildir"))

    mb = mailbox.mbox(tmp_path / "Old.mbox", create=True)
    m3 = mailbox.mboxMessage(b"Subject: three\n\nFrom the past\n")
    m3.set_flags("RA")
    m3.set_from("old@elsewhere.test", time.gmtime(1000000000))
    mb.add(m3)
    mb.flush()
    mb.close()
    server.cli("import", "--account", CAROL, "--format", "mbox", "--from",
               str(tmp_path / "Old.mbox"))

    got = {(r["mailbox"], r["subject"]): r for r in server.mail_list(CAROL)}
    assert set(got) == {("INBOX", "one"), ("INBOX", "new one"), ("Projects/x", "two"),
                        ("Old", "three")}
    assert server.mail_show(CAROL, got[("INBOX", "one")]["uid"]) == \
        b"Subject: one\r\n\r\nfirst\r\n"
    three = server.mail_show(CAROL, got[("Old", "three")]["uid"], "Old")
    assert b"Status" not in three and b"\r\nFrom the past\r\n" in three
    subject_of = {r["blake3"]: subject for (_, subject), r in got.items()}
    flags = {(name, subject_of[digest]): fl for (name, digest, fl, _) in state(server, CAROL)}
    assert flags[("INBOX", "one")] == {"\\Flagged", "\\Seen"}
    assert flags[("INBOX", "new one")] == frozenset()
    assert flags[("Projects/x", "two")] == {"\\Answered"}
    assert flags[("Old", "three")] == {"\\Seen", "\\Answered"}
    m = imap(server, CAROL)
    ok(m.select("Old", readonly=True))
    date = ok(m.fetch("1", "INTERNALDATE"))[0].decode()
    assert "09-Sep-2001 01:46:40 +0000" in date, date
    m.logout()


def test_help(filled):
    for cmd in ("export", "import"):
        out = filled.cli(cmd, "--help").stdout.decode()
        assert "--account" in out and "--format" in out and "eml-zip" in out




def test_corrupt_body_is_reported_and_left_out(filled, tmp_path):
    """G5: a body that fails its hash check is never exported; the rest is, and the export
    says what is missing and exits non-zero."""
    server = filled
    [row] = server.mail_list(ALICE, "Archive")
    literal = "X'{0}'" if server.backend == "sqlite" else "decode('{0}', 'hex')"
    server.sql(f"UPDATE blobs SET compression = 0, data = {literal.format(b'tampered'.hex())} "
               f"WHERE hash = '{row['blake3']}'")
    for fmt in FORMATS:
        path = target_path(tmp_path, fmt, f"c-{fmt}")
        proc = server.cli("export", "--account", ALICE, "--format", fmt, "--to", str(path),
                          check=False)
        err = proc.stderr.decode()
        assert proc.returncode != 0, err
        assert f"skipped: Archive UID {row['uid']}" in err and "exported 8 message(s)" in err
        data = all_bytes(path)
        assert b"tampered" not in data and b"Subject: archived" not in data
        assert b"Subject: deep" in data


def fetch_all(m, name):
    """(mailbox, BLAKE3 of the body, flags, internal date) of every message in one mailbox."""
    ok(m.select(quoted(mutf7(name)), readonly=True))
    out = Counter()
    data = ok(m.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])"))
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        text = head.decode()
        flags = frozenset(re.search(r"FLAGS \(([^)]*)\)", text).group(1).split()) - {"\\Recent"}
        date = re.search(r'INTERNALDATE "([^"]+)"', text).group(1)
        stamp = time.mktime(imaplib.Internaldate2tuple(f'INTERNALDATE "{date}"'.encode()))
        out[(name, blake3.blake3(body).hexdigest(), flags, stamp)] += 1
    return out


def test_dovecot_reads_the_maildir(filled):
    """Dovecot, the reference IMAP server, serves our Maildir export with the same folders,
    bodies, flags, keywords and internal dates as Trimaran."""
    if shutil.which("dovecot") is None:
        pytest.fail("Dovecot is the reference oracle; scripts/test installs dovecot-imapd")
    server = filled
    # Dovecot's own users must reach the files: not under pytest's private temporary directory.
    d = pathlib.Path(tempfile.mkdtemp(prefix="trimaran-export-oracle-"))
    try:
        d.chmod(0o755)
        (port,) = free_ports(1)
        (d / "dovecot.conf").write_text(dovecot_config(d, port))
        (d / "passwd").write_text(f"oracle:{{PLAIN}}{PASSWORD}::::::\n")
        export(server, "maildir", d / "home" / "oracle" / "Maildir")
        subprocess.run(["chown", "-R", "vmail:vmail", str(d / "home")], check=True)
        subprocess.run(["dovecot", "-c", str(d / "dovecot.conf")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (d / "dovecot.log").read_text()
                time.sleep(0.1)
        ref = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        ref.login("oracle", PASSWORD)
        theirs = {re.search(rb'"([^"]*)"$|(\S+)$', line).group(0).decode().strip('"')
                  for line in ok(ref.list())}
        # Dovecot has no escape for "." in a Maildir++ level: it shows our %2E as it is.
        assert theirs == (folders(server, ALICE) - {"Lists.rust"}) | {"Lists%2Erust"}
        ours = imap(server)
        names = {r["mailbox"] for r in server.mail_list(ALICE)} - {"Lists.rust"}
        for name in names:
            expected = fetch_all(ours, name)
            assert fetch_all(ref, name) == expected, name
        ref.logout()
        ours.logout()
    finally:
        subprocess.run(["doveadm", "-c", str(d / "dovecot.conf"), "stop"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
