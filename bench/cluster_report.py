"""Turns the JSON figures of tests/cluster (TRIMARAN_CLUSTER_REPORT) into a Markdown table."""

import json
import platform
import sys
import time

report = json.load(open(sys.argv[1]))
commit = sys.argv[2] if len(sys.argv) > 2 else "?"
print(f"# Three-site cluster under load ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
      f"commit {commit}, {platform.node()})\n")
print(f"- messages acknowledged over the run: {report['messages_acknowledged']} "
      f"(all found once, in the right mailbox); 5xx replies: 0")
print(f"- accepted messages per second, three sites: {report['accepted_per_second_three_sites']}")
print(f"- temporary failures seen by senders (4xx and refused connections, retried elsewhere): "
      f"{report['temporary_failures_seen_by_senders']}; IMAP commands that failed: "
      f"{report['imap_errors']}")
print(f"- IMAP IDLE on one site, delivery through another, seconds from the start of the SMTP "
      f"transaction to the EXISTS: {report.get('idle_wake_seconds')}\n")
print("| lost | site | held the primary | first 250 after (s) | first IMAP login after (s) "
      "| longest SMTP reply (s) | longest IMAP reply (s) | msg/s with two sites | "
      "two/three | cut-off site answered | back in sync after revive/heal (s) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
three = report["accepted_per_second_three_sites"] or 1
for p in report["phases"]:
    probe = p.get("probe")
    answered = f"{probe['code']} after {probe['seconds']} s" if probe else "—"
    print(f"| {p['how']} | {p['site']} | {'yes' if p['was_primary'] else 'no'} "
          f"| {p['first_ack_s']} | {p['first_login_s']} | {p['longest_smtp_reply_s']} "
          f"| {p['longest_imap_reply_s']} | {p['accepted_per_second_two_sites']} "
          f"| {p['accepted_per_second_two_sites'] / three:.2f} | {answered} | {p['catch_up_s']} |")
