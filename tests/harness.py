"""Starts and drives real Trimaran servers and a private PostgreSQL for the integration tests."""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent


def search_backlog(store):
    """Messages a Trimaran store has still to put in its text index: a delivery leaves a long
    text to the background indexer."""
    sql = "SELECT count(*) FROM search_backlog"
    if store.startswith("sqlite:"):
        import sqlite3
        path = store.split(":", 1)[1].removeprefix("//")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute(sql).fetchone()[0]
        finally:
            db.close()
    out = subprocess.run(["psql", store, "-At", "-c", sql], check=True, capture_output=True,
                         text=True)
    return int(out.stdout.strip())


def wait_for_index(store, limit=1800):
    """Waits until the store's text index has every message; returns the seconds waited."""
    started = time.monotonic()
    while search_backlog(store) > 0:
        if time.monotonic() - started > limit:
            raise RuntimeError(f"the text index of {store} did not catch up in {limit} s")
        time.sleep(0.5)
    return time.monotonic() - started


def trimaran_bin():
    explicit = os.environ.get("TRIMARAN_BIN")
    if explicit:
        return explicit
    candidates = [
        pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "trimaran",
        ROOT / "target" / "release" / "trimaran",
        pathlib.Path.home() / ".cache" / "trimaran" / "target" / "release" / "trimaran",
    ]
    for c in candidates:
        if c.exists():
            return str(c)
    raise RuntimeError("trimaran binary not found: build it or set TRIMARAN_BIN")


_handed_out = set()


def free_ports(n):
    """`n` distinct free loopback ports, none handed out before in this run. The sockets are
    held open together while choosing, so the kernel cannot return one port twice."""
    held, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def free_port():
    return free_ports(1)[0]


