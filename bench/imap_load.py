#!/usr/bin/env python3
"""IMAP load benchmark: concurrent clients against Trimaran (SQLite, PostgreSQL) and Dovecot from
Debian, on the same messages, in the same run.

Every target gets the same seeded-random messages in the same accounts (Trimaran through
MULTIAPPEND, untimed; Dovecot by writing its Maildirs directly, then indexing them by a SELECT).
Before any timing, the answers are compared: message counts, the UID of every Message-ID, header
fields, whole bodies and every SEARCH's hit list must agree across targets.

Then, one operation at a time and for each target in turn (so that each comparison is made
within a minute), C concurrent clients repeat the operation for a fixed time after a warm-up:

  login          new TLS connection, greeting, LOGIN (timed to its OK), then LOGOUT
  select         SELECT INBOX on a logged-in session
  fetch-headers  UID FETCH of 50 consecutive messages: FLAGS and four header fields
  fetch-body     UID FETCH BODY.PEEK[] of one random message
  search-body    UID SEARCH BODY "word" (common, medium, rare, absent words)
  search-header  UID SEARCH FROM "name" / SUBJECT "word"
  store          UID STORE +FLAGS / -FLAGS (\\Flagged) of one random message
  idle-store     one session IDLEs, another (same account) flips a flag: the time from sending
                 the STORE to the idling session's untagged FETCH
  idle-append    the same with an APPEND of a small message and the untagged EXISTS

Both servers are reached over implicit TLS (Trimaran refuses passwords in clear text), with the
same certificate type, and check the same argon2id password hash.
"""

import argparse
import asyncio
import datetime
import email.quoprimime
import base64
import hashlib
import os
import pathlib
import platform
import random
import re
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness import Postgres, dovecot_config, free_ports, trimaran_bin, wait_for_index  # noqa: E402

PASSWORD = "bench pass"
DOMAIN = "example.test"
OPS = ["login", "select", "fetch-headers", "fetch-body", "search-body", "search-header", "store",
       "idle-store", "idle-append"]

# ---------------------------------------------------------------------------------------------
# Messages

VOCAB = """the of and to a in for is on that by this with you it not or be are from at as your all
have new more an was we will can us about if my has but our one other do no information time they
he up may what which their out use any there see only so his when contact here business who also now
help get like first been would how were me some these its than find date back top people had list
name just over year day into two work last most make them should product system after best then good
well where each she very order many need said does under general could great must before did send
right because those using results office education national take posted address community within
area want phone subject between long based show even check file open today project same section own
found both while care down three total place end following without access think current big control
history size change small rate return during account another why still money quality every little
visit save low reply customer compare include value article provide source press learn around course
process room point join team look left note week large table however market really action start
series model plan second cost better say questions complete standard person below less let above
recent side problem give performance quote language story options experience rates create key
important field few paper single age additional password question changes hard pay four status issue
range building offer easy given files event release analysis request making needs possible might
month major future committee hand share similar added reference companies listed energy delivery
popular term central images notice head until away includes track discussion archive once others
agreement format least months log sure trade edition updated association able having provides close
common specific several called short lot ask display limited means director daily past whether due
five upon period planning database says official land average done technical window region record
direct conference statement update parts ever early resource present document word material written
talk rules final true minutes third plus individual together percent fast function fact unit getting
meet far economic projects often included feel though bank risk thanks everything various received
choose knowledge error currently clear receive methods chapter makes position taken sort known half
cases step simple quick whole annual published later basic shows corporate purchase customers active
response practice figure materials holiday enough designed along among writing speed countries loss
brand higher effects created remember standards increase base near thought stuff storage doing entry
stay nature orders summary turn mean growth notes agency activity copy although income force cash
employment overall package contents seen players started administration plans double build screen
exchange types soon lines continue across benefits needed season apply someone held anything condition
effective believe organization effect asked mind selection volume cross anyone hope certain inside
solution role rather weeks addition came supply nothing running lower necessary according particular
fine hour skills advice career decision leave middle move opportunities taking values division coming
object appropriate length actually score statistics client returns capital follow sample investment
sent shown culture lead choice went starting courses consumer letter ideas structure fund allow degree
contract button matter custom almost took located multiple distribution editor cause potential focus
late featured idea responsible communications primary numbers reason tool answer voice schedule
documents communication purpose feature approach physical operating deal hold forms ready sources
population regular secure operations therefore simply evidence option valley recently probably improve
connection larger impact transfer introduction strong ground overview opportunity classic basis
command express assessment ensure involved extra especially interface partners budget success maximum
operation existing quite selected warning significant technologies useful directly providing rule
considered told traffic strategy input agent valid modern senior testing trial charge instead normal
wrote enterprise entire leading positive opinion greater likely develop employees alternative
processing responsibility resolution trust session completed graphics expected organizations filter
longer consider behind panel proposed default require morning otherwise allows rest reported
transportation partner mission string sense modified stage internal goods recommended detailed
approved background target character maintenance ability functions moving places regarding instructions
offered theory remove aid minimum variety manual block subjects increased repair understanding fixed
beginning finally updates capacity requires officer driver respect unknown specified procedures worth
relationship showing benefit progress funding devices grant agree beyond evaluation accepted former
implementation complex references presented flow agencies setting scale economy highest helpful monthly
critical frame definition secretary networking path employee chief detail changed heard begin
individuals relevant guidelines connect applied weekly installation demand square attention advance
difference allowed correct nation selling lots piece sheet firm seven regulations elements module
facility pricing certificate motion directions visitors documentation monitor trading coverage chance
vision actions discuss accept goal successful situation markets lowest highly appear emergency
developing determine actual historical commerce perhaps difficult scientific accounts factors
settings easily closed balance monitoring initial label thinking recommend minute provider optional
accounting manufacturing effort phase fields letters context install generally continued techniques
quickly claim permission task reduce component enable guarantee leader processes servers meetings
seconds keyword interests produced competition creating premium providers generated signed limit steps
errors efforts informed thoughts worked quantity practices reporting essential platform load machines
integrated configuration comprehensive expert protect presentation compliance prevent campaign
improvement examples challenge strategies goals suggest branch charges serve reasons talking avoid
certified manage separate quarter procedure leadership define identify approximately recommendations
moved comparison extended sequence opening damage reserve placed failure weekend approval draft contacts
equal offering leaders assistant variable compared determined workshop completely turned pattern
direction objects delete evening assembly signal obtained identified supplied promote stated
professionals advantage maintain priority estimated brief ended prepared integration interview
framework installed credits clearly handle criteria revenue measure changing discussions experts
logged exactly explore concept eligible checkout handling origin destination faster followed
specifications protocol query partnership principles suggestions shared replacement strategic
compatible obtain consulting remain managed participants secret perform translation estimates assets
figures protected proposal sharing waiting conduct contained legislation parameters matters
relationships controls combined representative frequency introduced finish departments residents
noted displayed reduced performed samples reviewed forecast removed helps administrator cycle amounts
accuracy creation addresses dynamic permanent cleaning portfolio practical delivered infrastructure
exclusive vendor regulation reduction supports recording announced agreed prevention import posting
instant mentioned automatic maintained increasing majority connected participation scheme utility
preview containing combination strength guaranteed distributed principal ordering previously
certification photographs""".split()
FIRST = ("James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
         "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Minji Seojun Jiwoo Hana Lukas "
         "Sofia Mateo Camille Hugo Ingrid Renée José Zoë Björn Chloé").split()
