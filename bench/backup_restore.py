#!/usr/bin/env python3
"""Backup and restore benchmark: `trimaran backup create` / `backup restore` on SQLite and on
PostgreSQL against tar of a Maildir copy of the same mail and Dovecot's `doveadm backup`, in
the same run, on the same messages.

Every target gets the same seeded-random messages (bench/imap_load.py's generator: 8 KiB on
average, text, quoted-printable, UTF-8, HTML alternatives, attachments): Trimaran through IMAP
MULTIAPPEND, the Maildirs written directly (a delivery agent's file names). Seeding is not
timed. Then, for each target, timed one after another with the page cache dropped before each
step (when this runs as root), so that both read from disk:

  backup   trimaran: `backup create` into an empty repository (fsyncs every pack and snapshot)
           tar:      `tar -cf` of the Maildirs, then `sync`
           doveadm:  `doveadm backup` of every user into a second Maildir tree, then `sync`
  restore  trimaran: `backup restore` into a new store of the same back end (every body
                     checked against its hash, committed durably; the search index is
                     built afterwards by the server's background indexer, not timed here).
                     SQLite: no store there yet, so it is built beside its place without a
                     WAL and linked in when complete; PostgreSQL: an empty database.
           tar:      `tar -xf` into an empty directory, then `sync`
           doveadm:  `doveadm backup -R` of every user from that tree into emptied Maildirs

After each restore the result is checked: the same number of messages in every account, and
for Trimaran the same BLAKE3 of every message, mailbox and UID as the source.
"""

import argparse
import datetime
import os
import pathlib
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from harness import Postgres  # noqa: E402
from imap_load import Dovecot, Trimaran, argon2_hash, make_mailboxes, run  # noqa: E402


def drop_caches():
    """Cold reads for every target alike; possible only as root."""
    subprocess.run(["sync"])
    try:
        pathlib.Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(fn):
    cold = drop_caches()
    started = time.perf_counter()
    fn()
    subprocess.run(["sync"])
    return time.perf_counter() - started, cold


def du(path):
    return int(run(["du", "-sb", str(path)], text=True).stdout.split()[0])


def listing(t, accounts):
    """(account, mailbox, uid, blake3) of every message, through the CLI."""
    rows = set()
    for a in accounts:
        for line in t.cli("mail", "list", "--account", a).stdout.decode().splitlines():
            mbox, uid, _size, digest, _subject = line.split("\t", 4)
            rows.add((a, mbox, int(uid), digest))
    return rows


