#!/usr/bin/env python3
"""SMTP delivery benchmark: Trimaran (SQLite, PostgreSQL) against Postfix delivering into Dovecot
over LMTP, measured in the same run with the same load generator and the same messages.

A rate counts messages accepted AND durable: for Trimaran a 250 is only sent after the commit
(G1), so the clock stops at the last 250; for Postfix + Dovecot it stops when the last message
is in a Maildir. Latency is from the end of DATA ("." sent) to the final reply.
"""

import argparse
import asyncio
import base64
import datetime
import os
import pathlib
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness import Postgres, free_port, trimaran_bin, wait_for_banner  # noqa: E402

TESTING = ROOT.parent / "shared" / "testing"
ACCOUNTS = [f"user{i}@example.com" for i in range(1, 11)]
# (share, smallest, largest) in bytes: mostly small mail, a tail of attachments.
SIZE_MIX = [(0.50, 4_000, 10_000), (0.30, 10_000, 50_000), (0.15, 50_000, 100_000), (0.05, 100_000, 200_000)]


def make_messages(count, seed):
    rnd = random.Random(seed)
    messages = []
    for i in range(count):
        pick = rnd.random()
        for share, low, high in SIZE_MIX:
            if pick < share:
                break
            pick -= share
        size = rnd.randint(low, high)
        header = (f"From: Sender {i} <sender{i}@elsewhere.test>\r\nTo: {ACCOUNTS[i % len(ACCOUNTS)]}\r\n"
                  f"Subject: benchmark message {i}\r\nMessage-ID: <bench-{seed}-{i}@elsewhere.test>\r\n"
                  "Date: Tue, 24 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
        # base64 text never starts a line with ".", so no dot-stuffing is needed.
        body = base64.encodebytes(rnd.randbytes(max(0, size - len(header)) * 3 // 4)).replace(b"\n", b"\r\n")
        messages.append((ACCOUNTS[i % len(ACCOUNTS)], header + body))
    return messages


async def read_reply(reader):
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3]), line


async def client(port, messages, next_index, latencies):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    await read_reply(reader)
    writer.write(b"EHLO bench.test\r\n")
    await read_reply(reader)
    while True:
        i = next_index[0]
        if i >= len(messages):
            break
        next_index[0] += 1
        rcpt, data = messages[i]
        writer.write(f"MAIL FROM:<bench@elsewhere.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        for expected in (250, 250, 354):
            code, line = await read_reply(reader)
            if code != expected:
                raise RuntimeError(f"unexpected reply {line!r}")
        writer.write(data + b".\r\n")
        started = time.perf_counter()
        code, line = await read_reply(reader)
        latencies.append(time.perf_counter() - started)
        if code != 250:
            raise RuntimeError(f"message refused: {line!r}")
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def load(port, messages, connections):
    latencies = []
    next_index = [0]
    await asyncio.gather(*(client(port, messages, next_index, latencies) for _ in range(connections)))
    return latencies


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


def start_daemon(cmd):
    # A daemon keeps inherited pipes open; capturing its output would wait forever.
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


class TrimaranTarget:
    NOTES = {
        "sqlite": "250 after the group commit is fsync'd (SQLite WAL, synchronous=FULL)",
        "postgres": "250 after COMMIT with synchronous_commit=on (private PostgreSQL 15, fsync=on)",
    }

    def __init__(self, name, workdir, store=None):
        self.name = name
        self.note = self.NOTES[name]
        self.data = workdir / f"trimaran-{name}"
        self.store = store or f"sqlite:{self.data}/trimaran.db"
        self.port = free_port()
        self.proc = None

    def cli(self, *args, input=None):
        return subprocess.run([trimaran_bin(), "--data-dir", str(self.data), "--store", self.store, *args],
                              input=input, check=True, capture_output=True)

    def start(self):
        self.data.mkdir(parents=True, exist_ok=True)
        self.cli("domain", "add", "example.com")
        for a in ACCOUNTS:
            self.cli("account", "add", a, input=b"pass\n")
        self.log = open(self.data / "server.log", "ab")
        self.proc = subprocess.Popen(
            [trimaran_bin(), "--data-dir", str(self.data), "--store", self.store, "serve",
             "--smtp", f"127.0.0.1:{self.port}", "--submission", "none", "--submissions", "none",
             "--pop3", "none", "--pop3s", "none", "--imap", "none", "--imaps", "none",
             "--https", "none"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
        wait_for_banner(self.port, proc=self.proc)

    def delivered(self):
        total = 0
        for a in ACCOUNTS:
            total += len(self.cli("mail", "list", "--account", a).stdout.splitlines())
        return total

    def wait_durable(self, expected, timeout):
        # 250 is sent after the commit: nothing to wait for. Count once to prove it.
        return time.perf_counter(), self.delivered()

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=60)


class PostfixDovecot:
    name = "postfix+dovecot"
    note = "Postfix queue (fsync before 250) → LMTP → Dovecot Maildir, mail_fsync=optimized (default)"

    def __init__(self, workdir):
        self.dir = workdir / "postfix-dovecot"
        self.dir.mkdir()
        self.port = free_port()
        self.lmtp = free_port()

    def start(self):
        d = self.dir
        # Dovecot, standalone, from the shared template.
        conf = (TESTING / "dovecot.conf.in").read_text().replace("@DIR@", str(d))
        conf = (conf.replace("port = 10143", f"port = {free_port()}")
                    .replace("port = 10110", f"port = {free_port()}")
                    .replace("port = 10024", f"port = {self.lmtp}"))
        (d / "dovecot.conf").write_text(conf)
        (d / "passwd").write_text("".join(f"{a.split('@')[0]}:{{PLAIN}}pass::::::\n" for a in ACCOUNTS))
        (d / "home").mkdir()
        shutil.chown(d / "home", "vmail", "vmail")
        start_daemon(["dovecot", "-c", str(d / "dovecot.conf")])
        # Postfix, standalone, from the shared template.
        p = d / "postfix"
        for sub in ("etc", "spool", "data"):
            (p / sub).mkdir(parents=True)
        shutil.copy("/etc/postfix/dynamicmaps.cf", p / "etc")
        main = ((TESTING / "postfix-main.cf.in").read_text().replace("@DIR@", str(p))
                .replace("@LMTP_PORT@", str(self.lmtp)).replace("@RELAY_PORT@", "9"))
        (p / "etc" / "main.cf").write_text(main)
        master = pathlib.Path("/etc/postfix/master.cf").read_text().replace(
            "smtp      inet  n       -       y       -       -       smtpd",
            f"127.0.0.1:{self.port} inet n - n - - smtpd")
        (p / "etc" / "master.cf").write_text(master)
        run(["postconf", "-c", str(p / "etc"), "-F", "*/*/chroot = n"])
        shutil.chown(p / "data", "postfix")
        run(["postfix", "-c", str(p / "etc"), "set-permissions"])
        start_daemon(["postfix", "-c", str(p / "etc"), "start"])
        wait_for_banner(self.port)

    def delivered(self):
        total = 0
        for maildir in (self.dir / "home").glob("*/Maildir"):
            for sub in ("new", "cur"):
                folder = maildir / sub
                if folder.is_dir():
                    total += sum(1 for _ in os.scandir(folder))
        return total

    def wait_durable(self, expected, timeout):
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            count = self.delivered()
            if count >= expected:
                return time.perf_counter(), count
            time.sleep(0.02)
        return time.perf_counter(), self.delivered()

    def stop(self):
        subprocess.run(["postfix", "-c", str(self.dir / "postfix" / "etc"), "stop"], capture_output=True)
        subprocess.run(["doveadm", "-c", str(self.dir / "dovecot.conf"), "stop"], capture_output=True)


def measure(target, messages, warmup, connections):
    asyncio.run(load(target.port, warmup, connections))
    target.wait_durable(len(warmup), 120)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    latencies = asyncio.run(load(target.port, messages, connections))
    last_ack = time.perf_counter()
    done, delivered = target.wait_durable(len(warmup) + len(messages), 300)
    after = resource.getrusage(resource.RUSAGE_SELF)
    seconds = done - started
    return {
        "target": target.name, "messages": len(messages), "seconds": seconds,
        "rate": len(messages) / seconds, "p50": percentile(latencies, 0.50) * 1000,
        "p99": percentile(latencies, 0.99) * 1000, "acked_after": last_ack - started,
        "delivered": delivered - len(warmup),
        "client_cpu": (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / seconds,
        "note": target.note,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--targets", default="postfix,sqlite,postgres")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--quick", action="store_true", help="300 messages: a smoke run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    if args.quick:
        args.messages = 300
    targets = args.targets.split(",")
    messages = make_messages(args.messages, args.seed)
    warmup = make_messages(100, args.seed + 1)
    total_bytes = sum(len(m) for _, m in messages)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="trimaran-bench-"))
    workdir.chmod(0o755)  # Postfix and Dovecot work as their own users inside it
    results, cleanups = [], []
    try:
        for name in targets:
            if name == "postfix":
                target = PostfixDovecot(workdir)
            elif name == "sqlite":
                target = TrimaranTarget("sqlite", workdir)
            elif name == "postgres":
                pg = Postgres()
                pg.start()
                cleanups.append(pg.destroy)
                target = TrimaranTarget("postgres", workdir, store=pg.url("postgres"))
            else:
                sys.exit(f"unknown target {name}")
            print(f"-- {target.name}", flush=True)
            target.start()
            try:
                r = measure(target, messages, warmup, args.connections)
            finally:
                target.stop()
            if r["delivered"] != len(messages):
                sys.exit(f"{target.name}: {r['delivered']} of {len(messages)} messages delivered")
            results.append(r)
            print(f"   {r['rate']:.0f} msg/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms", flush=True)
    finally:
        for cleanup in cleanups:
            cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    reference = next((r for r in results if r["target"] == "postfix+dovecot"), None)
    lines = ["| target | messages | seconds | msg/s | vs Postfix+Dovecot | p50 ms | p99 ms | client CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = f"{r['rate'] / reference['rate']:.2f}×" if reference else "–"
        lines.append(f"| {r['target']} | {r['messages']} | {r['seconds']:.2f} | {r['rate']:.0f} | {ratio} | "
                     f"{r['p50']:.1f} | {r['p99']:.1f} | {r['client_cpu'] * 100:.0f}% |")
    table = "\n".join(lines)
    notes = "\n".join(f"- {r['target']}: {r['note']}" for r in results)
    uname = platform.uname()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "bench/smtp-delivery " + " ".join(sys.argv[1:])
    report = (f"## SMTP delivery ({stamp})\n\n`{command}` — {args.messages} messages "
              f"({total_bytes / len(messages) / 1024:.0f} KiB average, 4–200 KB mix), {args.connections} "
              f"connections, 10 accounts; {os.cpu_count()} cores, {uname.system} {uname.release}. The load "
              f"generator, servers and databases share the machine.\n\n{table}\n\n{notes}\n")
    print("\n" + report)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"smtp-delivery-{datetime.date.today().isoformat()}.md"
    path.write_text(report)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