LAST = ("Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
        "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Kim "
        "Park Choi Nakamura Müller Dubois Rossi Novak Jansen Kowalski Lindqvist Okafor").split()
DOMAINS = "example.org example.net mail.example.com lists.example.org corp.example".split()
RARE_WORD = "quixotically"      # inserted into 0.3% of bodies
# SEARCH keys: a common word, middling ones, a rare one and an absent one; header keys.
BODY_QUERIES = ["information", "meeting", "budget", "delivery", "photographs", RARE_WORD,
                "nonexistentword"]
HEADER_QUERIES = ['FROM "smith"', 'FROM "kim"', 'FROM "dubois"', 'SUBJECT "report"',
                  'SUBJECT "invoice"', 'SUBJECT "travel"']
SUBJECT_WORDS = ("report invoice meeting budget travel schedule project review contract delivery "
                 "update summary agenda notes release proposal question request reminder").split()


def weights(n):
    """Zipf-like cumulative weights over the vocabulary: word frequencies as in real text."""
    total, out = 0.0, []
    for rank in range(n):
        total += 1.0 / (rank + 10)
        out.append(total)
    return out


CUM = weights(len(VOCAB))


def paragraph_text(rnd, words):
    chosen = rnd.choices(VOCAB, cum_weights=CUM, k=words)
    sentences, i = [], 0
    while i < len(chosen):
        n = rnd.randint(6, 18)
        s = " ".join(chosen[i:i + n])
        sentences.append(s[:1].upper() + s[1:] + ".")
        i += n
    # Lines of at most ~72 characters, paragraphs of a few sentences.
    out, line = [], ""
    for k, s in enumerate(sentences):
        for w in s.split(" "):
            if len(line) + len(w) + 1 > 72:
                out.append(line)
                line = w
            else:
                line = f"{line} {w}" if line else w
        if k % 4 == 3:
            out.append(line)
            out.append("")
            line = ""
    if line:
        out.append(line)
    return out