def wait_for_banner(port, timeout=30.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no SMTP banner on port {port} within {timeout}s")


def pg_bin(name):
    found = sorted(pathlib.Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return str(found[-1])


class Postgres:
    """A private PostgreSQL instance on a loopback port, run as the postgres system user."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="trimaran-pg-")
        shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self._run(pg_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, *args, check=True):
        return subprocess.run(["runuser", "-u", "postgres", "--", *args],
                              check=check, capture_output=True, text=True)

    def start(self):
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=on -c synchronous_commit=on -c max_connections=300")
        self._run(pg_bin("pg_ctl"), "-D", self.data, "-o", opts, "-l",
                  os.path.join(self.dir, "log"), "-w", "-t", "60", "start")

    def stop(self, mode="fast"):
        self._run(pg_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, sql, db="postgres"):
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                              "-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def new_database(self):
        name = "t_" + uuid.uuid4().hex[:16]
        self.psql(f"CREATE DATABASE {name}")
        return name

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"


# A standalone Dovecot: loopback only, its own directories, plain-text logins, Maildir.
DOVECOT_CONF = """base_dir = {dir}/run
state_dir = {dir}/state
instance_name = trimaran-oracle
protocols = imap
listen = 127.0.0.1
log_path = {dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
mail_uid = vmail
mail_gid = vmail
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/passwd
  default_fields = home={dir}/home/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def dovecot_config(directory, imap_port):
    """The configuration of a standalone Dovecot, the reference for IMAP answers."""
    return DOVECOT_CONF.format(dir=directory, port=imap_port)


SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


class Sink:
    """Postfix's smtp-sink (on loopback unless told otherwise), keeping every transaction in its own file."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        # smtp-sink drops to "nobody" and writes the files as that user: a directory it can
        # reach (pytest's own are private to root).
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="trimaran-sink-"))
        os.chmod(self.dir, 0o777)
        self.port = free_port()
        self.proc = None

    def start(self, *flags):
        self.proc = subprocess.Popen(
            [SMTP_SINK, "-u", "nobody", "-d", f"{self.dir}/%H%M%S.", *flags,
             f"{self.host}:{self.port}", "64"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_banner(self.port, 10, self.proc)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def clear(self):
        for path in self.dir.iterdir():
            path.unlink()

    def messages(self):
        """Every transaction received: (its smtp-sink trace fields, the message as CRLF bytes)."""
        out = []
        for path in sorted(self.dir.iterdir()):
            raw = path.read_bytes()
            if not raw.endswith(b"\n\n"):
                continue  # still being written
            trace = {}
            lines = raw.split(b"\n")
            for line in lines:
                if not line.startswith(b"X-"):
                    break
                name, _, value = line.decode().partition(": ")
                trace.setdefault(name, []).append(value)
            out.append((trace, raw.replace(b"\n", b"\r\n")))
        return out


class Server:
    """One `trimaran serve` process with its own data directory and store."""

    def __init__(self, backend, workdir, pg=None, extra_args=(), data_dir=None, share_store_of=None):
        self.backend = backend
        self.pg = pg
        self.data_dir = pathlib.Path(data_dir or workdir / "data")
        self.log_path = workdir / "server.log"
        (self.smtp_port, self.submission_port, self.submissions_port,
         self.pop3_port, self.pop3s_port, self.imap_port, self.imaps_port,
         self.https_port) = free_ports(8)
        self.extra_args = list(extra_args)
        self.config = None  # a TOML file passed with --config
        if share_store_of is not None:
            # A second process on the same store, as in a cluster.
            self.store, self.db, self.pg = share_store_of.store, share_store_of.db, share_store_of.pg
        elif backend == "sqlite":
            self.store = f"sqlite:{self.data_dir}/trimaran.db"
            self.db = None
        else:
            self.db = pg.new_database()
            self.store = pg.url(self.db)
        self.proc = None

    # -- process control ---------------------------------------------------------------------

    def start(self, timeout=30):
        self.log = open(self.log_path, "ab")
        # Outbound mail of tests that do not set up a peer goes to a closed loopback port, so it
        # stays in the queue (pending) instead of reaching for DNS.
        outbound = [] if self.config or "--smarthost" in self.extra_args else [
            "--smarthost", "127.0.0.1:9"]
        self.proc = subprocess.Popen(
            [trimaran_bin(), "--data-dir", str(self.data_dir), "--store", self.store,
             *(["--config", str(self.config)] if self.config else []), "serve",
             "--smtp", f"127.0.0.1:{self.smtp_port}",
             "--submission", f"127.0.0.1:{self.submission_port}",
             "--submissions", f"127.0.0.1:{self.submissions_port}",
             "--pop3", f"127.0.0.1:{self.pop3_port}",
             "--pop3s", f"127.0.0.1:{self.pop3s_port}",
             "--imap", f"127.0.0.1:{self.imap_port}",
             "--imaps", f"127.0.0.1:{self.imaps_port}",
             "--https", f"127.0.0.1:{self.https_port}",
             "--hostname", "mx.trimaran.test", *outbound, *self.extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_banner(self.smtp_port, timeout, self.proc)
        return self

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill9()

    def restart(self):
        self.stop()
        return self.start()

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- administration through the CLI ------------------------------------------------------

    def cli(self, *args, input=None, check=True):
        # The same configuration file as the server (e.g. its [blobs] section).
        config = ["--config", str(self.config)] if self.config else []
        proc = subprocess.run([trimaran_bin(), "--data-dir", str(self.data_dir), "--store", self.store,
                               *config, *args], input=input, capture_output=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"trimaran {' '.join(args)} failed: {proc.stderr.decode()}")
        return proc

    def add_domain(self, domain):
        self.cli("domain", "add", domain)

    def add_account(self, address, password="secret"):
        self.cli("account", "add", address, input=(password + "\n").encode())

    def add_alias(self, alias, target):
        self.cli("alias", "add", alias, target)

    def mail_list(self, account, mailbox=None):
        args = ["mail", "list", "--account", account]
        if mailbox:
            args += ["--mailbox", mailbox]
        rows = []
        for line in self.cli(*args).stdout.decode().splitlines():
            mbox, uid, size, digest, subject = line.split("\t", 4)
            rows.append({"mailbox": mbox, "uid": int(uid), "size": int(size),
                         "blake3": digest, "subject": subject})
        return rows

    def mail_show(self, account, uid, mailbox="INBOX", check=True):
        proc = self.cli("mail", "show", "--account", account, "--mailbox", mailbox,
                        "--uid", str(uid), check=check)
        return proc.stdout if check else proc

    def queue_list(self):
        return [line.split("\t") for line in self.cli("queue", "list").stdout.decode().splitlines()]

    # -- direct store access for fault injection ---------------------------------------------

    def sql(self, query):
        """Runs SQL against the store (for injecting faults and counting rows)."""
        if self.backend == "sqlite":
            import sqlite3
            conn = sqlite3.connect(self.data_dir / "trimaran.db", timeout=30)
            try:
                cur = conn.execute(query)
                rows = cur.fetchall()
                conn.commit()
                return rows
            finally:
                conn.close()
        out = self.pg.psql(query, db=self.db)
        return [tuple(line.split("|")) for line in out.splitlines()] if out else []


def _main(argv):
    """`python3 harness.py pg-start DIRFILE` / `pg-stop DIRFILE`: a PostgreSQL for the Rust tests."""
    import json
    import sys
    command, state = argv[1], argv[2]
    if command == "pg-start":
        pg = Postgres()
        pg.start()
        with open(state, "w") as f:
            json.dump({"dir": pg.dir, "data": pg.data, "port": pg.port}, f)
        print(pg.url("postgres"))
    elif command == "pg-stop":
        with open(state) as f:
            saved = json.load(f)
        pg = Postgres.__new__(Postgres)
        pg.dir, pg.data, pg.port = saved["dir"], saved["data"], saved["port"]
        pg.destroy()
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    import sys
    _main(sys.argv)
