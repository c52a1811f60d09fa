"""IMAP4rev2/IMAP4rev1 (RFC 9051, RFC 3501) and extensions, with Python's imaplib and raw
sockets, on SQLite and PostgreSQL."""

import imaplib
import re
import smtplib
import socket
import ssl
import threading
import time
import zlib

import blake3
import pytest

from smtpwire import unverified_context, wait_until

pytestmark = pytest.mark.timeout(120)

PASSWORD = "imap secret"
ALICE = "alice@example.test"


def send(server, body, to=ALICE, sender="bob@elsewhere.test"):
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        s.sendmail(sender, [to], body)


def message(i, subject=None, extra=""):
    subject = subject or f"message {i}"
    return (f"From: Bob <bob@elsewhere.test>\r\nTo: Alice <alice@example.test>\r\n"
            f"Subject: {subject}\r\nDate: Tue, 24 Nov 2026 10:0{i % 10}:00 +0000\r\n"
            f"Message-ID: <m{i}@elsewhere.test>\r\n{extra}\r\nbody of message {i}\r\n").encode()


@pytest.fixture
def box(make_server):
    server = make_server(accounts=())
    server.add_account(ALICE, PASSWORD)
    for i in range(1, 4):
        send(server, message(i))
    return server


def connect(server, implicit=False):
    if implicit:
        return imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=unverified_context(), timeout=30)
    m = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    m.starttls(ssl_context=unverified_context())
    return m


def login(server, implicit=False, user=ALICE):
    m = connect(server, implicit)
    m.login(user, PASSWORD)
    return m


def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


class Raw:
    """A raw IMAP client over TLS, for exact wire checks."""

    def __init__(self, server, login_as=ALICE):
        sock = socket.create_connection(("127.0.0.1", server.imaps_port), timeout=30)
        self.s = unverified_context().wrap_socket(sock)
        self.f = self.s.makefile("rb")
        self.n = 0
        self.greeting = self.f.readline()
        if login_as:
            self.cmd(f'LOGIN "{login_as}" "{PASSWORD}"')

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        return self.f.readline()

    def cmd(self, text, expect="OK"):
        """Sends one command; returns (untagged lines with literals inlined, tagged line)."""
        self.n += 1
        tag = f"t{self.n}"
        self.send(f"{tag} {text}\r\n")
        return self.read_until(tag, expect)

    def read_until(self, tag, expect="OK"):
        lines = []
        while True:
            line = self.f.readline()
            assert line, "connection closed"
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            while m:
                line += self.f.read(int(m.group(1)))
                more = self.f.readline()
                line += more
                m = re.search(rb"\{(\d+)\}\r\n$", more)
            if line.startswith(tag.encode() + b" "):
                if expect:
                    assert line.split()[1].decode() == expect, (line, lines)
                return lines, line
            lines.append(line)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def test_greeting_capabilities_and_logindisabled_before_tls(box):
    m = imaplib.IMAP4("127.0.0.1", box.imap_port, timeout=30)
    caps = m.capabilities
    assert "STARTTLS" in caps and "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps
    with pytest.raises(imaplib.IMAP4.error):
        m._simple_command("LOGIN", ALICE, PASSWORD)
    m.starttls(ssl_context=unverified_context())
    typ, data = m.capability()
    caps = data[0].decode().split()
    for cap in ["IMAP4rev1", "IMAP4rev2", "AUTH=PLAIN", "SASL-IR", "IDLE", "UIDPLUS", "MOVE",
                "CONDSTORE", "QRESYNC", "ESEARCH", "SPECIAL-USE", "LITERAL+", "UTF8=ACCEPT"]:
        assert cap in caps, cap
    assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps
    m.login(ALICE, PASSWORD)
    m.logout()


def test_wrong_password_and_authenticate_plain(box):
    m = connect(box)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login(ALICE, "wrong")
    m.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode())
    assert m.state == "AUTH"
    m.logout()


def test_select_fetch_and_flags(box):
    m = login(box, implicit=True)
    data = ok(m.select("INBOX"))
    assert data == [b"3"]
    assert m.untagged_responses.get("UIDVALIDITY")
    data = ok(m.fetch("1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)"))
    assert len(data) == 3
    assert b"UID 1 " in data[0] and b"FLAGS ()" in data[0]
    body = ok(m.fetch("2", "(BODY.PEEK[])"))[0][1]
    assert b"Subject: message 2" in body and b"body of message 2" in body
    flags = ok(m.fetch("2", "(FLAGS)"))[0]
    assert b"\\Seen" not in flags, "PEEK must not set \\Seen"
    ok(m.fetch("2", "(BODY[TEXT])"))
    assert b"\\Seen" in ok(m.fetch("2", "(FLAGS)"))[0]
    ok(m.store("1", "+FLAGS", "(\\Flagged $Work)"))
    resp = ok(m.fetch("1", "(FLAGS)"))[0]
    assert b"\\Flagged" in resp and b"$Work" in resp
    ok(m.store("1", "-FLAGS", "($Work)"))
    assert b"$Work" not in ok(m.fetch("1", "(FLAGS)"))[0]
    hdr = ok(m.fetch("3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])"))[0][1]
    assert hdr == b"From: Bob <bob@elsewhere.test>\r\nSubject: message 3\r\n\r\n"
    env = ok(m.fetch("3", "(ENVELOPE)"))[0]
    assert b'"message 3"' in env and b'(("Bob" NIL "bob" "elsewhere.test"))' in env
    bs = ok(m.fetch("3", "(BODYSTRUCTURE)"))[0]
    assert bs.startswith(b'3 (BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit"'), bs
    m.logout()


def test_bad_input_is_answered_and_changes_nothing(box):
    r = Raw(box)
    _, tagged = r.cmd("SELECT INBOX")
    for bad in ["FETCH 99 (FLAGS)", "FETCH 1 (BOGUS)", "STORE 1 +FLAGS (\\Bogus)", "FETCH",
                "UID FETCH 1:* (BODY[1.MIME]<0.-1>)", "SEARCH CHARSET KOI8-R TEXT x"]:
        r.n += 1
        r.send(f"t{r.n} {bad}\r\n")
        _, tagged = r.read_until(f"t{r.n}", expect=None)
        assert tagged.split()[1] in (b"BAD", b"NO"), (bad, tagged)
    r.send(b"* NOOP\r\n")
    assert r.line().startswith(b"* BAD")
    r.send(b"t99 LOGIN {5}\r\n")
    assert r.line().startswith(b"+ ")
    r.send(b"alice pw\r\n")
    assert r.line().startswith(b"t99 BAD")  # already authenticated
    r.send(b"\xff\xfe NOOP\r\n")
    assert b"BAD" in r.line()
    lines, _ = r.cmd("FETCH 1:* (FLAGS)")
    assert len(lines) == 3
    r.close()