def encoded_word(text):
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def make_message(rnd, account, index):
    """One realistic message: plain text (some quoted-printable, some 8-bit), multipart/
    alternative with HTML, or multipart/mixed with a base64 attachment; RFC 2047 subjects and
    names now and then."""
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    sender = f"{first.lower()}.{last.lower()}@{rnd.choice(DOMAINS)}".encode("ascii", "ignore").decode()
    display = f"{first} {last}"
    display = encoded_word(display) if not display.isascii() else display
    subject = " ".join(rnd.choice(SUBJECT_WORDS) if k == 0 else rnd.choice(VOCAB[:400])
                       for k in range(rnd.randint(2, 7)))
    subject = subject[:1].upper() + subject[1:]
    if rnd.random() < 0.3:
        subject = "Re: " + subject
    if rnd.random() < 0.05:
        subject = encoded_word(subject + " — ünïcödé")
    day = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(
        seconds=index * 1800 + rnd.randint(0, 1700))
    words = max(20, min(4000, int(rnd.lognormvariate(5.3, 0.9))))
    lines = paragraph_text(rnd, words)
    if rnd.random() < 0.003 * 3:  # ~0.9% get the rare word (some land in HTML-only copies)
        at = rnd.randrange(len(lines))
        lines[at] = (lines[at] + " " + RARE_WORD).strip()
    if rnd.random() < 0.1:
        lines.append("Merci beaucoup et à bientôt — Grüße aus Köln.")
    text = "\r\n".join(lines) + "\r\n"
    headers = [
        f"Return-Path: <{sender}>",
        f"Received: from mx{rnd.randint(1, 9)}.{sender.split('@')[1]} (mx.{sender.split('@')[1]} "
        f"[192.0.2.{rnd.randint(1, 254)}])\r\n\tby mx.example.test with ESMTPS id {rnd.getrandbits(48):012x}"
        f"\r\n\tfor <{account}>; {day.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"Date: {day.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"From: {display} <{sender}>",
        f"To: {account}",
        f"Subject: {subject}",
        f"Message-ID: <{account.split('@')[0]}.{index}.{rnd.getrandbits(32):08x}@{sender.split('@')[1]}>",
        "MIME-Version: 1.0",
    ]
    if rnd.random() < 0.2:
        headers.insert(5, f"Cc: {rnd.choice(FIRST)} <cc{rnd.randint(1, 50)}@example.net>")
    if subject.startswith("Re: "):
        headers.append(f"In-Reply-To: <{rnd.getrandbits(40):010x}@example.net>")
    kind = rnd.random()
    if kind < 0.74:
        if text.isascii():
            headers += ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"]
            body = text
        elif rnd.random() < 0.5:
            headers += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
            body = text
        else:
            headers += ["Content-Type: text/plain; charset=utf-8",
                        "Content-Transfer-Encoding: quoted-printable"]
            body = email.quoprimime.body_encode(text, maxlinelen=76, eol="\r\n")
    elif kind < 0.94:
        boundary = f"=_alt_{rnd.getrandbits(64):016x}"
        html = "<html><body>" + "".join(f"<p>{l}</p>\r\n" for l in lines if l) + "</body></html>\r\n"
        headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        body = (f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                + email.quoprimime.body_encode(text, maxlinelen=76, eol="\r\n") + "\r\n"
                f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                + email.quoprimime.body_encode(html, maxlinelen=76, eol="\r\n") + f"\r\n--{boundary}--\r\n")
    else:
        boundary = f"=_mix_{rnd.getrandbits(64):016x}"
        size = int(rnd.uniform(10_000, 120_000))
        attachment = base64.encodebytes(rnd.randbytes(size)).decode().replace("\n", "\r\n")
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        body = (f"This is a multi-part message in MIME format.\r\n\r\n--{boundary}\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                f"{text}\r\n--{boundary}\r\nContent-Type: application/pdf; name=\"scan{index}.pdf\"\r\n"
                f"Content-Disposition: attachment; filename=\"scan{index}.pdf\"\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--{boundary}--\r\n")
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def account_name(i):
    return f"user{i + 1}@{DOMAIN}"


def make_mailboxes(accounts, per_account, seed):
    """{account: [(message bytes, seen)]}: the same for every target."""
    out = {}
    for a in range(accounts):
        rnd = random.Random(f"{seed}/{a}")
        name = account_name(a)
        out[name] = [(make_message(rnd, name, i), rnd.random() < 0.7) for i in range(per_account)]
    return out


# ---------------------------------------------------------------------------------------------
# A minimal asyncio IMAP client: just enough protocol, cheap on the generator's CPU.

LITERAL_AT_END = re.compile(rb"\{(\d+)\}\r\n$")


class ImapError(Exception):
    pass


class Conn:
    def __init__(self, reader, writer):
        self.r, self.w, self.n = reader, writer, 0

    @classmethod
    async def open(cls, port, ctx):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, limit=1 << 24)
        self = cls(reader, writer)
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting {greeting!r}")
        return self

    async def response(self):
        """One response: (text with "{}" where each literal was, [literals])."""
        line = await self.r.readline()
        if not line:
            raise ConnectionError("connection closed by the server")
        if not line.endswith(b"}\r\n"):
            return line, ()
        parts, literals = [], []
        while True:
            m = LITERAL_AT_END.search(line)
            if not m:
                break
            parts.append(line[:m.start()])
            literals.append(await self.r.readexactly(int(m.group(1))))
            line = await self.r.readline()
        parts.append(line)
        return b"{}".join(parts), literals

    def send(self, command):
        self.n += 1
        tag = b"t%d" % self.n
        self.w.write(tag + b" " + command + b"\r\n")
        return tag + b" "

    async def finish(self, tag):
        out = []
        while True:
            text, literals = await self.response()
            if text.startswith(tag):
                if text[len(tag):len(tag) + 2] != b"OK":
                    raise ImapError(text.decode(errors="replace").strip())
                return out
            out.append((text, literals))

    async def cmd(self, command):
        return await self.finish(self.send(command))

    async def login(self, user):
        return await self.cmd(f'LOGIN "{user}" "{PASSWORD}"'.encode())

    async def idle_start(self):
        tag = self.send(b"IDLE")
        while True:
            text, _ = await self.response()
            if text.startswith(b"+"):
                return tag
            if text.startswith(tag):
                raise ImapError(text.decode(errors="replace"))

    async def idle_done(self, tag):
        self.w.write(b"DONE\r\n")
        return await self.finish(tag)

    async def close(self):
        try:
            await asyncio.wait_for(self.cmd(b"LOGOUT"), 10)
        except (ImapError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, OSError):
            pass
        self.w.close()
        try:
            await asyncio.wait_for(self.w.wait_closed(), 5)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass

    def cipher(self):
        obj = self.w.get_extra_info("ssl_object")
        return f"{obj.version()} {obj.cipher()[0]}" if obj else "none"


