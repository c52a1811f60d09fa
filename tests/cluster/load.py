"""Continuous mail load on a three-site cluster, and what its clients saw.

Senders behave as a sending MTA does: each keeps a connection to its preferred site's MX,
moves to the next site on a 4xx reply or a broken connection, and sends the same bytes again
until one site answers 250. Readers keep IMAP sessions that fetch new mail and change flags,
and remember which UID each message had, so that a UID given to two messages, or a message
seen under two UIDs, is caught as it happens. A login prober measures how soon logins work
again after a site is lost.
"""

import itertools
import random
import re
import smtplib
import socket
import ssl
import threading
import time
import imaplib

SMTP_TIMEOUT = 120  # longer than the server's own bound (store_wait, 60 s): we see its answer
IMAP_TIMEOUT = 120
SENDER = "load@sender.cluster.test"


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def message_id(seq):
    return f"<load-{seq}@cluster.test>"


def message(seq, recipient):
    # Identical bytes on every attempt: the server recognises a retry of a transaction whose
    # answer was lost and keeps one copy (the transmission id of crates/core/src/delivery.rs).
    return (f"From: {SENDER}\r\nTo: {recipient}\r\nSubject: load {seq}\r\n"
            f"Message-ID: {message_id(seq)}\r\nDate: Thu, 03 Dec 2026 12:00:00 +0000\r\n\r\n"
            f"message {seq} of the cluster load\r\n" + "x" * 200 + "\r\n").encode()


FETCH_RE = re.compile(rb"UID (\d+)")
MSGID_RE = re.compile(rb"Message-ID:\s*(<[^>]+>)", re.I)


def parse_fetch(data):
    """(uid, message-id) pairs from a FETCH response of imaplib."""
    out = []
    for item in data:
        if isinstance(item, tuple):
            m = FETCH_RE.search(item[0])
            mid = MSGID_RE.search(item[1] or b"")
            if m:
                out.append((int(m.group(1)), mid.group(1).decode() if mid else None))
    return out


def imap_login(host, port, user, password):
    m = imaplib.IMAP4(host, port, timeout=IMAP_TIMEOUT)
    try:
        m.starttls(ssl_context=tls_context())
        m.login(user, password)
    except Exception:
        try:
            m.shutdown()
        except Exception:
            pass
        raise
    return m