def test_append_uidplus_and_literal_plus(box):
    r = Raw(box)
    msg = b"From: alice@example.test\r\nSubject: draft\r\n\r\nhello\r\n"
    r.send(f"a1 APPEND Drafts (\\Draft \\Seen) \" 1-Jan-2026 10:00:00 +0100\" {{{len(msg)}+}}\r\n".encode()
           + msg + b"\r\n")
    _, tagged = r.read_until("a1")
    m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", tagged)
    assert m and m.group(2) == b"1", tagged
    lines, _ = r.cmd("SELECT Drafts")
    assert any(b"1 EXISTS" in l for l in lines)
    lines, _ = r.cmd("FETCH 1 (FLAGS INTERNALDATE BODY.PEEK[])")
    assert b"\\Draft" in lines[0] and b'"01-Jan-2026 09:00:00 +0000"' in lines[0]
    assert msg in lines[0]
    # A synchronising literal: the server asks for the data.
    r.send(f"a2 APPEND Drafts {{{len(msg)}}}\r\n".encode())
    assert r.line().startswith(b"+ ")
    r.send(msg + b"\r\n")
    _, tagged = r.read_until("a2")
    assert b"APPENDUID" in tagged
    # MULTIAPPEND: several messages in one command (RFC 3502).
    r.send(f"a3 APPEND Drafts {{{len(msg)}+}}\r\n".encode() + msg + f" {{{len(msg)}+}}\r\n".encode() + msg + b"\r\n")
    _, tagged = r.read_until("a3")
    assert b"APPENDUID" in tagged and b" 3:4]" in tagged, tagged
    r.cmd("NOOP")
    # Nonexistent mailbox: TRYCREATE.
    r.send(f"a4 APPEND Nope {{{len(msg)}+}}\r\n".encode() + msg + b"\r\n")
    _, tagged = r.read_until("a4", expect="NO")
    assert b"TRYCREATE" in tagged
    r.close()


def test_appendlimit_refuses_oversize_literal(make_server):
    server = make_server(accounts=())
    server.add_account(ALICE, PASSWORD)
    r = Raw(server)
    r.send(b"a1 APPEND INBOX {999999999}\r\n")
    line = r.line()
    assert line.startswith(b"a1 NO [TOOBIG]"), line
    r.cmd("NOOP")
    r.close()


def test_mailboxes_create_rename_delete_subscribe_special_use(box):
    m = login(box)
    ok(m.create("Projects/2026/Q4"))
    data = ok(m.list('""', "*"))
    names = [d.decode() for d in data]
    assert any('"Projects/2026/Q4"' in n or "Projects/2026/Q4" in n for n in names), names
    assert any("\\Sent" in n and "Sent" in n for n in names)
    assert any("Projects" in n and "\\HasChildren" in n for n in names)
    typ, data = m.delete("Projects")
    assert typ == "NO" and b"HASCHILDREN" in data[0]
    ok(m.rename("Projects", "Work"))
    names = b" ".join(ok(m.list('""', "Work/*")))
    assert b"Work/2026/Q4" in names and b"Projects" not in names
    assert ok(m.list('""', "%")) and b"Work/2026" not in b" ".join(ok(m.list('""', "%")))
    ok(m.subscribe("Work/2026/Q4"))
    assert b"Work/2026/Q4" in b" ".join(ok(m.lsub('""', "*")))
    ok(m.unsubscribe("Work/2026/Q4"))
    assert b"Work/2026/Q4" not in b" ".join(ok(m.lsub('""', "*")))
    ok(m.delete("Work/2026/Q4"))
    ok(m.delete("Work/2026"))
    ok(m.delete("Work"))
    typ, data = m.create("INBOX")
    assert typ == "NO"
    typ, _ = m.delete("INBOX")
    assert typ == "NO"
    typ, data = m.select("Nope")
    assert typ == "NO" and b"NONEXISTENT" in data[0]
    m.logout()


def test_international_mailbox_names_utf7_and_utf8(box):
    r = Raw(box)
    r.cmd('CREATE "&vBvHQA- &07jJwNVo-/&ZeVnLIqe-"')  # 받은 편지함/日本語 in modified UTF-7
    lines, _ = r.cmd('LIST "" "*"')
    assert any(b'"&vBvHQA- &07jJwNVo-/&ZeVnLIqe-"' in l for l in lines), lines
    r.cmd("ENABLE UTF8=ACCEPT")
    lines, _ = r.cmd('LIST "" "*"')
    assert any("받은 편지함/日本語".encode() in l for l in lines), "".join(l.decode("utf-8", "replace") for l in lines)
    r.cmd('CREATE "Ελληνικά"'.encode().decode())
    r.close()
    r = Raw(box)
    lines, _ = r.cmd('LIST "" "*"')
    assert any(b"&A5UDuwO7A7cDvQO5A7oDrA-" in l for l in lines), lines
    r.close()


def test_names_with_a_multibyte_character_where_inbox_would_end(box):
    """"INBOXü" and "INBOü": the check for an INBOX prefix must not cut a character in two."""
    r = Raw(box)
    r.cmd('CREATE "INBOX&APw-"')
    r.cmd('CREATE "INBO&APw-"')
    lines, _ = r.cmd('LIST "" "INBO&APw-*"')
    assert any(b'"INBO&APw-"' in l for l in lines), lines
    lines, _ = r.cmd('LIST "" "INBOX&APw-"')
    assert any(b'"INBOX&APw-"' in l for l in lines), lines
    r.cmd("ENABLE UTF8=ACCEPT")
    r.cmd('SELECT "INBOXü"')
    r.close()


def test_utf8_append_takes_only_a_literal8(box):
    """RFC 6855 §4: APPEND's UTF8 form carries a literal8 (~{n}). A plain literal there is a
    syntax error and stores nothing: it would let a NUL through outside a literal8 (found by
    fuzzing)."""
    r = Raw(box)
    r.cmd("ENABLE UTF8=ACCEPT")
    body = b"Subject: x\r\n\r\n\x00\x00\r\n"
    r.n += 1
    r.send(f"t{r.n} APPEND INBOX UTF8 ({{{len(body)}+}}\r\n".encode() + body + b")\r\n")
    _, tagged = r.read_until(f"t{r.n}", "BAD")
    lines, _ = r.cmd("STATUS INBOX (MESSAGES)")
    assert b"MESSAGES 3" in lines[0], (tagged, lines)
    r.n += 1
    r.send(f"t{r.n} APPEND INBOX UTF8 (~{{{len(body)}+}}\r\n".encode() + body + b")\r\n")
    r.read_until(f"t{r.n}", "OK")
    lines, _ = r.cmd("STATUS INBOX (MESSAGES)")
    assert b"MESSAGES 4" in lines[0], lines
    r.close()


