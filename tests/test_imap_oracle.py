"""Reference oracle: the same tricky messages go to Dovecot (from Debian) and to Trimaran, and
their ENVELOPE, BODY, BODYSTRUCTURE, BODY[section] and BINARY answers are compared. Every
difference must be fixed or explained in data/mime/differences.json with the RFC reasoning
that shows Dovecot wrong; an explanation that no longer applies fails the test too."""

import json
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from harness import dovecot_config, free_ports
from smtpwire import unverified_context

pytestmark = pytest.mark.timeout(180)

DATA = pathlib.Path(__file__).parent / "data" / "mime"
PASSWORD = "oracle pass"

SECTIONS = ["", "HEADER", "TEXT", "1", "1.MIME", "2", "2.MIME", "3", "1.1", "1.2", "2.1", "2.2",
            "2.HEADER", "2.TEXT", "2.1.MIME", "1.1.1", "1.1.2", "1.2.MIME",
            "HEADER.FIELDS (SUBJECT FROM)", "HEADER.FIELDS.NOT (SUBJECT DATE)"]
ITEMS = (["ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822.SIZE"]
         + [f"BODY.PEEK[{s}]" for s in SECTIONS]
         + [f"BINARY.PEEK[{p}]" for p in ["1", "2", "1.1"]]
         + [f"BINARY.SIZE[{p}]" for p in ["1", "2"]])


class Client:
    def __init__(self, sock):
        self.s = sock
        self.f = sock.makefile("rb")
        self.n = 0
        self.f.readline()

    def cmd(self, text):
        self.n += 1
        tag = f"o{self.n}"
        self.s.sendall(f"{tag} ".encode() + (text if isinstance(text, bytes) else text.encode()) + b"\r\n")
        lines = []
        while True:
            line = self.f.readline()
            assert line, "connection closed"
            while (m := re.search(rb"\{(\d+)\}\r\n$", line)):
                line += self.f.read(int(m.group(1)))
                line += self.f.readline()
            if line.startswith(tag.encode() + b" "):
                return lines, line
            lines.append(line)

    def append(self, data):
        self.n += 1
        tag = f"o{self.n}"
        self.s.sendall(f"{tag} APPEND INBOX {{{len(data)}}}\r\n".encode())
        assert self.f.readline().startswith(b"+")
        self.s.sendall(data + b"\r\n")
        while True:
            line = self.f.readline()
            if line.startswith(tag.encode() + b" "):
                assert b" OK " in line, line
                return


def canonical(value):
    """Literals become quoted strings, so that only content and structure are compared."""
    out = bytearray()
    i = 0
    while i < len(value):
        m = re.compile(rb"~?\{(\d+)\}\r\n").match(value, i)
        if m:
            n = int(m.group(1))
            data = value[m.end():m.end() + n]
            out += b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
            i = m.end() + n
        elif value[i:i + 1] == b'"':
            j = i + 1
            while j < len(value) and value[j:j + 1] != b'"':
                j += 2 if value[j:j + 1] == b"\\" else 1
            out += value[i:j + 1]
            i = j + 1
        else:
            out += value[i:i + 1]
            i += 1
    return bytes(out)


def item_value(lines):
    fetches = [l for l in lines if re.match(rb"\* \d+ FETCH \(", l)]
    assert len(fetches) == 1, lines
    body = re.sub(rb"^\* \d+ FETCH \(", b"", fetches[0])
    body = re.sub(rb"\)\r\n$", b"", body)
    body = re.sub(rb"^UID \d+ ", b"", body)
    return canonical(body).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    if shutil.which("dovecot") is None:
        pytest.fail("Dovecot is the reference oracle; scripts/test installs dovecot-imapd")
    # Dovecot's own users must reach the files: not under pytest's private temporary directory.
    d = pathlib.Path(tempfile.mkdtemp(prefix="trimaran-oracle-"))
    d.chmod(0o755)
    (imap,) = free_ports(1)
    (d / "dovecot.conf").write_text(dovecot_config(d, imap))
    (d / "passwd").write_text(f"oracle:{{PLAIN}}{PASSWORD}::::::\n")
    (d / "home").mkdir()
    shutil.chown(d / "home", "vmail", "vmail")
    subprocess.run(["dovecot", "-c", str(d / "dovecot.conf")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", imap), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, (d / "dovecot.log").read_text()
            time.sleep(0.1)
    yield imap
    subprocess.run(["doveadm", "-c", str(d / "dovecot.conf"), "stop"], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def test_fetch_answers_match_dovecot(make_server, dovecot, backend):
    server = make_server(accounts=())
    server.add_account("alice@example.test", PASSWORD)
    ref = Client(socket.create_connection(("127.0.0.1", dovecot), timeout=30))
    _, tagged = ref.cmd(f'LOGIN "oracle" "{PASSWORD}"')
    assert b" OK " in tagged, tagged
    ref.cmd("SELECT INBOX")
    # Earlier runs (the other back end) used the same Dovecot mailbox: start empty.
    ref.cmd("STORE 1:* +FLAGS.SILENT (\\Deleted)")
    ref.cmd("EXPUNGE")
    sock = unverified_context().wrap_socket(
        socket.create_connection(("127.0.0.1", server.imaps_port), timeout=30))
    ours = Client(sock)
    _, tagged = ours.cmd(f'LOGIN "alice@example.test" "{PASSWORD}"')
    assert b" OK " in tagged
    files = sorted(DATA.glob("*.eml"))
    for f in files:
        for c in (ref, ours):
            c.append(f.read_bytes())
    for c in (ref, ours):
        c.cmd("SELECT INBOX")
    known = json.loads((DATA / "differences.json").read_text())
    unexplained, still_known = [], set()
    for n, f in enumerate(files, start=1):
        for item in ITEMS:
            answers = []
            for c in (ref, ours):
                lines, tagged = c.cmd(f"FETCH {n} ({item})")
                answers.append(item_value(lines) if b" OK " in tagged else "NO/BAD: " + tagged.decode(errors="replace").strip())
            key = f"{f.name} {item}"
            if answers[0] != answers[1]:
                if key in known:
                    still_known.add(key)
                else:
                    unexplained.append(f"{key}\n  dovecot:  {answers[0]}\n  trimaran: {answers[1]}")
    stale = sorted(set(known) - still_known)
    assert not unexplained, f"{len(unexplained)} unexplained differences:\n" + "\n".join(unexplained)
    assert not stale, f"differences.json explains differences that are gone: {stale}"