def binary_identity():
    path = pathlib.Path(trimaran_bin())
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{path.name} built {stamp:%Y-%m-%d %H:%M} UTC, sha256 {digest}"


def client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def search_uids(responses):
    out = []
    for text, _ in responses:
        if text.startswith(b"* SEARCH"):
            out.extend(int(x) for x in text.split()[2:])
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# CPU accounting from /proc: the server processes (and their reaped children), the generator,
# and the whole machine (to see other load, such as compilers, during a run).

CLK = os.sysconf("SC_CLK_TCK")


def process_table():
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        # fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14–17.
        table[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return table


def tree_cpu(root_pids):
    """CPU seconds used by the given processes and all their descendants, living or reaped."""
    table = process_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, stack, ticks = set(), [p for p in root_pids if p in table], 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        ticks += table[pid][1]
        stack.extend(children.get(pid, ()))
    return ticks / CLK


def machine_cpu():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) / CLK, (sum(fields) - idle) / CLK


def own_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------------------------
# Targets


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


def wait_for_imaps(port, timeout=60, proc=None):
    deadline = time.time() + timeout
    ctx = client_context()
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            import socket
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with ctx.wrap_socket(raw) as s:
                    if s.recv(512).startswith(b"* OK"):
                        return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no IMAP greeting on port {port} within {timeout}s")


def argon2_hash(workdir):
    """An argon2id PHC string made by `trimaran account add` (Trimaran's parameters), for
    Dovecot's passwd file: both servers then do the same work to check a password."""
    import sqlite3
    scratch = workdir / "hash"
    scratch.mkdir()
    store = f"sqlite:{scratch}/hash.db"
    run([trimaran_bin(), "--data-dir", str(scratch), "--store", store, "domain", "add", DOMAIN])
    run([trimaran_bin(), "--data-dir", str(scratch), "--store", store, "account", "add",
         account_name(0)], input=(PASSWORD + "\n").encode())
    db = sqlite3.connect(scratch / "hash.db")
    try:
        return db.execute("SELECT password_hash FROM accounts").fetchone()[0]
    finally:
        db.close()