def test_status_and_list_status(box):
    m = login(box)
    data = ok(m.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY SIZE HIGHESTMODSEQ DELETED)"))
    text = data[0].decode()
    assert "MESSAGES 3" in text and "UNSEEN 3" in text and "UIDNEXT 4" in text and "DELETED 0" in text
    size = int(re.search(r"SIZE (\d+)", text).group(1))
    assert size > 3 * 100
    r = Raw(box)
    lines, _ = r.cmd('LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN) SPECIAL-USE)')
    assert any(l.startswith(b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 3)') for l in lines), lines
    r.close()
    m.logout()


def test_copy_move_expunge_uidplus(box):
    r = Raw(box)
    r.cmd("SELECT INBOX")
    _, tagged = r.cmd("UID COPY 1:2 Archive")
    assert re.search(rb"\[COPYUID \d+ 1:2 1:2\] ", tagged), tagged
    lines, _ = r.cmd("UID MOVE 3 Archive")
    assert re.match(rb"\* OK \[COPYUID \d+ 3 3\]", lines[0]), lines
    assert lines[1:] == [b"* 3 EXPUNGE\r\n"], lines
    _, tagged = r.cmd("COPY 1 Nope", expect="NO")
    assert b"TRYCREATE" in tagged
    r.close()
    m = login(box)
    assert ok(m.select("Archive")) == [b"3"]
    ok(m.select("INBOX"))
    ok(m.store("1", "+FLAGS", "\\Deleted"))
    data = ok(m.expunge())
    assert data == [b"1"]
    assert ok(m.select("INBOX")) == [b"1"]
    ok(m.store("1", "+FLAGS", "\\Deleted"))
    ok(m.close())
    assert ok(m.select("INBOX")) == [b"0"]
    m.logout()


def test_search_keys_and_esearch(box):
    send(box, message(4, subject="=?UTF-8?B?7ZWc6riA66Gc65CcIOygnOuqqQ==?=",
                      extra="Content-Type: text/plain; charset=utf-8\r\n"))
    m = login(box)
    ok(m.select("INBOX"))
    ok(m.store("2", "+FLAGS", "\\Seen"))
    assert ok(m.search(None, "ALL")) == [b"1 2 3 4"]
    assert ok(m.search(None, "SEEN")) == [b"2"]
    assert ok(m.search(None, "UNSEEN")) == [b"1 3 4"]
    assert ok(m.search(None, "SUBJECT", '"MESSAGE 3"')) == [b"3"]
    assert ok(m.search(None, "FROM", "bob")) == [b"1 2 3 4"]
    assert ok(m.search(None, "BODY", "message 2")) == [b"2"]
    assert ok(m.search(None, "OR", "SEEN", "SUBJECT", '"message 1"')) == [b"1 2"]
    assert ok(m.search(None, "NOT", "SEEN", "1:2")) == [b"1"]
    assert ok(m.uid("SEARCH", "UID", "2:*")) == [b"2 3 4"]
    assert ok(m.search(None, "LARGER", "10", "SMALLER", "100000")) == [b"1 2 3 4"]
    assert ok(m.search(None, "SINCE", "1-Jan-2020")) == [b"1 2 3 4"]
    assert ok(m.search(None, "BEFORE", "1-Jan-2020")) == [b""]
    # Korean: a two-syllable query inside a longer word of an encoded-word subject.
    m.literal = "글로".encode()
    assert ok(m.search("UTF-8", "SUBJECT")) == [b"4"]
    r = Raw(box)
    r.cmd("SELECT INBOX")
    lines, _ = r.cmd("SEARCH RETURN (MIN MAX COUNT) ALL")
    assert lines == [b'* ESEARCH (TAG "t3") MIN 1 MAX 4 COUNT 4\r\n'], lines
    lines, _ = r.cmd("UID SEARCH RETURN (SAVE) SEEN")
    assert lines == []
    lines, _ = r.cmd("FETCH $ (UID)")
    assert lines == [b"* 2 FETCH (UID 2)\r\n"], lines
    r.close()
    m.logout()


def test_two_sessions_see_each_others_changes_and_idle(box):
    a = Raw(box)
    b = Raw(box)
    a.cmd("SELECT INBOX")
    b.cmd("SELECT INBOX")
    a.cmd("STORE 1 +FLAGS.SILENT (\\Flagged)")
    lines, _ = b.cmd("NOOP")
    assert any(b"FETCH" in l and b"\\Flagged" in l for l in lines), lines
    # IDLE wakes on a delivery within a second.
    b.send(b"i1 IDLE\r\n")
    assert b.line().startswith(b"+ ")
    start = time.monotonic()
    send(box, message(9))
    line = b.line()
    elapsed = time.monotonic() - start
    assert line == b"* 4 EXISTS\r\n", line
    assert elapsed < 1.5, elapsed
    b.send(b"DONE\r\n")
    b.read_until("i1")
    # An expunge in one session reaches the other as EXPUNGE.
    a.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
    a.cmd("EXPUNGE")
    lines, _ = b.cmd("NOOP")
    assert b"* 2 EXPUNGE\r\n" in lines, lines
    a.close()
    b.close()


@pytest.mark.parametrize("across", [False, True], ids=["one-process", "two-processes"])
def test_interleaved_stores_see_each_other(make_server, backend, across):
    """A session skips asking the store for changes after its own STORE when that STORE took the
    account's next MODSEQ; every change by another session (same process or, on PostgreSQL,
    another one) must still be reported, in the STORE's own answer or at the next command."""
    if across and backend != "postgres":
        pytest.skip("processes share a store only on PostgreSQL")
    first = make_server(accounts=())
    first.add_account(ALICE, PASSWORD)
    for i in range(1, 4):
        send(first, message(i))
    second = make_server(accounts=(), domain=None, share_store_of=first) if across else first
    a, b = Raw(first), Raw(second)
    a.cmd("ENABLE CONDSTORE")
    a.cmd("SELECT INBOX")
    b.cmd("SELECT INBOX")

    def reported(lines):
        """{message number: (flags, MODSEQ or None)} from untagged FETCH lines."""
        out = {}
        for line in lines:
            m = re.match(rb"\* (\d+) FETCH \(.*FLAGS \(([^)]*)\)(?: MODSEQ \((\d+)\))?", line)
            if m:
                out[int(m.group(1))] = (m.group(2), m.group(3) and int(m.group(3)))
        return out

    # a's change is the account's next: its answer reports its own message only.
    lines, _ = a.cmd("STORE 1 +FLAGS (\\Flagged)")
    got = reported(lines)
    assert list(got) == [1] and got[1][0] == b"\\Flagged", lines
    modseq_a = got[1][1]
    # b has not seen a's change: its STORE answer carries both.
    lines, _ = b.cmd("STORE 2 +FLAGS (\\Seen)")
    got = reported(lines)
    assert got[1][0] == b"\\Flagged" and got[2][0] == b"\\Seen", lines
    # a skipped the notice of its own change, not b's.
    lines, _ = a.cmd("NOOP")
    got = reported(lines)
    assert got[2][0] == b"\\Seen" and got[2][1] > modseq_a, lines
    # Several changes in a row by a; b then sees their end state.
    for op in ("-FLAGS", "+FLAGS", "-FLAGS", "+FLAGS"):
        a.cmd(f"STORE 3 {op}.SILENT ($Label1)")
    lines, _ = b.cmd("NOOP")
    assert reported(lines)[3][0] == b"$Label1", lines
    # a's view, a fresh session's and the store's agree.
    c = Raw(second)
    c.cmd("ENABLE CONDSTORE")
    c.cmd("SELECT INBOX")
    want = {1: b"\\Flagged", 2: b"\\Seen", 3: b"$Label1"}
    seen_by_a = reported(a.cmd("FETCH 1:3 (FLAGS MODSEQ)")[0])
    seen_by_c = reported(c.cmd("FETCH 1:3 (FLAGS MODSEQ)")[0])
    assert {n: f for n, (f, _) in seen_by_a.items()} == want, seen_by_a
    assert seen_by_a == seen_by_c
    for r in (a, b, c):
        r.close()


def test_condstore_and_qresync(box):
    r = Raw(box)
    r.cmd("ENABLE QRESYNC")
    lines, _ = r.cmd("SELECT INBOX")
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"".join(lines)).group(1))
    validity = int(re.search(rb"UIDVALIDITY (\d+)", b"".join(lines)).group(1))
    lines, _ = r.cmd("STORE 1 +FLAGS (\\Seen)")
    ms1 = int(re.search(rb"MODSEQ \((\d+)\)", lines[0]).group(1))
    assert ms1 > hms
    _, tagged = r.cmd(f"STORE 1 (UNCHANGEDSINCE {hms}) +FLAGS (\\Answered)")
    assert b"[MODIFIED 1]" in tagged, tagged
    lines, _ = r.cmd(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})")
    assert len(lines) == 1 and b"UID 1" in lines[0] and b"MODSEQ" in lines[0], lines
    r.cmd("STORE 3 +FLAGS.SILENT (\\Deleted)")
    lines, _ = r.cmd("EXPUNGE")
    assert b"* VANISHED 3\r\n" in lines, lines
    r.cmd("UNSELECT")
    lines, _ = r.cmd(f"SELECT INBOX (QRESYNC ({validity} {hms}))")
    assert b"* VANISHED (EARLIER) 3\r\n" in lines, lines
    assert any(b"FETCH (UID 1" in l for l in lines), lines
    r.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_idle_sees_another_process_on_the_same_store(make_server, backend):
    first = make_server(accounts=())
    first.add_account(ALICE, PASSWORD)
    second = make_server(accounts=(), domain=None, share_store_of=first)
    b = Raw(second)
    b.cmd("SELECT INBOX")
    b.send(b"i1 IDLE\r\n")
    assert b.line().startswith(b"+ ")
    start = time.monotonic()
    send(first, message(1))
    line = b.line()
    elapsed = time.monotonic() - start
    assert line == b"* 1 EXISTS\r\n"
    # Through PostgreSQL's NOTIFY, not the other process's polling.
    assert elapsed < 1.0, elapsed
    print(f"IDLE woke {elapsed * 1000:.0f} ms after a delivery through the other process")
    # Flag changes and expunges made through the other process wake it too (RFC 2177: the
    # server sends untagged FETCH and EXPUNGE while idling).
    a = Raw(first)
    a.cmd("SELECT INBOX")
    start = time.monotonic()
    a.cmd("UID STORE 1 +FLAGS.SILENT (\\Flagged)")
    line = b.line()
    assert line.startswith(b"* 1 FETCH (") and b"\\Flagged" in line, line
    assert time.monotonic() - start < 1.0
    start = time.monotonic()
    a.cmd("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.cmd("EXPUNGE")
    # The \\Deleted change may be reported or folded into the expunge that follows it.
    line = b.line()
    if line.startswith(b"* 1 FETCH ("):
        line = b.line()
    assert line == b"* 1 EXPUNGE\r\n", line
    assert time.monotonic() - start < 1.0
    b.send(b"DONE\r\n")
    assert b.read_until("i1")[1].startswith(b"i1 OK")
    a.close()
    b.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_reselect_sees_changes_made_by_another_process(make_server, backend):
    """SELECT reuses the message list of an unchanged mailbox: a change made through another
    process on the same store (flags, expunge, new mail) must still show at the next SELECT."""
    first = make_server(accounts=())
    first.add_account(ALICE, PASSWORD)
    for i in range(1, 4):
        send(first, message(i))
    second = make_server(accounts=(), domain=None, share_store_of=first)
    a, b = login(first), login(second)
    for _ in range(2):
        assert ok(a.select("INBOX")) == [b"3"]
        assert ok(a.fetch("1:3", "(UID FLAGS)")) == [b"1 (UID 1 FLAGS ())", b"2 (UID 2 FLAGS ())",
                                                     b"3 (UID 3 FLAGS ())"]
    ok(b.select("INBOX"))
    ok(b.uid("STORE", "1", "+FLAGS", "(\\Flagged)"))
    assert ok(a.select("INBOX")) == [b"3"]
    assert ok(a.fetch("1", "(UID FLAGS)")) == [b"1 (UID 1 FLAGS (\\Flagged))"]
    ok(b.uid("STORE", "2", "+FLAGS", "(\\Deleted)"))
    ok(b.expunge())
    assert ok(a.select("INBOX")) == [b"2"]
    assert ok(a.fetch("1:2", "(UID)")) == [b"1 (UID 1)", b"2 (UID 3)"]
    send(second, message(4))
    assert ok(a.select("INBOX")) == [b"3"]
    assert ok(a.fetch("3", "(UID)")) == [b"3 (UID 4)"]
    a.logout()
    b.logout()


def test_per_account_session_limit(make_server, tmp_path):
    config = tmp_path / "limits.toml"
    config.write_text("[imap]\nmax_sessions_per_account = 2\n")
    server = make_server(accounts=(), start=False)
    server.config = config
    server.add_account(ALICE, PASSWORD)
    server.start()
    first, second = Raw(server), Raw(server)
    third = Raw(server, login_as=None)
    _, tagged = third.cmd(f'LOGIN "{ALICE}" "{PASSWORD}"', expect="NO")
    assert b"[LIMIT]" in tagged
    first.cmd("LOGOUT")
    first.close()
    time.sleep(0.2)
    third.cmd(f'LOGIN "{ALICE}" "{PASSWORD}"')
    for s in (second, third):
        s.close()


def test_korean_and_legacy_charset_search(box):
    """Substring search over decoded text: a two-syllable Hangul query finds the word inside
    longer words, in UTF-8 and EUC-KR mail; ISO-2022-JP and ISO-8859-1 bodies are decoded."""
    import base64
    euc_subject = base64.b64encode("주간 회의록 안녕하세요".encode("euc-kr")).decode()
    send(box, (f"From: kim@example.kr\r\nSubject: =?EUC-KR?B?{euc_subject}?=\r\n"
               "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=EUC-KR\r\n"
               "Content-Transfer-Encoding: 8bit\r\n\r\n").encode()
         + "회의 내용: 반갑습니다 여러분\r\n".encode("euc-kr"))                                  # 4
    send(box, ("From: lee@example.kr\r\nSubject: utf-8\r\nMIME-Version: 1.0\r\n"
               "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               + base64.b64encode("대한민국의 수도는 서울특별시입니다".encode()).decode() + "\r\n").encode())  # 5
    send(box, b"From: taro@example.jp\r\nSubject: jis\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: text/plain; charset=ISO-2022-JP\r\n\r\n"
         + "こんにちは世界の皆さん\r\n".encode("iso2022_jp"))                                      # 6
    send(box, b"From: fr@example.fr\r\nSubject: =?ISO-8859-1?Q?caf=E9?=\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
              b"Cr=E8me BR=DBL=C9E\r\n")                                                         # 7
    m = login(box)
    ok(m.select("INBOX"))

    def search(*criteria):
        m.literal = None
        args = []
        for c in criteria:
            if isinstance(c, str) and not c.isascii():
                m.literal = c.encode()
            elif " " in c:
                args.append(f'"{c}"')
            else:
                args.append(c)
        return ok(m.search("UTF-8", *args))[0].split()

    assert search("BODY", "갑습") == [b"4"]          # inside 반갑습니다 (EUC-KR body)
    assert search("SUBJECT", "녕하") == [b"4"]       # inside 안녕하세요 (EUC-KR encoded-word)
    assert search("BODY", "특별") == [b"5"]          # inside 서울특별시 (UTF-8, base64)
    assert search("TEXT", "世界") == [b"6"]          # ISO-2022-JP
    assert search("BODY", "brûlée") == [b"7"]       # ISO-8859-1, case-insensitive
    assert search("SUBJECT", "CAFÉ") == [b"7"]
    assert search("BODY", "ody of mess") == [b"1", b"2", b"3"]  # substring, not word
    assert search("BODY", "서울") == [b"5"]
    assert search("BODY", "없는말") == []
    m.logout()


def test_search_is_answered_from_the_index_not_the_bodies(box):
    """With every stored body removed, text search still answers (from the index), while
    fetching a body reports the store's trouble."""
    m = login(box)
    ok(m.select("INBOX"))
    assert ok(m.search(None, "BODY", '"of message 2"')) == [b"2"]
    box.sql("DELETE FROM blobs")
    assert ok(m.search(None, "BODY", '"of message 2"')) == [b"2"]
    assert ok(m.search(None, "TEXT", '"message 3"')) == [b"3"]
    assert ok(m.search(None, "OR", "BODY", '"message 1"', "SUBJECT", '"message 3"')) == [b"1 3"]
    typ, data = m.fetch("2", "(BODY.PEEK[])")
    assert typ == "NO" and b"UNAVAILABLE" in data[0], data
    m.logout()


def test_search_stays_exact_while_the_index_is_rebuilt(box):
    """Messages missing from the text index (left by an older schema, or stored before the
    index existed) are checked against their text until the background indexer has them; after
    a restart it indexes them, from the body where no text was stored."""
    m = login(box)
    ok(m.select("INBOX"))
    if box.backend == "sqlite":
        box.sql("INSERT INTO text_index(text_index) VALUES('delete-all')")
        box.sql("INSERT OR IGNORE INTO search_backlog SELECT hash FROM mailbox_messages")
    else:
        box.sql("DELETE FROM text_index")
        box.sql("INSERT INTO search_backlog SELECT hash FROM mailbox_messages ON CONFLICT DO NOTHING")
    box.sql("DELETE FROM message_text WHERE hash IN "
            "(SELECT hash FROM mailbox_messages WHERE uid = 2)")
    assert ok(m.search(None, "BODY", '"of message 2"')) == [b"2"]
    assert ok(m.search(None, "SUBJECT", '"message 3"')) == [b"3"]
    assert ok(m.search(None, "TEXT", '"message"')) == [b"1 2 3"]
    m.logout()
    box.restart()
    deadline = time.time() + 30
    while int(box.sql("SELECT count(*) FROM search_backlog")[0][0]) > 0:
        assert time.time() < deadline, "the backlog was not indexed"
        time.sleep(0.2)
    assert int(box.sql("SELECT count(*) FROM message_text")[0][0]) == 3
    box.sql("DELETE FROM blobs")
    m = login(box)
    ok(m.select("INBOX"))
    assert ok(m.search(None, "BODY", '"of message 2"')) == [b"2"]
    assert ok(m.search(None, "SUBJECT", '"message 3"')) == [b"3"]
    assert ok(m.search(None, "TEXT", '"message"')) == [b"1 2 3"]
    m.logout()


def test_long_text_is_searchable_at_once_and_indexed_after_its_delivery(box):
    """A text/plain body of random words (an attachment sent as text, or spam) has far more
    index tokens than a delivery indexes before answering its sender: the delivery stores its
    text and the background indexer indexes it. SEARCH finds it before and after."""
    import random
    rnd = random.Random(7)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(30))
             for _ in range(600)]
    needle = words[300][5:17]
    body = "\r\n".join(" ".join(words[i:i + 2]) for i in range(0, len(words), 2))
    start = time.monotonic()
    send(box, message(4, subject="random words").replace(b"body of message 4", body.encode()))
    print(f"delivered in {(time.monotonic() - start) * 1000:.0f} ms")
    m = login(box)
    ok(m.select("INBOX"))
    assert ok(m.search(None, "BODY", f'"{needle}"')) == [b"4"]
    deadline = time.time() + 30
    while int(box.sql("SELECT count(*) FROM search_backlog")[0][0]) > 0:
        assert time.time() < deadline, "the backlog was not indexed"
        time.sleep(0.2)
    # Indexed: the answer no longer needs the text or the body.
    box.sql("DELETE FROM message_text")
    box.sql("DELETE FROM blobs")
    assert ok(m.search(None, "BODY", f'"{needle}"')) == [b"4"]
    assert ok(m.search(None, "BODY", f'"{words[3][:20]}"')) == [b"4"]
    m.logout()


def test_search_index_key_collision_is_checked_against_the_text(box):
    """The index names a message by the first 8 bytes of its hash. Should a second message
    share them (odds 2^-64 a pair), it is kept out of the index and always checked against its
    text, so the first message's words never make it a match."""
    raw = b"Subject: striped\r\n\r\nA zebra crossed.\r\n"
    digest = blake3.blake3(raw).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    other = "0" * 64
    giraffe = " ".join("b" + "giraffe"[i:].encode().hex() for i in range(6))
    if box.backend == "sqlite":
        box.sql(f"INSERT INTO text_index_keys (key, hash) VALUES ({key}, '{other}')")
        box.sql(f"INSERT INTO text_index (rowid, tokens) VALUES ({key}, '{giraffe}')")
    else:
        box.sql(f"INSERT INTO text_index (key, hash, tokens) VALUES "
                f"({key}, '{other}', array_to_tsvector(string_to_array('{giraffe}', ' ')))")
    m = login(box)
    ok(m.append("INBOX", None, None, raw))
    assert box.sql(f"SELECT count(*) FROM search_unindexable WHERE hash = '{digest.hex()}'")[0][0] in (1, "1")
    ok(m.select("INBOX"))
    assert ok(m.search(None, "BODY", "giraffe")) == [b""]
    assert ok(m.search(None, "BODY", "ebr")) == [b"4"]
    assert ok(m.search(None, "TEXT", "striped")) == [b"4"]
    m.logout()


def test_header_fetches_are_served_from_the_header_copy(box):
    """ENVELOPE and header sections come from the header block kept beside the metadata, so
    they need not read the body; messages without that copy (stored before it existed) are
    served from the body, with the same answer."""
    m = login(box)
    ok(m.select("INBOX"))
    items = "(ENVELOPE RFC822.HEADER BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[HEADER]<5.20>)"
    before = ok(m.fetch("1:3", items))
    box.sql("UPDATE message_meta SET header = NULL WHERE hash IN "
            "(SELECT hash FROM mailbox_messages WHERE uid = 1)")
    box.sql("DELETE FROM blobs WHERE hash IN (SELECT hash FROM mailbox_messages WHERE uid > 1)")
    assert ok(m.fetch("1:3", items)) == before
    typ, data = m.fetch("2", "(BODY.PEEK[TEXT])")
    assert typ == "NO" and b"UNAVAILABLE" in data[0], data
    typ, data = m.fetch("2", "(ENVELOPE BODY.PEEK[1])")
    assert typ == "NO" and b"UNAVAILABLE" in data[0], data
    m.logout()


def test_quota_getquotaroot_overquota_and_smtp_452(box):
    m = login(box)
    typ, data = m.getquotaroot("INBOX")
    assert typ == "OK" and data[0] == [b'"INBOX"'], data  # no limits: no quota root
    out = box.cli("account", "quota", ALICE, "--storage", "2K", "--messages", "5").stdout.decode()
    assert out.splitlines()[1].startswith("messages\t3\t5"), out
    typ, data = m.getquotaroot("INBOX")
    assert data[0] == [b'"INBOX" ""'], data
    assert re.fullmatch(rb'"" \(STORAGE [12] 2 MESSAGE 3 5\)', data[1][0]), data
    r = Raw(box)
    lines, _ = r.cmd('GETQUOTA ""')
    assert len(lines) == 1 and re.fullmatch(rb'\* QUOTA "" \(STORAGE [12] 2 MESSAGE 3 5\)\r\n', lines[0]), lines
    _, tagged = r.cmd('SETQUOTA "" (STORAGE 99999)', expect="NO")
    assert b"NOPERM" in tagged
    r.close()
    big = b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n"
    typ, data = m.append("INBOX", None, None, big)
    assert typ == "NO" and b"OVERQUOTA" in data[0], data
    ok(m.select("INBOX"))
    typ, data = m.copy("1:3", "Archive")
    assert typ == "NO" and b"OVERQUOTA" in data[0], data
    assert ok(m.select("Archive")) == [b"0"], "a refused COPY copies nothing"
    # Full: new mail waits with a temporary failure (RFC 3463 4.2.2) instead of bouncing.
    box.cli("account", "quota", ALICE, "--storage", "1K")
    with smtplib.SMTP("127.0.0.1", box.smtp_port) as s:
        s.ehlo()
        s.mail("bob@elsewhere.test")
        code, text = s.rcpt(ALICE)
        assert code == 452 and b"4.2.2" in text, (code, text)
    box.cli("account", "quota", ALICE, "--storage", "none", "--messages", "none")
    send(box, message(4))
    assert ok(m.select("INBOX")) == [b"4"]
    typ, data = m.status("INBOX", "(DELETED-STORAGE)")
    assert data[0].endswith(b"(DELETED-STORAGE 0)"), data
    m.logout()


def threaded_message(sender, subject, date, msgid, extra=""):
    date_line = f"Date: {date}\r\n" if date else ""
    return (f"From: {sender}\r\nTo: list@example.test\r\nSubject: {subject}\r\n{date_line}"
            f"Message-ID: <{msgid}>\r\n{extra}\r\nAbout {subject}.\r\n").encode()


def test_sort_and_thread(box):
    """RFC 5256 SORT and THREAD (and RFC 5957 DISPLAYFROM) on a conversation with a reply
    to a missing message, a forward, a mailing-list tag and a message with no Date."""
    m = login(box)
    ok(m.create("Threads"))
    mails = [
        ("Zed <zed@x.test>", "Plan", "Sun, 1 Nov 2026 10:00:00 +0000", "a@x", "", "10-Nov-2026"),
        ("alice <Alice@x.test>", "Re: Plan", "Tue, 3 Nov 2026 10:00:00 +0000", "b@x",
         "In-Reply-To: <a@x>\r\n", "09-Nov-2026"),
        ("Bob <bob@x.test>", "[list] Budget", "Mon, 2 Nov 2026 10:00:00 +0000", "c@x", "", "08-Nov-2026"),
        ("Xavier <carol@x.test>", "Re: Plan", "Thu, 5 Nov 2026 10:00:00 +0000", "d@x",
         "References: <a@x> <b@x>\r\n", "07-Nov-2026"),
        ("Dave <dave@x.test>", "Fwd: budget", None, "e@x", "", "04-Nov-2026"),
        ("=?UTF-8?B?w4ltaWxl?= <emile@x.test>", "Re: Lost", "Sat, 31 Oct 2026 10:00:00 +0000",
         "f@x", "References: <gone@x>\r\n", "06-Nov-2026"),
    ]
    sizes = []
    for sender, subject, date, msgid, extra, arrived in mails:
        data = threaded_message(sender, subject, date, msgid, extra) + b"x" * (len(sizes) * 37 % 100)
        sizes.append(len(data))
        ok(m.append("Threads", None, f'"{arrived} 12:00:00 +0000"', data))
    ok(m.select("Threads"))
    r = Raw(box)
    r.cmd("SELECT Threads")

    def sort(criteria, search="ALL", uid=""):
        lines, _ = r.cmd(f"{uid}SORT ({criteria}) UTF-8 {search}")
        assert len(lines) == 1 and lines[0].startswith(b"* SORT"), lines
        return lines[0].decode().split()[2:]

    assert sort("SUBJECT") == "3 5 6 1 2 4".split()
    assert sort("DATE") == "6 1 3 2 5 4".split()
    assert sort("REVERSE DATE") == "4 5 2 3 1 6".split()
    assert sort("FROM") == "2 3 4 5 6 1".split()
    assert sort("DISPLAYFROM") == "2 3 5 6 4 1".split()
    by_size = sorted(range(1, 7), key=lambda i: (sizes[i - 1], i))
    assert sort("SIZE") == [str(i) for i in by_size]
    assert sort("ARRIVAL", uid="UID ") == "5 6 4 3 2 1".split()
    assert sort("SUBJECT REVERSE DATE") == "5 3 6 4 2 1".split()
    assert sort("DATE", search="SUBJECT plan") == "1 2 4".split()
    assert sort("DATE", search="SUBJECT nothing-like-this") == []

    lines, _ = r.cmd("THREAD REFERENCES UTF-8 ALL")
    assert lines == [b"* THREAD (6)(1 2 4)(3 5)\r\n"], lines
    lines, _ = r.cmd("UID THREAD ORDEREDSUBJECT US-ASCII ALL")
    assert lines == [b"* THREAD (6)(1 (2)(4))(3 5)\r\n"], lines
    lines, _ = r.cmd("THREAD REFERENCES UTF-8 FROM nobody")
    assert lines == [b"* THREAD\r\n"], lines

    # RFC 8474 THREADID: one conversation, one id, in FETCH and in SEARCH.
    lines, _ = r.cmd("FETCH 1:6 (THREADID)")
    ids = [re.search(rb"THREADID \((T[0-9a-f]+)\)", l).group(1).decode() for l in lines]
    assert ids[0] == ids[1] == ids[3] and len(set(ids)) == 4, ids
    lines, _ = r.cmd(f"UID SEARCH THREADID {ids[0]}")
    assert lines[0].split()[-3:] in ([b"1", b"2", b"4"], [b"ALL", b"1:2,4"]), lines

    # Errors change nothing and say why (RFC 5256 §4: the charset is mandatory).
    for bad in ["SORT (FOO) UTF-8 ALL", "SORT () UTF-8 ALL", "SORT DATE UTF-8 ALL",
                "THREAD FOO UTF-8 ALL", "THREAD REFERENCES", "UID SORT (DATE) UTF-8"]:
        _, tagged = r.cmd(bad, expect="BAD")
    _, tagged = r.cmd("SORT (DATE) KOI8-R ALL", expect="NO")
    assert b"[BADCHARSET" in tagged, tagged
    r.cmd("UNSELECT")
    r.cmd("SORT (DATE) UTF-8 ALL", expect="BAD")
    caps = r.cmd("CAPABILITY")[0][0]
    for cap in [b" SORT ", b" SORT=DISPLAY ", b" THREAD=REFERENCES ", b" THREAD=ORDEREDSUBJECT "]:
        assert cap in caps, caps
    r.close()
    m.logout()


BOB = "bob@example.test"


def test_acl_sharing_between_accounts(box):
    """RFC 4314: Alice shares a folder with Bob, rights by rights; Bob never sees what is not
    shared (G4), and what he may do there is checked again at every command."""
    box.add_account(BOB, PASSWORD)
    bob_name = '"Other Users/alice@example.test/Team"'
    alice = Raw(box)
    bob = Raw(box, login_as=BOB)
    alice.cmd("CREATE Team")
    alice.cmd("CREATE Private")
    data = message(7, subject="team plan")
    alice.send(f"t800 APPEND Team {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    alice.read_until("t800")

    # Nothing shared yet: not listed, and indistinguishable from a mailbox that does not exist.
    lines, _ = bob.cmd('LIST "" "*"')
    assert not any(b"Other Users" in l for l in lines), lines
    for cmd in [f"SELECT {bob_name}", f"STATUS {bob_name} (MESSAGES)", f"MYRIGHTS {bob_name}",
                'SELECT "Other Users/alice@example.test/INBOX"',
                'GETACL "Other Users/alice@example.test/Private"']:
        _, tagged = bob.cmd(cmd, expect="NO")
        assert b"[NONEXISTENT]" in tagged, (cmd, tagged)

    # Bob may not change Alice's rights; Alice's grants are checked.
    _, tagged = alice.cmd("SETACL Team nobody@example.test lr", expect="NO")
    assert b"[CANNOT]" in tagged
    _, tagged = alice.cmd("SETACL Team anyone lr", expect="NO")
    assert b"[CANNOT]" in tagged
    alice.cmd("SETACL Team bob@example.test lrz", expect="BAD")
    alice.cmd("SETACL Team bob@example.test lr")
    lines, _ = alice.cmd("GETACL Team")
    assert lines == [b'* ACL "Team" "alice@example.test" "lrswipkxtea" "bob@example.test" "lr"\r\n'], lines
    lines, _ = alice.cmd("LISTRIGHTS Team bob@example.test")
    assert lines == [b'* LISTRIGHTS "Team" "bob@example.test" "" l r s w i p k x t e a\r\n'], lines
    lines, _ = alice.cmd("MYRIGHTS Team")
    assert lines == [b'* MYRIGHTS "Team" "lrswipkxtea"\r\n'], lines

    # Read-only sharing: listed in the other users' namespace, selectable read-only.
    lines, _ = bob.cmd("NAMESPACE")
    assert lines == [b'* NAMESPACE (("" "/")) (("Other Users/" "/")) NIL\r\n'], lines
    lines, _ = bob.cmd('LIST "" "*"')
    shared = [l for l in lines if b"Other Users" in l]
    assert b'"Other Users/alice@example.test/Team"' in b"".join(shared), shared
    assert not any(b"Private" in l or b"INBOX\"" in l and b"alice" in l for l in shared), shared
    lines, _ = bob.cmd(f"MYRIGHTS {bob_name}")
    assert lines[0].endswith(b' "lr"\r\n'), lines
    lines, tagged = bob.cmd(f"SELECT {bob_name}")
    assert b"[READ-ONLY]" in tagged and b"* 1 EXISTS\r\n" in lines, (lines, tagged)
    lines, _ = bob.cmd("FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)] FLAGS)")
    assert b"team plan" in lines[0] and b"\\Seen" not in lines[0], lines  # no "s": no \Seen
    _, tagged = bob.cmd("STORE 1 +FLAGS (\\Flagged)", expect="NO")
    _, tagged = bob.cmd("GETACL " + bob_name, expect="NO")
    assert b"[NOPERM]" in tagged
    _, tagged = bob.cmd(f"SETACL {bob_name} bob@example.test +lrswi", expect="NO")
    assert b"[NOPERM]" in tagged
    data = b"Subject: from bob\r\n\r\nhi\r\n"
    bob.send(f"t900 APPEND {bob_name} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    _, tagged = bob.read_until("t900", expect="NO")
    assert b"[NOPERM]" in tagged, tagged
    _, tagged = bob.cmd(f"DELETE {bob_name}", expect="NO")
    assert b"[NOPERM]" in tagged

    # More rights: flags and insert; the changes are Alice's and she sees them.
    alice.cmd("SETACL Team bob@example.test +swi")
    bob.cmd(f"SELECT {bob_name}")
    bob.cmd("STORE 1 +FLAGS (\\Flagged $Work)")
    _, tagged = bob.cmd("STORE 1 +FLAGS (\\Deleted)", expect="NO")
    assert b"[NOPERM]" in tagged, tagged
    bob.cmd("EXPUNGE", expect="NO")
    bob.send(f"t901 APPEND {bob_name} (\\Seen \\Deleted) {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    _, tagged = bob.read_until("t901")
    assert b"APPENDUID" in tagged, tagged
    lines, _ = bob.cmd("UID COPY 1 INBOX")  # out of the shared mailbox into his own
    alice.cmd("SELECT Team")
    lines, _ = alice.cmd("FETCH 1:* (FLAGS)")
    flags = b"".join(lines)
    assert b"\\Flagged" in flags and b"$Work" in flags, flags
    assert b"\\Deleted" not in flags, "no 't' right: \\Deleted was dropped from the APPEND"
    assert flags.count(b"FETCH") == 2, flags
    bob.cmd("SELECT INBOX")
    lines, _ = bob.cmd("SEARCH SUBJECT \"team plan\"")
    assert lines[0].strip() != b"* SEARCH", "the copy reached Bob's INBOX"
    lines, _ = bob.cmd(f"STATUS {bob_name} (MESSAGES)")
    assert lines[0].endswith(b"(MESSAGES 2)\r\n"), lines

    # Revoked while selected: the next command finds the mailbox closed.
    bob.cmd(f"SELECT {bob_name}")
    alice.cmd("DELETEACL Team bob@example.test")
    lines, tagged = bob.cmd("FETCH 1 (FLAGS)", expect="NO")
    assert b"[NOPERM]" in tagged and any(b"[CLOSED]" in l for l in lines), (lines, tagged)
    lines, _ = bob.cmd('LIST "" "*"')
    assert not any(b"Other Users" in l for l in lines), lines
    _, tagged = bob.cmd(f"STATUS {bob_name} (MESSAGES)", expect="NO")
    assert b"[NONEXISTENT]" in tagged
    # Also while idling: the revocation ends the IDLE.
    alice.cmd("SETACL Team bob@example.test lr")
    bob.cmd(f"SELECT {bob_name}")
    bob.send("t950 IDLE\r\n")
    assert bob.line().startswith(b"+"), "IDLE accepted"
    alice.cmd("DELETEACL Team bob@example.test")
    lines, tagged = bob.read_until("t950", expect="NO")
    assert b"[NOPERM]" in tagged and any(b"[CLOSED]" in l for l in lines), (lines, tagged)
    caps = alice.cmd("CAPABILITY")[0][0]
    assert b" ACL " in caps and b" RIGHTS=kxte " in caps, caps
    alice.close()
    bob.close()


class Deflated:
    """An IMAP session that has sent COMPRESS DEFLATE (RFC 4978): raw DEFLATE both ways."""

    def __init__(self, raw):
        self.raw = raw
        self.out = zlib.compressobj(wbits=-15)
        self.inp = zlib.decompressobj(wbits=-15)
        self.buf = b""
        self.n = 0

    def send(self, data):
        self.raw.send(self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH))

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.raw.s.recv(65536)
            assert chunk, "connection closed"
            self.buf += self.inp.decompress(chunk)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def read(self, n):
        while len(self.buf) < n:
            chunk = self.raw.s.recv(65536)
            assert chunk, "connection closed"
            self.buf += self.inp.decompress(chunk)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def cmd(self, text, expect="OK"):
        self.n += 1
        tag = f"z{self.n}"
        self.send(f"{tag} {text}\r\n".encode() if isinstance(text, str) else tag.encode() + b" " + text + b"\r\n")
        lines = []
        while True:
            line = self.line()
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if m:
                line += self.read(int(m.group(1))) + self.line()
            if line.startswith(tag.encode() + b" "):
                assert line.split()[1].decode() == expect, (line, lines)
                return lines, line
            lines.append(line)


def test_compress_deflate(box):
    r = Raw(box)
    assert b"COMPRESS=DEFLATE" in r.cmd("CAPABILITY")[0][0]
    r.cmd("COMPRESS LZW", expect="BAD")
    r.cmd("COMPRESS DEFLATE")
    # The raw socket is now only compressed data (the file reader must not be used).
    z = Deflated(r)
    z.cmd("COMPRESS DEFLATE", expect="NO")
    lines, _ = z.cmd("SELECT INBOX")
    assert b"* 3 EXISTS\r\n" in lines, lines
    # A body bigger than one inflate step, both ways.
    body = b"Subject: big\r\n\r\n" + b"".join(b"line %06d of a compressible body\r\n" % i for i in range(20000))
    z.send(f"z100 APPEND INBOX {{{len(body)}+}}\r\n".encode() + body + b"\r\n")
    tagged = z.line()
    while tagged.startswith(b"* "):
        tagged = z.line()
    assert tagged.startswith(b"z100 OK"), tagged
    lines, _ = z.cmd("FETCH 4 (BODY.PEEK[])")
    assert lines[0].endswith(body + b")\r\n"), lines[0][:200]
    lines, _ = z.cmd("SEARCH BODY \"line 019999\"")
    assert lines == [b"* ESEARCH (TAG \"z4\") ALL 4\r\n"] or lines == [b"* SEARCH 4\r\n"], lines
    z.cmd("LOGOUT")
    r.close()

    # A decompression bomb: a 16 MB line compresses to a few kilobytes. The server refuses
    # the line without holding it, and stays well.
    r = Raw(box)
    r.cmd("COMPRESS DEFLATE")
    z = Deflated(r)
    bomb = zlib.compressobj(wbits=-15)
    payload = bomb.compress(b"a" * 16_000_000) + bomb.flush(zlib.Z_SYNC_FLUSH)
    assert len(payload) < 100_000
    try:
        z.raw.send(payload)
        reply = z.line()
        assert b"BAD" in reply or b"BYE" in reply, reply
    except (OSError, AssertionError) as e:
        assert "connection closed" in str(e) or isinstance(e, OSError), e
    r.close()

    # Garbage instead of DEFLATE data ends the session, nothing else.
    r = Raw(box)
    r.cmd("COMPRESS DEFLATE")
    r.send(b"\xff" * 64)
    r.s.settimeout(10)
    try:
        while r.s.recv(4096):
            pass
    except OSError:
        pass
    r.close()
    m = login(box)
    ok(m.select("INBOX"))
    m.logout()
