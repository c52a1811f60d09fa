#!/usr/bin/env python3
"""Outbound queue benchmark: messages per second from a full queue to a local sink, Trimaran
(SQLite, PostgreSQL) against Postfix relaying to the same sink, in the same run.

Each target is first loaded with the same messages (smtp-source, 4 KB each) while its relay
is held back (Trimaran: the sink is down, so every message is tried once and deferred for an
hour; Postfix: defer_transports = smtp). Then the sink (Postfix's smtp-sink, -M N: it exits
after N messages) is started and the queue flushed (`trimaran queue retry --all`,
`postqueue -f`); the clock runs from the flush to the sink's exit. Both sides use 20
connections to the one destination and reuse them.
"""

import argparse
import datetime
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness import Postgres, free_port, trimaran_bin, wait_for_banner  # noqa: E402

TESTING = ROOT.parent / "shared" / "testing"
CONCURRENCY = 20


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def start_daemon(cmd):
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def load(port, count, size, recipient):
    # smtp-source: 10 sessions, connections reused, count messages of size bytes.
    run(["smtp-source", "-4", "-s", "10", "-d", "-m", str(count), "-l", str(size),
         "-f", "sender@example.net", "-t", recipient, f"127.0.0.1:{port}"])


def sink(port, count):
    proc = subprocess.Popen(["smtp-sink", "-u", "nobody", "-M", str(count), f"127.0.0.1:{port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_banner(port, 10, proc)
    return proc


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


class Trimaran:
    def __init__(self, name, workdir, sink_port, store=None):
        self.name = f"trimaran-{name}"
        self.data = workdir / self.name
        self.data.mkdir()
        self.store = store or f"sqlite:{self.data}/trimaran.db"
        self.port = free_port()
        self.sink_port = sink_port

    def cli(self, *args, input=None):
        return subprocess.run([trimaran_bin(), "--data-dir", str(self.data), "--store", self.store, *args],
                              input=input, check=True, capture_output=True)

    def queued(self):
        return len(self.cli("queue", "list").stdout.splitlines())

    def start(self):
        self.cli("domain", "add", "example.test")
        # The load arrives over the MX port for an alias that forwards to a remote address,
        # so every message enters the outbound queue.
        self.cli("alias", "add", "fwd@example.test", "bob@relay.test")
        config = self.data / "outbound.toml"
        config.write_text(f'[outbound]\nsmarthost = "127.0.0.1:{self.sink_port}"\n'
                          f"retry_base = 3600\nretry_max = 3600\nmax_connections_per_destination = {CONCURRENCY}\n")
        self.log = open(self.data / "server.log", "ab")
        self.proc = subprocess.Popen(
            [trimaran_bin(), "--data-dir", str(self.data), "--store", self.store, "--config", str(config),
             "serve", "--smtp", f"127.0.0.1:{self.port}", "--submission", "none", "--submissions", "none",
             "--pop3", "none", "--pop3s", "none", "--imap", "none", "--imaps", "none",
             "--https", "none"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
        wait_for_banner(self.port, proc=self.proc)

    def fill(self, count, size):
        load(self.port, count, size, "fwd@example.test")
        # Every message tried once against the missing sink and deferred.
        wait(lambda: all(line.split(b"\t")[4] != b"0"
                         for line in self.cli("queue", "list").stdout.splitlines()) and self.queued() >= count,
             300, "every message deferred once")

    def flush(self):
        self.cli("queue", "retry", "--all")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Postfix:
    name = "postfix"

    def __init__(self, workdir, sink_port):
        self.dir = workdir / "postfix"
        self.port = free_port()
        self.sink_port = sink_port

    def postconf(self, *args):
        run(["postconf", "-c", str(self.dir / "etc"), *args])

    def start(self):
        p = self.dir
        for sub in ("etc", "spool", "data"):
            (p / sub).mkdir(parents=True)
        shutil.copy("/etc/postfix/dynamicmaps.cf", p / "etc")
        main = ((TESTING / "postfix-main.cf.in").read_text().replace("@DIR@", str(p))
                .replace("@LMTP_PORT@", "9").replace("@RELAY_PORT@", str(self.sink_port)))
        (p / "etc" / "main.cf").write_text(main)
        master = pathlib.Path("/etc/postfix/master.cf").read_text().replace(
            "smtp      inet  n       -       y       -       -       smtpd",
            f"127.0.0.1:{self.port} inet n - n - - smtpd")
        (p / "etc" / "master.cf").write_text(master)
        self.postconf("-F", "*/*/chroot = n")
        self.postconf("-e", "defer_transports = smtp", f"smtp_destination_concurrency_limit = {CONCURRENCY}",
                      "default_process_limit = 100")
        shutil.chown(p / "data", "postfix")
        run(["postfix", "-c", str(p / "etc"), "set-permissions"])
        start_daemon(["postfix", "-c", str(p / "etc"), "start"])
        wait_for_banner(self.port)

    def queued(self):
        out = subprocess.run(["postqueue", "-c", str(self.dir / "etc"), "-j"], capture_output=True, text=True).stdout
        return len(out.splitlines())

    def fill(self, count, size):
        load(self.port, count, size, "bob@relay.test")
        wait(lambda: self.queued() >= count, 300, "every message queued")

    def flush(self):
        self.postconf("-e", "defer_transports =")
        run(["postfix", "-c", str(self.dir / "etc"), "reload"])
        run(["postqueue", "-c", str(self.dir / "etc"), "-f"])

    def stop(self):
        subprocess.run(["postfix", "-c", str(self.dir / "etc"), "stop"], capture_output=True)


def measure(target, count, size):
    target.start()
    try:
        target.fill(count, size)
        s = sink(target.sink_port, count)
        started = time.perf_counter()
        target.flush()
        s.wait(timeout=600)
        seconds = time.perf_counter() - started
    finally:
        target.stop()
    return {"target": target.name, "messages": count, "seconds": seconds, "rate": count / seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--targets", default="postfix,sqlite,postgres")
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()
    results = []
    pg = None
    with tempfile.TemporaryDirectory(prefix="trimaran-bench-outbound-") as tmp:
        workdir = pathlib.Path(tmp)
        os.chmod(workdir, 0o755)
        for name in args.targets.split(","):
            port = free_port()
            if name == "postfix":
                target = Postfix(workdir, port)
            elif name == "sqlite":
                target = Trimaran("sqlite", workdir, port)
            elif name == "postgres":
                if pg is None:
                    pg = Postgres()
                    pg.start()
                target = Trimaran("postgres", workdir, port, store=pg.url(pg.new_database()))
            else:
                raise SystemExit(f"unknown target {name}")
            r = measure(target, args.messages, args.size)
            print(f"{r['target']:<18} {r['messages']} messages in {r['seconds']:.2f} s: {r['rate']:.0f} msg/s",
                  flush=True)
            results.append(r)
        if pg is not None:
            pg.destroy()
    reference = next((r for r in results if r["target"] == "postfix"), None)
    lines = [f"# Outbound queue → smtp-sink, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             "", f"{args.messages} messages of {args.size} bytes, {CONCURRENCY} connections to the one "
             f"destination; {platform.node()}, {os.cpu_count()} CPUs.", "",
             "| target | seconds | msg/s | ratio to Postfix |", "|---|---|---|---|"]
    for r in results:
        ratio = f"{r['rate'] / reference['rate']:.2f}" if reference else "-"
        lines.append(f"| {r['target']} | {r['seconds']:.2f} | {r['rate']:.0f} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