def hostport(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


class Load:
    def __init__(self, endpoints, accounts, password, senders=6, readers=3):
        self.sites = sorted(endpoints["sites"])
        self.ep = endpoints["sites"]
        self.accounts = accounts
        self.password = password
        self.n_senders, self.n_readers = senders, readers
        self.lock = threading.Lock()
        self.seq = itertools.count(1)
        self.stopping = threading.Event()
        self.threads = []
        # What the clients saw.
        self.acked = {}           # seq -> (account, site, time of the 250)
        self.started = {}         # seq -> time its first attempt began
        self.permanent = []       # (seq, site, code, text): must stay empty
        self.temporary = []       # (time, site, code or exception)
        self.smtp_waits = []      # (time the command was sent, seconds to its reply, site, what)
        self.imap_waits = []
        self.imap_errors = []     # (time, site, text)
        self.uids = {a: {} for a in accounts}    # account -> uid -> message-id
        self.uid_of = {a: {} for a in accounts}  # account -> message-id -> uid
        self.uid_conflicts = []
        self.uidvalidity = {}
        self.logins = []          # (start, end, site, ok)

    # -- running -------------------------------------------------------------------------------

    def start(self):
        for i in range(self.n_senders):
            self._spawn(self._sender, i)
        for j in range(self.n_readers):
            self._spawn(self._reader, j)
        # One prober per site: a login to a cut-off site waits there (up to store_wait)
        # and must not hold up the measurement of the others.
        for site in self.sites:
            self._spawn(self._login_prober, site)
        return self

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=SMTP_TIMEOUT + 10)

    # -- SMTP ----------------------------------------------------------------------------------

    def _timed(self, site, what, fn, *args):
        t = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.smtp_waits.append((t, time.monotonic() - t, site, what))

    def _sender(self, i):
        order = self.sites[i % len(self.sites):] + self.sites[:i % len(self.sites)]
        conn = conn_site = None
        while not self.stopping.is_set():
            seq = next(self.seq)
            recipient = self.accounts[seq % len(self.accounts)]
            body = message(seq, recipient)
            self.started[seq] = time.monotonic()
            # Each message starts with the preferred site, as an MTA starts each delivery with
            # the best MX: the senders stay spread over the sites instead of piling up on
            # whichever site they last fell back to.
            at = failures = 0
            if conn is not None and conn_site != order[0]:
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
            while True:
                site = order[at % len(order)]
                try:
                    if conn is None:
                        conn_site = site
                        conn = self._timed(site, "connect", smtplib.SMTP,
                                           *hostport(self.ep[site]["smtp"]), None, SMTP_TIMEOUT)
                        self._timed(site, "EHLO", conn.ehlo, "load.cluster.test")
                    code, text = self._timed(site, "MAIL", conn.mail, SENDER)
                    if code == 250:
                        code, text = self._timed(site, "RCPT", conn.rcpt, recipient)
                    if code == 250:
                        code, text = self._timed(site, "DATA", conn.data, body)
                    if code == 250:
                        with self.lock:
                            self.acked[seq] = (recipient, site, time.monotonic())
                        break
                    if 500 <= code < 600:
                        with self.lock:
                            self.permanent.append((seq, site, code, text.decode(errors="replace")))
                        break
                    self.temporary.append((time.monotonic(), site, code))
                except (OSError, smtplib.SMTPException) as e:
                    self.temporary.append((time.monotonic(), site, type(e).__name__))
                    try:
                        conn and conn.close()
                    except Exception:
                        pass
                    conn = None
                # The next site, as an MTA tries the next MX; a short pause after a full round.
                at += 1
                failures += 1
                if failures % len(order) == 0:
                    time.sleep(0.5)
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
        if conn is not None:
            try:
                conn.quit()
            except Exception:
                pass

    # -- IMAP ----------------------------------------------------------------------------------

    def _record_uids(self, account, pairs):
        with self.lock:
            for uid, mid in pairs:
                if mid is None:
                    continue
                seen = self.uids[account].get(uid)
                if seen is not None and seen != mid:
                    self.uid_conflicts.append((account, uid, seen, mid))
                had = self.uid_of[account].get(mid)
                if had is not None and had != uid:
                    self.uid_conflicts.append((account, mid, had, uid))
                self.uids[account][uid] = mid
                self.uid_of[account][mid] = uid

    def _imap_timed(self, site, fn, *args):
        t = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.imap_waits.append((t, time.monotonic() - t, site, getattr(fn, "__name__", "")))

    def _reader(self, j):
        account = self.accounts[j % len(self.accounts)]
        order = self.sites[(j + 1) % len(self.sites):] + self.sites[:(j + 1) % len(self.sites)]
        at = 0
        while not self.stopping.is_set():
            site = order[at % len(order)]
            m = None
            try:
                m = self._imap_timed(site, imap_login, *hostport(self.ep[site]["imap"]),
                                     account, self.password)
                typ, _ = self._imap_timed(site, m.select, "INBOX")
                if typ != "OK":
                    raise imaplib.IMAP4.error(f"SELECT {typ}")
                validity = int(m.response("UIDVALIDITY")[1][0])
                with self.lock:
                    if self.uidvalidity.setdefault(account, validity) != validity:
                        self.uid_conflicts.append((account, "UIDVALIDITY",
                                                   self.uidvalidity[account], validity))
                last = 0
                while not self.stopping.is_set():
                    typ, data = self._imap_timed(
                        site, m.uid, "FETCH", f"{last + 1}:*",
                        "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                    if typ != "OK":
                        raise imaplib.IMAP4.error(f"FETCH {typ} {data}")
                    pairs = [(u, mid) for u, mid in parse_fetch(data) if u > last]
                    self._record_uids(account, pairs)
                    if pairs:
                        last = max(u for u, _ in pairs)
                        uid = random.choice(pairs)[0]
                        typ, data = self._imap_timed(site, m.uid, "STORE", str(uid),
                                                     "+FLAGS", "(\\Seen)")
                        if typ != "OK":
                            raise imaplib.IMAP4.error(f"STORE {typ} {data}")
                    time.sleep(0.3)
                m.logout()
            except (OSError, imaplib.IMAP4.error, EOFError, ValueError) as e:
                self.imap_errors.append((time.monotonic(), site, f"{type(e).__name__}: {e}"))
                if m is not None:
                    try:
                        m.shutdown()
                    except Exception:
                        pass
                at += 1
                time.sleep(0.5)

    def _login_prober(self, site):
        while not self.stopping.is_set():
            t = time.monotonic()
            ok = False
            try:
                m = imap_login(*hostport(self.ep[site]["imap"]), self.accounts[0], self.password)
                ok = m.select("INBOX")[0] == "OK"
                m.logout()
            except (OSError, imaplib.IMAP4.error, EOFError):
                pass
            self.logins.append((t, time.monotonic(), site, ok))
            time.sleep(0.2)

    # -- figures -------------------------------------------------------------------------------

    def first_ack_after(self, t0, sites=None):
        """Seconds from t0 to the first 250 of a transaction that began after t0."""
        with self.lock:
            times = [at for seq, (_, site, at) in self.acked.items()
                     if self.started.get(seq, 0) >= t0 and (sites is None or site in sites)]
        return min(times) - t0 if times else None

    def first_login_after(self, t0, sites):
        times = [end for start, end, site, ok in self.logins if ok and start >= t0 and site in sites]
        return min(times) - t0 if times else None

    def rate(self, t0, t1):
        with self.lock:
            n = sum(1 for _, _, at in self.acked.values() if t0 <= at < t1)
        return n / (t1 - t0) if t1 > t0 else 0.0

    def longest_wait(self, t0, t1, waits):
        """The longest wait that overlapped [t0, t1), including one already under way at t0."""
        inside = [(d, site, what) for t, d, site, what in list(waits) if t < t1 and t + d >= t0]
        return max(inside, default=(0.0, None, None))


def idle_wake(imap_addr, smtp_addr, account, password, timeout=10.0):
    """Seconds from a delivery through one site to the EXISTS it causes in an IDLE elsewhere."""
    m = imap_login(*hostport(imap_addr), account, password)
    try:
        m.select("INBOX")
        m.send(b"I1 IDLE\r\n")
        line = m.readline()
        assert line.startswith(b"+"), line
        seq = random.randrange(10**9, 10**10)
        t0 = time.monotonic()
        with smtplib.SMTP(*hostport(smtp_addr), timeout=60) as s:
            s.sendmail(SENDER, [account], message(seq, account))
        sent = time.monotonic()
        m.sock.settimeout(timeout)
        while True:
            line = m.readline()
            if not line:
                raise EOFError("IDLE connection closed")
            if line.rstrip().endswith(b"EXISTS"):
                # From the start of the SMTP transaction: the EXISTS may come before the 250
                # has reached the sender, as notices go out before the reply.
                return time.monotonic() - t0, sent - t0, seq
    finally:
        try:
            m.send(b"DONE\r\n")
            m.shutdown()
        except (OSError, socket.timeout):
            pass