class Dovecot:
    name = "dovecot"

    def __init__(self, workdir, mailboxes, cert, key, password_hash):
        self.dir = workdir / "dovecot"
        self.dir.mkdir()
        self.mailboxes = mailboxes
        plain, self.port = free_ports(2)
        conf = dovecot_config(self.dir, plain)
        # Implicit TLS like Trimaran's IMAPS listener, the same certificate type; sessions from
        # one address to one user are not capped below what the load needs.
        conf = conf.replace("ssl = no\n", f"ssl = required\nssl_cert = <{cert}\nssl_key = <{key}\n")
        conf = conf.replace("  inet_listener imaps {\n    port = 0\n",
                            f"  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {self.port}\n")
        conf += "protocol imap {\n  mail_max_userip_connections = 200\n}\n"
        (self.dir / "dovecot.conf").write_text(conf)
        # The same argon2id PHC string as Trimaran's store holds: the same work per LOGIN.
        (self.dir / "passwd").write_text("".join(f"{a}:{{ARGON2ID}}{password_hash}::::::\n"
                                                 for a in mailboxes))
        version = run(["dovecot", "--version"], text=True).stdout.split()[0]
        self.note = (f"Dovecot {version} (Debian), Maildir, default settings (no FTS plugin; "
                     "login processes in high-security mode, one imap process per session)")

    def seed(self):
        started = time.perf_counter()
        for account, messages in self.mailboxes.items():
            maildir = self.dir / "home" / account / "Maildir"
            for sub in ("cur", "new", "tmp"):
                (maildir / sub).mkdir(parents=True)
            for i, (data, seen) in enumerate(messages):
                # The name a delivery agent gives, with S= and W= sizes; UIDs follow the time part.
                name = f"{1700000000 + i}.M{i}P{os.getpid()}.bench,S={len(data)},W={len(data)}:2,{'S' if seen else ''}"
                (maildir / "cur" / name).write_bytes(data)
        run(["chown", "-R", "vmail:vmail", str(self.dir / "home")])
        # A daemon keeps inherited descriptors open: give it none of ours.
        subprocess.run(["dovecot", "-c", str(self.dir / "dovecot.conf")], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_imaps(self.port)
        self.seed_seconds = time.perf_counter() - started

    def pids(self):
        try:
            return [int((self.dir / "run" / "master.pid").read_text().split()[0])]
        except (OSError, ValueError):
            return []

    def stop(self):
        subprocess.run(["doveadm", "-c", str(self.dir / "dovecot.conf"), "stop"], capture_output=True)


class Trimaran:
    def __init__(self, backend, workdir, mailboxes, store=None, pg=None):
        self.name = f"trimaran-{backend}"
        self.backend = backend
        self.dir = workdir / self.name
        self.dir.mkdir()
        self.store = store or f"sqlite:{self.dir}/trimaran.db"
        self.pg = pg
        self.mailboxes = mailboxes
        self.smtp, self.port = free_ports(2)
        self.proc = None
        self.note = {"sqlite": "Trimaran on its embedded store (SQLite WAL, synchronous=FULL)",
                     "postgres": "Trimaran on a private PostgreSQL 15 (fsync=on, synchronous_commit=on); "
                                 "its CPU includes PostgreSQL's"}[backend]

    def cli(self, *args, input=None):
        return run([trimaran_bin(), "--data-dir", str(self.dir), "--store", self.store, *args],
                   input=input)

    def start(self):
        self.cli("domain", "add", DOMAIN)
        for account in self.mailboxes:
            self.cli("account", "add", account, input=(PASSWORD + "\n").encode())
        self.log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [trimaran_bin(), "--data-dir", str(self.dir), "--store", self.store, "serve",
             "--smtp", f"127.0.0.1:{self.smtp}", "--submission", "none", "--submissions", "none",
             "--pop3", "none", "--pop3s", "none", "--imap", "none", "--imaps", f"127.0.0.1:{self.port}",
             "--https", "none"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_imaps(self.port, proc=self.proc)

    def seed(self):
        async def one(account, messages, gate):
            async with gate:
                conn = await Conn.open(self.port, client_context())
                await conn.login(account)
                for i in range(0, len(messages), 100):
                    # MULTIAPPEND (RFC 3502) with non-synchronising literals (RFC 7888).
                    parts = [b"APPEND INBOX"]
                    for data, seen in messages[i:i + 100]:
                        parts.append(b" (\\Seen)" if seen else b" ()")
                        parts.append(b" {%d+}\r\n" % len(data) + data)
                    await conn.cmd(b"".join(parts))
                await conn.close()

        async def all_accounts():
            gate = asyncio.Semaphore(4)
            await asyncio.gather(*(one(a, m, gate) for a, m in self.mailboxes.items()))

        started = time.perf_counter()
        asyncio.run(all_accounts())
        self.seed_seconds = time.perf_counter() - started
        # Long texts are indexed in the background after their delivery; time searches on a
        # whole index, as a server that has been running a while has.
        self.index_seconds = wait_for_index(self.store)

    def pids(self):
        pids = [self.proc.pid] if self.proc else []
        if self.pg:
            try:
                pids.append(int(pathlib.Path(self.pg.data, "postmaster.pid").read_text().split()[0]))
            except (OSError, ValueError):
                pass
        return pids

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------------------------
# Checking that the targets answer alike


async def fingerprint(target, mailboxes, sample_seed):
    """What each target answers to the same questions, for comparison across targets."""
    ctx = client_context()
    out = {}
    rnd = random.Random(sample_seed)
    for a, (account, messages) in enumerate(mailboxes.items()):
        conn = await Conn.open(target.port, ctx)
        await conn.login(account)
        selected = await conn.cmd(b"SELECT INBOX")
        exists = [int(t.split()[1]) for t, _ in selected if t.endswith(b" EXISTS\r\n")]
        out[(account, "exists")] = exists
        if a == 0:
            out["cipher"] = conn.cipher()
        # UID of every Message-ID, and the four header fields and flags of a sample range.
        ids = await conn.cmd(b"UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        mapping = {}
        for text, lits in ids:
            uid = int(re.search(rb"UID (\d+)", text).group(1))
            mapping[uid] = lits[0].strip() if lits else b""
        out[(account, "uid→message-id")] = hashlib.sha256(repr(sorted(mapping.items())).encode()).hexdigest()
        if a < 3:
            start = rnd.randint(1, max(1, len(messages) - 49))
            fetched = await conn.cmd(b"UID FETCH %d:%d (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])"
                                     % (start, start + 49))
            rows = {}
            for text, lits in fetched:
                uid = int(re.search(rb"UID (\d+)", text).group(1))
                # \Recent is left out: IMAP4rev2 dropped it and Trimaran does not keep it, while
                # Dovecot marks messages it finds in a Maildir as recent for the first session.
                flags = sorted(f for f in re.search(rb"FLAGS \(([^)]*)\)", text).group(1).split()
                               if f != b"\\Recent")
                rows[uid] = (flags, lits[0] if lits else b"")
            out[(account, f"headers {start}:{start + 49}")] = hashlib.sha256(repr(sorted(rows.items())).encode()).hexdigest()
            # Whole bodies must come back byte for byte as seeded.
            bad = []
            for uid in rnd.sample(range(1, len(messages) + 1), min(20, len(messages))):
                r = await conn.cmd(b"UID FETCH %d (BODY.PEEK[])" % uid)
                body = r[0][1][0] if r and r[0][1] else b""
                if body != messages[uid - 1][0]:
                    bad.append(uid)
            out[(account, "20 bodies byte-identical to the seeded ones")] = "yes" if not bad else f"no: UIDs {bad}"
        for q in BODY_QUERIES:
            out[(account, f'SEARCH BODY "{q}"')] = search_uids(await conn.cmd(f'UID SEARCH BODY "{q}"'.encode()))
        for q in HEADER_QUERIES:
            out[(account, f"SEARCH {q}")] = search_uids(await conn.cmd(f"UID SEARCH {q}".encode()))
        await conn.close()
    return out


def compare(prints):
    """Differences between targets, and hit totals per query (for the report)."""
    names = list(prints)
    ref = prints[names[0]]
    problems = []
    for key in ref:
        if key == "cipher":
            continue
        values = {n: prints[n].get(key) for n in names}
        if len({repr(v) for v in values.values()}) != 1:
            shown = {n: (f"{len(v)} hits" if isinstance(v, list) and key[1].startswith("SEARCH") else v)
                     for n, v in values.items()}
            problems.append(f"{key[0]} {key[1]}: {shown}")
    totals = {}
    for key, value in ref.items():
        if isinstance(key, tuple) and key[1].startswith("SEARCH"):
            totals.setdefault(key[1], {n: 0 for n in names})
            for n in names:
                totals[key[1]][n] += len(prints[n].get(key) or [])
    return problems, totals


# ---------------------------------------------------------------------------------------------
# The load


async def session(target, account, ctx, select=True):
    conn = await Conn.open(target.port, ctx)
    await conn.login(account)
    if select:
        await conn.cmd(b"SELECT INBOX")
    return conn


class Load:
    def __init__(self, target, op, accounts, per_account, clients, seconds, warmup, seed):
        self.target, self.op = target, op
        self.accounts, self.per_account = accounts, per_account
        self.clients, self.seconds, self.warmup, self.seed = clients, seconds, warmup, seed
        self.ctx = client_context()
        self.latencies, self.bytes, self.misses = [], 0, 0
        self.recording = False

    def record(self, latency, size=0):
        if self.recording:
            self.latencies.append(latency)
            self.bytes += size

    # -- steps: each returns after one operation, recording its latency -----------------------

    async def step_login(self, state, rnd):
        account = self.accounts[(state["i"] + state["k"] * self.clients) % len(self.accounts)]
        state["k"] += 1
        started = time.perf_counter()
        conn = await Conn.open(self.target.port, self.ctx)
        await conn.login(account)
        self.record(time.perf_counter() - started)
        await conn.close()

    async def step_select(self, state, rnd):
        started = time.perf_counter()
        await state["conn"].cmd(b"SELECT INBOX")
        self.record(time.perf_counter() - started)

    async def step_fetch_headers(self, state, rnd):
        start = rnd.randint(1, self.per_account - 49)
        started = time.perf_counter()
        r = await state["conn"].cmd(b"UID FETCH %d:%d (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])"
                                    % (start, start + 49))
        self.record(time.perf_counter() - started, sum(len(l[0]) for _, l in r if l))

    async def step_fetch_body(self, state, rnd):
        uid = rnd.randint(1, self.per_account)
        started = time.perf_counter()
        r = await state["conn"].cmd(b"UID FETCH %d (BODY.PEEK[])" % uid)
        self.record(time.perf_counter() - started, sum(len(l[0]) for _, l in r if l))

    async def step_search_body(self, state, rnd):
        word = rnd.choice(BODY_QUERIES)
        started = time.perf_counter()
        await state["conn"].cmd(f'UID SEARCH BODY "{word}"'.encode())
        self.record(time.perf_counter() - started)

    async def step_search_header(self, state, rnd):
        query = rnd.choice(HEADER_QUERIES)
        started = time.perf_counter()
        await state["conn"].cmd(f"UID SEARCH {query}".encode())
        self.record(time.perf_counter() - started)

    async def step_store(self, state, rnd):
        uid = rnd.randint(1, self.per_account)
        sign = b"+" if rnd.random() < 0.5 else b"-"
        started = time.perf_counter()
        await state["conn"].cmd(b"UID STORE %d %sFLAGS (\\Flagged)" % (uid, sign))
        self.record(time.perf_counter() - started)

    async def step_idle(self, state, rnd):
        idler, changer = state["idler"], state["changer"]
        if self.op == "idle-store":
            # Every STORE changes something (setup cleared \Flagged), so every one must wake.
            flagged = state["flagged"]
            if flagged and (state["k"] % 2 or len(flagged) >= self.per_account):
                uid, sign = flagged.pop(rnd.randrange(len(flagged))), b"-"
            else:
                uid, sign = rnd.randint(1, self.per_account), b"+"
                while uid in flagged:
                    uid = rnd.randint(1, self.per_account)
                flagged.append(uid)
            command = b"UID STORE %d %sFLAGS (\\Flagged)" % (uid, sign)
            wanted = b" FETCH "
        else:
            data = (f"From: bench@example.org\r\nTo: {state['account']}\r\nSubject: idle {state['k']}\r\n"
                    f"Message-ID: <idle.{state['i']}.{state['k']}@example.org>\r\n\r\nNew mail.\r\n").encode()
            command = b"APPEND INBOX {%d+}\r\n" % len(data) + data
            wanted = b" EXISTS"
        state["k"] += 1
        started = time.perf_counter()
        change = asyncio.ensure_future(changer.cmd(command))

        async def woken():
            while True:
                text, _ = await idler.response()
                if wanted in text:
                    return

        try:
            await asyncio.wait_for(woken(), 40)
            self.record(time.perf_counter() - started)
        except asyncio.TimeoutError:
            if self.recording:
                self.misses += 1
        await change
        await idler.idle_done(state["tag"])
        state["tag"] = await idler.idle_start()

    # -- driving ---------------------------------------------------------------------------

    def idle_pairs(self):
        return min(self.clients // 2, len(self.accounts))

    async def setup(self, i):
        account = self.accounts[i % len(self.accounts)]
        state = {"i": i, "k": 0, "account": account}
        if self.op == "login":
            return state
        if self.op.startswith("idle-"):
            # One pair per account: an idler must not be woken by another pair's change.
            state["changer"] = await session(self.target, account, self.ctx)
            await state["changer"].cmd(b"UID STORE 1:* -FLAGS.SILENT (\\Flagged)")
            state["flagged"] = []
            state["idler"] = await session(self.target, account, self.ctx)
            state["tag"] = await state["idler"].idle_start()
            return state
        state["conn"] = await session(self.target, account, self.ctx)
        return state

    async def teardown(self, state):
        if "idler" in state:
            try:
                await state["idler"].idle_done(state["tag"])
            except (ImapError, ConnectionError, asyncio.IncompleteReadError, OSError):
                pass
        for key in ("conn", "idler", "changer"):
            if key in state:
                await state[key].close()

    async def worker(self, state, rnd, until):
        step = getattr(self, "step_" + ("idle" if self.op.startswith("idle-") else self.op.replace("-", "_")))
        while time.perf_counter() < until:
            await step(state, rnd)

    async def go(self):
        # IDLE runs in pairs: half the clients idle, half make changes.
        workers = self.idle_pairs() if self.op.startswith("idle-") else self.clients
        states = await asyncio.gather(*(self.setup(i) for i in range(workers)))
        rnds = [random.Random(f"{self.seed}/{self.op}/{i}") for i in range(workers)]
        await asyncio.gather(*(self.worker(s, r, time.perf_counter() + self.warmup) for s, r in zip(states, rnds)))
        self.recording = True
        server0, (total0, busy0), client0 = tree_cpu(self.target.pids()), machine_cpu(), own_cpu()
        started = time.perf_counter()
        until = started + self.seconds
        await asyncio.gather(*(self.worker(s, r, until) for s, r in zip(states, rnds)))
        elapsed = time.perf_counter() - started
        server1, (total1, busy1), client1 = tree_cpu(self.target.pids()), machine_cpu(), own_cpu()
        self.recording = False
        await asyncio.gather(*(self.teardown(s) for s in states))
        ops = len(self.latencies)
        lat = sorted(self.latencies) or [float("nan")]
        pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] * 1000  # noqa: E731
        return {
            "target": self.target.name, "op": self.op, "ops": ops, "seconds": elapsed,
            "rate": ops / elapsed, "p50": pct(0.50), "p99": pct(0.99), "max": lat[-1] * 1000,
            "misses": self.misses, "mbps": self.bytes / elapsed / 1e6,
            "server_cpu_ms_per_op": (server1 - server0) / max(ops, 1) * 1000,
            "server_cores": (server1 - server0) / elapsed,
            "client_cpu": (client1 - client0) / elapsed,
            # Everything else on the machine: other work that disturbs the measurement.
            "machine_busy": (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0,
            "other_cores": max(0.0, (busy1 - busy0) / (total1 - total0) * os.cpu_count()
                               - (server1 - server0) / elapsed - (client1 - client0) / elapsed)
            if total1 > total0 else 0.0,
        }


# ---------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--messages", type=int, default=1000, help="messages per account")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10, help="measured time per operation and target")
    parser.add_argument("--warmup", type=float, default=2, help="untimed seconds before each measurement")
    parser.add_argument("--targets", default="dovecot,sqlite,postgres")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--quick", action="store_true", help="8 accounts × 200 messages, 3 s per operation")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    # Stopped with SIGTERM: still stop the servers and remove the data (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.accounts, args.messages, args.seconds, args.warmup = 8, 200, 3, 1
    if args.messages < 50:
        sys.exit("--messages must be at least 50 (FETCH takes ranges of 50)")
    ops = args.ops.split(",")
    for op in ops:
        if op not in OPS:
            sys.exit(f"unknown operation {op}; known: {', '.join(OPS)}")

    started = time.perf_counter()
    mailboxes = make_mailboxes(args.accounts, args.messages, args.seed)
    all_messages = [m for ms in mailboxes.values() for m, _ in ms]
    total_bytes = sum(len(m) for m in all_messages)
    print(f"generated {len(all_messages)} messages, {total_bytes / 1e6:.0f} MB "
          f"(median {sorted(len(m) for m in all_messages)[len(all_messages) // 2]} bytes) "
          f"in {time.perf_counter() - started:.1f} s", flush=True)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="trimaran-imap-load-"))
    workdir.chmod(0o755)  # Dovecot works as its own users inside it
    targets, pgs = [], []
    try:
        names = args.targets.split(",")
        # A certificate of the type Trimaran generates (ECDSA P-256), for Dovecot.
        cert, key = workdir / "cert.pem", workdir / "key.pem"
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=localhost"])
        for name in names:
            if name == "sqlite":
                targets.append(Trimaran("sqlite", workdir, mailboxes))
            elif name == "postgres":
                pg = Postgres()
                pgs.append(pg)
                pg.start()
                targets.append(Trimaran("postgres", workdir, mailboxes, store=pg.url(pg.new_database()), pg=pg))
            elif name != "dovecot":
                sys.exit(f"unknown target {name}")
        for t in targets:
            print(f"-- {t.name}: starting and seeding over IMAP (MULTIAPPEND)", flush=True)
            t.start()
            t.seed()
            print(f"   seeded in {t.seed_seconds:.1f} s", flush=True)
        if "dovecot" in names:
            d = Dovecot(workdir, mailboxes, cert, key, argon2_hash(workdir))
            print("-- dovecot: writing Maildirs", flush=True)
            d.seed()
            print(f"   seeded in {d.seed_seconds:.1f} s", flush=True)
            targets.insert(0, d)

        # Same answers everywhere (and, for Dovecot, its indexes built by the first SELECT).
        prints = {}
        for t in targets:
            began = time.perf_counter()
            prints[t.name] = asyncio.run(fingerprint(t, mailboxes, args.seed))
            print(f"-- {t.name}: answers gathered in {time.perf_counter() - began:.1f} s "
                  f"({prints[t.name]['cipher']})", flush=True)
        problems, totals = compare(prints)
        for p in problems:
            print(f"   DIFFERENCE {p}", flush=True)
        if not problems:
            print("   all answers agree", flush=True)

        results = []
        for op in ops:
            for t in targets:
                r = asyncio.run(Load(t, op, list(mailboxes), args.messages, args.clients, args.seconds,
                                     args.warmup, args.seed).go())
                results.append(r)
                print(f"   {op:14} {t.name:17} {r['rate']:8.1f} ops/s  p50 {r['p50']:8.2f} ms  "
                      f"p99 {r['p99']:8.2f} ms  server {r['server_cores']:.2f} cores, "
                      f"{r['server_cpu_ms_per_op']:.2f} ms/op  client {r['client_cpu'] * 100:.0f}%  "
                      f"other {r['other_cores']:.2f} cores"
                      + (f"  MISSED {r['misses']}" if r["misses"] else ""), flush=True)
    finally:
        for t in targets:
            t.stop()
        for pg in pgs:
            pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)

    report = render(args, results, targets, prints, problems, totals, total_bytes, len(all_messages))
    print("\n" + report)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"imap-load-{datetime.date.today().isoformat()}"
    path, n = out / f"{stem}.md", 2
    while path.exists():
        path, n = out / f"{stem}-{n}.md", n + 1
    path.write_text(report)
    print(f"written to {path}")


def render(args, results, targets, prints, problems, totals, total_bytes, count):
    ref = {r["op"]: r for r in results if r["target"] == "dovecot"}
    names = [t.name for t in targets]
    others = [n for n in names if n != "dovecot"]
    # Summary: ratios to Dovecot.
    head = "| operation | " + " | ".join(f"{n} ops/s" for n in names)
    if ref:
        head += " | " + " | ".join(f"{n} rate vs Dovecot | {n} p99 vs Dovecot" for n in others)
    lines = [head + " |", "|---|" + "---:|" * (head.count("|") - 1)]
    by = {(r["op"], r["target"]): r for r in results}
    for op in dict.fromkeys(r["op"] for r in results):
        row = f"| {op} | " + " | ".join(f"{by[(op, n)]['rate']:.1f}" for n in names)
        if ref:
            d = ref[op]
            cells = []
            for n in others:
                r = by[(op, n)]
                cells.append(f"{r['rate'] / d['rate']:.2f}×" if d["rate"] else "–")
                cells.append(f"{r['p99'] / d['p99']:.2f}×" if d["p99"] else "–")
            row += " | " + " | ".join(cells)
        lines.append(row + " |")
    summary = "\n".join(lines)
    detail = ["| operation | target | ops | ops/s | p50 ms | p99 ms | max ms | server CPU ms/op | "
              "server cores | client CPU | other load (cores) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        extra = f" ({r['misses']} missed)" if r["misses"] else ""
        detail.append(f"| {r['op']} | {r['target']} | {r['ops']}{extra} | {r['rate']:.1f} | {r['p50']:.2f} | "
                      f"{r['p99']:.2f} | {r['max']:.1f} | {r['server_cpu_ms_per_op']:.2f} | "
                      f"{r['server_cores']:.2f} | {r['client_cpu'] * 100:.0f}% | {r['other_cores']:.2f} |")
    agree = ("All answers agree across targets: message counts, the UID of every Message-ID in every "
             "account, FLAGS and header fields of sampled ranges, 60 whole bodies byte for byte, and "
             f"the hit lists of all {len(BODY_QUERIES) + len(HEADER_QUERIES)} SEARCH queries in every account."
             if not problems else "**Answers differ** (comparison of those operations is not like for like):\n\n"
             + "\n".join(f"- {p}" for p in problems))
    hits = "\n".join(f"| {q} | " + " | ".join(str(v) for v in per.values()) + " |" for q, per in totals.items())
    hits = ("| query | " + " | ".join(totals[next(iter(totals))]) + " |\n|---|" + "---:|" * len(names) + "\n" + hits
            if totals else "")
    ciphers = "; ".join(f"{n}: {prints[n]['cipher']}" for n in names)
    uname = platform.uname()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "bench/imap-load " + " ".join(sys.argv[1:])
    notes = "\n".join(f"- {t.name}: {t.note}; seeded in {t.seed_seconds:.1f} s (not timed)"
                      + (f", text index complete {t.index_seconds:.1f} s later" if hasattr(t, "index_seconds") else "")
                      for t in targets)
    notes += f"\n- Trimaran binary: {binary_identity()}"
    return (f"## IMAP load ({stamp})\n\n`{command}` — {args.accounts} accounts × {args.messages} messages "
            f"({count} in all, {total_bytes / count / 1024:.1f} KiB average), {args.clients} concurrent "
            f"clients (IDLE: {min(args.clients // 2, args.accounts)} idling sessions, each with one session making "
            f"changes in the same account, one pair per account), "
            f"{args.seconds:g} s per operation and target after {args.warmup:g} s of warm-up; "
            f"{os.cpu_count()} cores, {uname.system} {uname.release}. Load generator, servers and "
            f"databases share the machine. TLS: {ciphers}.\n\n"
            f"Rates and p99 latencies as ratios to Dovecot (rate: higher is better; p99: lower is "
            f"better):\n\n{summary}\n\nDetail. Server CPU is read from /proc for the server's process tree "
            f"(Dovecot: master and all its children; PostgreSQL target: Trimaran plus PostgreSQL); "
            f"\"other load\" is the rest of the machine's busy time during the measurement.\n\n"
            + "\n".join(detail) + f"\n\n{agree}\n\nSEARCH hits summed over all accounts:\n\n{hits}\n\n{notes}\n")


if __name__ == "__main__":
    main()