def maildir_count(home, account):
    """Messages of a Maildir INBOX: in cur/ and, unseen ones as dsync writes them, in new/."""
    return sum(1 for sub in ("cur", "new") if (home / account / "Maildir" / sub).is_dir()
               for _ in (home / account / "Maildir" / sub).iterdir())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--messages", type=int, default=1000, help="messages per account")
    parser.add_argument("--targets", default="tar,doveadm,sqlite,postgres")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--quick", action="store_true", help="10 accounts × 200 messages")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.accounts, args.messages = 10, 200
    names = args.targets.split(",")

    started = time.perf_counter()
    mailboxes = make_mailboxes(args.accounts, args.messages, args.seed)
    count = sum(len(m) for m in mailboxes.values())
    total_bytes = sum(len(d) for ms in mailboxes.values() for d, _ in ms)
    print(f"generated {count} messages, {total_bytes / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s",
          flush=True)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="trimaran-backup-bench-", dir=os.environ.get("BENCH_DIR")))
    workdir.chmod(0o755)
    results, pgs, servers = [], [], []
    try:
        if "tar" in names or "doveadm" in names:
            cert, key = workdir / "cert.pem", workdir / "key.pem"
            run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=localhost"])
            d = Dovecot(workdir, mailboxes, cert, key, argon2_hash(workdir))
            print("-- maildir: writing Maildirs", flush=True)
            d.seed()  # and starts Dovecot: doveadm looks users up through its auth service
            home = d.dir / "home"
            conf = d.dir / "dovecot.conf"
            accounts = list(mailboxes)
            if "tar" in names:
                archive = workdir / "maildir.tar"
                b, cold = timed(lambda: run(["tar", "-cf", str(archive), "-C", str(home), "."]))
                target = workdir / "tar-restored"
                target.mkdir()
                r, _ = timed(lambda: run(["tar", "-xf", str(archive), "-C", str(target)]))
                ok = all(maildir_count(target, a) == len(mailboxes[a]) for a in accounts)
                results.append({"name": "tar of Maildirs", "backup": b, "restore": r, "size": du(archive),
                                "source": du(home), "ok": ok, "cold": cold})
                shutil.rmtree(target)
                archive.unlink()
            if "doveadm" in names:
                dest = workdir / "doveadm-backup"
                dest.mkdir()
                run(["chown", "vmail:vmail", str(dest)])

                def dsync(reverse):
                    for a in accounts:
                        run(["doveadm", "-c", str(conf), "backup", *(["-R"] if reverse else []), "-u", a,
                             f"maildir:{dest}/{a}"])
                b, cold = timed(lambda: dsync(False))
                for a in accounts:
                    shutil.rmtree(home / a / "Maildir")
                r, _ = timed(lambda: dsync(True))
                ok = all(maildir_count(home, a) == len(mailboxes[a]) for a in accounts)
                results.append({"name": "doveadm backup (Dovecot Maildir)", "backup": b, "restore": r,
                                "size": du(dest), "source": du(home), "ok": ok, "cold": cold})
            d.stop()
            shutil.rmtree(d.dir, ignore_errors=True)

        for backend in ("sqlite", "postgres"):
            if backend not in names:
                continue
            pg = None
            if backend == "postgres":
                pg = Postgres()
                pgs.append(pg)
                pg.start()
                source = Trimaran("postgres", workdir, mailboxes, store=pg.url(pg.new_database()), pg=pg)
            else:
                source = Trimaran("sqlite", workdir, mailboxes)
            servers.append(source)
            print(f"-- {source.name}: seeding over IMAP (MULTIAPPEND)", flush=True)
            source.start()
            source.seed()
            source.stop()
            print(f"   seeded in {source.seed_seconds:.1f} s", flush=True)
            repo = workdir / f"repo-{backend}"
            b, cold = timed(lambda: source.cli("backup", "create", "--to", str(repo), "--quiet"))
            dest_dir = workdir / f"restored-{backend}"
            dest_dir.mkdir()
            dest = Trimaran(backend, dest_dir, mailboxes,
                            store=pg.url(pg.new_database()) if pg else None, pg=pg)
            r, _ = timed(lambda: dest.cli("backup", "restore", "--from", str(repo), "--quiet"))
            ok = listing(dest, list(mailboxes)) == listing(source, list(mailboxes))
            size_source = du(source.dir) if backend == "sqlite" else int(pg.psql(
                "SELECT pg_database_size(current_database())", db=source.store.rsplit("/", 1)[1]).strip())
            results.append({"name": f"trimaran backup ({backend})", "backup": b, "restore": r,
                            "size": du(repo), "source": size_source, "ok": ok, "cold": cold})
            shutil.rmtree(repo)
        for r in results:
            print(f"   {r['name']:34} backup {r['backup']:7.1f} s  restore {r['restore']:7.1f} s  "
                  f"restore/backup {r['backup'] / r['restore']:.2f}x as fast  size {r['size'] / 1e6:.0f} MB  "
                  f"{'ok' if r['ok'] else 'MISMATCH'}", flush=True)
    finally:
        for s in servers:
            s.stop()
        for pg in pgs:
            pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)

    report = render(args, results, count, total_bytes)
    print("\n" + report)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"backup-restore-{datetime.date.today().isoformat()}"
    path, n = out / f"{stem}.md", 2
    while path.exists():
        path, n = out / f"{stem}-{n}.md", n + 1
    path.write_text(report)
    print(f"written to {path}")


def render(args, results, count, total_bytes):
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    lines = [
        f"# Backup and restore, {datetime.date.today().isoformat()}",
        "",
        f"{count} messages ({total_bytes / 1e6:.0f} MB) in {args.accounts} accounts; commit {commit}; "
        f"{platform.node()}, {os.cpu_count()} cores. Page cache dropped before every step: "
        f"{'yes' if results and results[0]['cold'] else 'no (not root)'}.",
        "",
        "| target | backup s | msgs/s | restore s | msgs/s | restore speed / backup speed | backup size MB | "
        "source size MB | restored intact |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['backup']:.1f} | {count / r['backup']:.0f} | {r['restore']:.1f} | "
            f"{count / r['restore']:.0f} | {r['backup'] / r['restore']:.2f} | {r['size'] / 1e6:.0f} | "
            f"{r['source'] / 1e6:.0f} | {'yes' if r['ok'] else 'NO'} |")
    base = {r["name"]: r for r in results}.get("tar of Maildirs")
    if base:
        lines += ["", "Ratios to tar of Maildirs (above 1: faster than tar):", ""]
        for r in results:
            lines.append(f"- {r['name']}: backup {base['backup'] / r['backup']:.2f}, "
                         f"restore {base['restore'] / r['restore']:.2f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
