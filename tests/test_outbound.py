"""Outbound mail (issue 4): the queue runner sending to Postfix's smtp-sink as the remote peer,
DKIM checked by dkimpy, DSN parameters, retries, reports (RFC 3464), FUTURERELEASE (RFC 4865),
and queue leases surviving SIGKILL and shared by two processes."""

import email
import email.policy
import shutil
import smtplib
import time

import dkim
import pytest

from harness import Sink, free_port
from smtpwire import unverified_context

pytestmark = pytest.mark.timeout(180)

PASSWORD = "correct horse"
# Debian puts it in /usr/sbin, which a non-root PATH may lack.
@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.stop()
    shutil.rmtree(s.dir, ignore_errors=True)


def outbound_server(make_server, peer_port, start=True, tail="", **settings):
    """A server whose outbound mail goes to `peer_port` (None: no smarthost), with quick
    retries for tests; `tail` is more TOML after the [outbound] table."""
    server = make_server(accounts=(), start=False)
    server.add_account("alice@example.test", PASSWORD)
    options = {"smarthost": f'"127.0.0.1:{peer_port}"' if peer_port else None, "retry_base": 1,
               "retry_max": 2, "delay_notice": 0, "lease": 3, "timeout": 20}
    options.update(settings)
    config = server.data_dir.parent / "outbound.toml"
    config.write_text("[outbound]\n" + "".join(f"{k} = {v}\n" for k, v in options.items()
                                               if v is not None) + tail)
    server.config = config
    if start:
        server.start()
    return server


def message(subject, to="bob@remote.test", body="Hello Bob.\r\n", extra=""):
    return (f"From: Alice <alice@example.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n{extra}\r\n{body}").encode()


def submit(server, recipients, msg, mail_options=(), rcpt_options=()):
    with smtplib.SMTP("127.0.0.1", server.submission_port, timeout=30) as s:
        s.starttls(context=unverified_context())
        s.login("alice@example.test", PASSWORD)
        return s.sendmail("alice@example.test", recipients, msg, list(mail_options), list(rcpt_options))


def wait_until(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def reports(server):
    """The delivery reports in alice's INBOX, parsed."""
    out = []
    for row in server.mail_list("alice@example.test"):
        raw = server.mail_show("alice@example.test", row["uid"])
        out.append(email.message_from_bytes(raw, policy=email.policy.default))
    return out


def status_blocks(report):
    """The per-recipient fields of a message/delivery-status part (RFC 3464 §2.3)."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = list(report.iter_parts())
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    # email's parser gives the status groups as a list of header blocks.
    groups = parts[1].get_payload()
    per_message, per_recipient = groups[0], groups[1:]
    assert per_message["Reporting-MTA"] == "dns; mx.trimaran.test"
    return per_message, per_recipient, parts


def dkim_records(server):
    return {f"{sel}._domainkey.{dom}.": value
            for dom, sel, _, value in (line.split("\t") for line in
                                       server.cli("dkim", "list").stdout.decode().splitlines())}


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_sent_mail_is_signed_and_carries_its_dsn_parameters(make_server, sink, algorithm):
    sink.start()
    server = outbound_server(make_server, sink.port, start=False)
    server.cli("dkim", "generate", "example.test", "--algorithm", algorithm)
    server.start()
    records = dkim_records(server)
    refused = submit(server, ["bob@remote.test", "carol@remote.test"], message("signed mail"),
                     mail_options=["RET=HDRS", "ENVID=env+2B1"],
                     rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob@Remote.test"])
    assert refused == {}
    got = wait_until(sink.messages, what="the message at the peer")
    assert len(got) == 1, "one transaction for both recipients of the one message"
    trace, raw = got[0]
    # RFC 3461: the peer advertises DSN, so the parameters travel on, xtext-encoded.
    mail_args = trace["X-Mail-Args"][0].split()
    assert mail_args[0] == "<alice@example.test>"
    assert {"RET=HDRS", "ENVID=env+2B1"} <= set(mail_args[1:]), mail_args
    assert sorted(trace["X-Rcpt-Args"]) == [
        "<bob@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Remote.test",
        "<carol@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Remote.test"]
    assert raw.startswith(b"X-Client-Addr")
    assert b"DKIM-Signature:" in raw
    a_tag = b"a=rsa-sha256" if algorithm == "rsa" else b"a=ed25519-sha256"
    assert a_tag in raw

    def dns(name, timeout=5):
        return records.get(name.decode(), "").encode()

    assert dkim.verify(raw, dnsfunc=dns), "dkimpy does not accept the signature"
    # A changed body no longer verifies: the check above is a real one.
    tampered = raw.replace(b"Hello Bob.", b"Hello Eve.")
    assert not dkim.verify(tampered, dnsfunc=dns)
    # Sent to a DSN-capable peer: settled, no report of ours, nothing left queued.
    wait_until(lambda: server.queue_list() == [], what="an empty queue")
    time.sleep(2.5)
    assert server.mail_list("alice@example.test") == []


def test_a_peer_that_defers_then_accepts_gets_the_message_once(make_server, sink):
    sink.start("-r", "RCPT")
    server = outbound_server(make_server, sink.port, delay_notice=2)
    submit(server, ["bob@remote.test"], message("deferred"))
    # Retried while the peer says 4xx, and the sender told of the delay (RFC 3464 "delayed").
    wait_until(lambda: any(int(q[4]) >= 2 for q in server.queue_list()), what="two attempts")
    report = wait_until(lambda: reports(server), what="a delay report")[0]
    assert report["Subject"].startswith("Delayed Mail")
    _, blocks, _ = status_blocks(report)
    assert blocks[0]["Action"] == "delayed" and blocks[0]["Status"].startswith("4.")
    assert blocks[0]["Final-Recipient"] == "rfc822;bob@remote.test"
    assert "Will-Retry-Until" in blocks[0]
    assert sink.messages() == []
    sink.stop()
    sink.start()
    wait_until(sink.messages, what="the message at the peer")
    wait_until(lambda: server.queue_list() == [], what="an empty queue")
    time.sleep(3)
    assert len(sink.messages()) == 1
    assert len(reports(server)) == 1, "one delay report, no failure report"


def test_a_permanent_refusal_sends_one_well_formed_failure_report(make_server, sink):
    sink.start("-f", "RCPT")
    server = outbound_server(make_server, sink.port)
    server.add_alias("list@example.test", "far@remote.test")
    submit(server, ["bob@remote.test"], message("refused mail"))
    report = wait_until(lambda: reports(server), what="a failure report")
    assert len(report) == 1
    report = report[0]
    raw = server.mail_show("alice@example.test", 1)
    assert raw.startswith(b"Return-Path: <>\r\n")
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    assert report["Auto-Submitted"] == "auto-replied"
    per_message, blocks, parts = status_blocks(report)
    assert "Arrival-Date" in per_message
    assert len(blocks) == 1
    b = blocks[0]
    assert b["Final-Recipient"] == "rfc822;bob@remote.test"
    assert b["Action"] == "failed"
    assert b["Status"] == "5.3.0"
    assert b["Remote-MTA"] == "dns; 127.0.0.1"
    assert b["Diagnostic-Code"].startswith("smtp; 500 5.3.0")
    # RET absent: the original header only (RFC 3462 text/rfc822-headers).
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert "Subject: refused mail" in parts[2].get_content()
    wait_until(lambda: server.queue_list() == [], what="an empty queue")

    # A message with a null sender (here forwarded by an alias) gets no report when it fails.
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        s.sendmail("", ["list@example.test"], message("bounce of a bounce", to="list@example.test"))
    wait_until(lambda: any(q[2] == "" for q in server.queue_list()), what="the forward queued")
    wait_until(lambda: server.queue_list() == [], what="the forward settled")
    time.sleep(2.5)
    assert len(reports(server)) == 1


def test_success_reports_are_made_where_the_duty_is_ours(make_server, sink):
    # A peer without DSN (-N): a requested success report is ours, as "relayed"; a local
    # recipient's is "delivered" (RFC 3461 §5.2.2, §5.2.3). Without NOTIFY=SUCCESS: none.
    sink.start("-N")
    server = outbound_server(make_server, sink.port)
    server.add_account("carol@example.test")
    submit(server, ["bob@remote.test", "carol@example.test"], message("tell me"),
           mail_options=["ENVID=tell-me-1"], rcpt_options=["NOTIFY=SUCCESS"])
    submit(server, ["dan@remote.test", "carol@example.test"], message("quiet"))

    def blocks():
        found = []
        for r in reports(server):
            per_message, per_recipient, _ = status_blocks(r)
            assert per_message["Original-Envelope-Id"] == "tell-me-1"
            found += [(b["Final-Recipient"], b["Action"], b["Status"]) for b in per_recipient]
        return len(found) >= 2 and sorted(found)
    assert wait_until(blocks, what="two success reports") == [
        ("rfc822;bob@remote.test", "relayed", "2.0.0"),
        ("rfc822;carol@example.test", "delivered", "2.0.0")]
    # The peer was not sent NOTIFY (it does not know DSN).
    assert all("NOTIFY" not in t["X-Rcpt-Args"][0] for t, _ in sink.messages())
    wait_until(lambda: server.queue_list() == [], what="an empty queue")
    wait_until(lambda: len(server.mail_list("carol@example.test")) == 2, what="carol's copies")
    time.sleep(2.5)
    assert len(blocks()) == 2


def test_a_peer_down_past_the_lifetime_gets_a_failure_report(make_server):
    closed = free_port()
    server = outbound_server(make_server, closed, lifetime=4)
    submit(server, ["bob@remote.test"], message("never answered"))
    report = wait_until(lambda: reports(server), timeout=40, what="an expiry report")[0]
    _, blocks, _ = status_blocks(report)
    assert blocks[0]["Action"] == "failed"
    assert blocks[0]["Status"] == "5.4.7"
    assert "expired" in report.get_body(("plain",)).get_content()
    wait_until(lambda: server.queue_list() == [], what="an empty queue")


def test_a_scheduled_message_waits_for_its_time_and_can_be_cancelled(make_server, sink):
    sink.start()
    server = outbound_server(make_server, sink.port)
    server.add_account("carol@example.test")
    with smtplib.SMTP("127.0.0.1", server.submission_port) as s:
        s.starttls(context=unverified_context())
        s.ehlo()
        # RFC 4865 §3: the longest hold and the latest release time.
        interval, latest = s.esmtp_features["futurerelease"].split()
        assert int(interval) > 0 and latest.endswith("Z")
        s.login("alice@example.test", PASSWORD)
        # Held for everyone, the local recipient too (RFC 4865 §3).
        s.sendmail("alice@example.test", ["bob@remote.test", "carol@example.test"], message("later"),
                   ["HOLDFOR=5"])
        s.sendmail("alice@example.test", ["bob@remote.test"], message("cancelled"), ["HOLDFOR=600"])
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail("alice@example.test", ["bob@remote.test"], message("too far"),
                       [f"HOLDFOR={int(interval) + 1}"])
        assert e.value.smtp_code == 501
    sent_at = time.monotonic()
    queue = server.queue_list()
    assert len({q[0] for q in queue}) == 2 and len(queue) == 3
    cancelled = max(int(q[0]) for q in queue)
    show = server.cli("queue", "show", str(cancelled)).stdout.decode()
    assert "Held until:" in show and "Subject: cancelled" in show
    out = server.cli("queue", "delete", str(cancelled)).stdout.decode()
    assert "deleted" in out
    assert server.cli("queue", "delete", str(cancelled), check=False).returncode != 0
    time.sleep(3)
    assert sink.messages() == [], "sent before its release time"
    assert server.mail_list("carol@example.test") == [], "delivered before its release time"
    got = wait_until(sink.messages, what="the released message")
    assert time.monotonic() - sent_at >= 4.5
    wait_until(lambda: server.mail_list("carol@example.test"), what="the local copy")
    assert server.mail_show("carol@example.test", 1).startswith(b"Return-Path: <alice@example.test>\r\n")
    time.sleep(2)
    got = sink.messages()
    assert len(got) == 1 and b"Subject: later" in got[0][1]
    assert server.queue_list() == []


def test_sigkill_in_the_middle_of_sending_loses_nothing(make_server, sink):
    # The peer waits a second before answering DATA, so that the kill finds sends in flight.
    sink.start("-w", "1")
    server = outbound_server(make_server, sink.port, max_connections_per_destination=4)
    total = 20
    for i in range(total):
        submit(server, ["bob@remote.test"], message(f"crash {i}"))
    wait_until(lambda: len(sink.messages()) >= 3, what="some deliveries")
    server.kill9()
    server.start()
    wait_until(lambda: server.queue_list() == [], timeout=90, what="the queue drained")
    ids = [m.split(b"Message-ID: ")[1].split(b"\r\n")[0] for _, m in sink.messages()]
    assert sorted(set(ids)) == sorted(f"<crash-{i}@example.test>".encode() for i in range(total))
    # Only what was in flight at the kill (at most one per connection) may arrive twice.
    assert len(ids) - total <= 4, f"{len(ids) - total} duplicates"


def test_one_connection_carries_many_messages(make_server, sink):
    # smtp-sink -n 1 stops listening after its first session: every message must travel in
    # that one session (RFC 5321 §4.1.4: transactions follow each other on a connection).
    sink.start("-n", "1")
    server = outbound_server(make_server, sink.port, max_connections_per_destination=1)
    for i in range(5):
        submit(server, ["bob@remote.test"], message(f"reuse {i}"))
    wait_until(lambda: len(sink.messages()) >= 5, what="five messages in one session")
    wait_until(lambda: server.queue_list() == [], what="an empty queue")


def test_a_clean_stop_finishes_its_sends_so_nothing_arrives_twice(make_server, sink):
    sink.start("-w", "1")
    server = outbound_server(make_server, sink.port)
    for i in range(6):
        submit(server, ["bob@remote.test"], message(f"stop {i}"))
    wait_until(lambda: len(sink.messages()) >= 1, what="the first delivery")
    server.stop()  # SIGTERM: sends under way are finished and recorded first
    assert "outbound sends still under way" not in server.log_text()
    # Nothing left leased by the stopped process: whatever it had started, it recorded.
    for q in server.queue_list():
        assert "being sent by" not in server.cli("queue", "show", q[0]).stdout.decode()
    server.start()
    wait_until(lambda: server.queue_list() == [], timeout=60, what="the queue drained")
    ids = [m.split(b"Message-ID: ")[1].split(b"\r\n")[0] for _, m in sink.messages()]
    assert sorted(ids) == sorted(f"<stop-{i}@example.test>".encode() for i in range(6))


def test_two_processes_share_the_queue_and_take_over_a_dead_ones_work(make_server, sink, backend):
    if backend != "postgres":
        pytest.skip("several processes share a queue through PostgreSQL")
    sink.start()
    a = outbound_server(make_server, sink.port)
    b = make_server(accounts=(), domain=None, start=False, share_store_of=a)
    b.config = a.config
    b.start()
    total = 30
    for i in range(total):
        submit(a if i % 2 else b, ["bob@remote.test"], message(f"shared {i}"))
    wait_until(lambda: len(sink.messages()) >= total, what="all messages sent")
    time.sleep(2)
    assert len(sink.messages()) == total, "a message was sent twice"

    # A slow peer; the process holding the work dies; the other resumes it after the lease.
    sink.stop()
    sink.clear()
    sink.start("-w", "3")
    for i in range(6):
        submit(a, ["bob@remote.test"], message(f"handover {i}"))

    def leased_by_a():
        return any("being sent by" in a.cli("queue", "show", q[0]).stdout.decode()
                   for q in a.queue_list())
    wait_until(leased_by_a, what="work in progress")
    a.kill9()
    killed = time.monotonic()
    wait_until(lambda: b.queue_list() == [], timeout=60, what="the survivor finishing")
    ids = {m.split(b"Message-ID: ")[1].split(b"\r\n")[0] for _, m in sink.messages()}
    assert ids == {f"<handover-{i}@example.test>".encode() for i in range(6)}
    # Lease 3 s, renewal a third of it: the survivor starts within a few seconds.
    assert time.monotonic() - killed < 40


class Zone:
    """A loopback DNS server (dnslib) answering for the test's zone only."""

    def __init__(self, records):
        from dnslib import RR, QTYPE, RCODE
        from dnslib.server import BaseResolver, DNSServer

        self.records = records  # {(name, type): [rdata text]}; names end with "."

        zone = self

        class Resolver(BaseResolver):
            def resolve(self, request, handler):
                reply = request.reply()
                q = request.q
                name, qtype = str(q.qname).lower(), QTYPE[q.qtype]
                known = {n for n, _ in zone.records}
                for value in zone.records.get((name, qtype), []):
                    reply.add_answer(*RR.fromZone(f"{name} 60 IN {qtype} {value}"))
                if name not in known:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply

        self.port = free_port()
        self.server = DNSServer(Resolver(), port=self.port, address="127.0.0.1")
        self.server.start_thread()

    def stop(self):
        self.server.stop()


@pytest.fixture
def zone_for(sink):
    zones = []

    def make(records):
        z = Zone(records)
        zones.append(z)
        return z
    yield make
    for z in zones:
        z.stop()


def test_mx_hosts_are_found_in_dns_in_preference_order(make_server, sink, zone_for):
    sink.start()
    zone = zone_for({
        # The preferred MX has no listener: the next one takes the mail (RFC 5321 §5.1).
        ("remote.test.", "MX"): ["10 mx1.remote.test.", "20 mx2.remote.test."],
        ("mx1.remote.test.", "A"): ["127.0.0.7"],
        ("mx2.remote.test.", "A"): ["127.0.0.1"],
        # No MX: the domain's own address is the implicit MX.
        ("implicit.test.", "A"): ["127.0.0.1"],
        # RFC 7505 null MX.
        ("nomail.test.", "MX"): ["0 ."],
        ("routed.test.", "MX"): ["10 mx1.remote.test."],
    })
    server = outbound_server(
        make_server, None, port=sink.port, dns_servers=f'["127.0.0.1:{zone.port}"]',
        tail=f'[outbound.routes]\n"routed.test" = "127.0.0.1:{sink.port}"\n')
    submit(server, ["bob@remote.test"], message("via mx2"))
    submit(server, ["ann@implicit.test"], message("implicit mx", to="ann@implicit.test"))
    submit(server, ["joe@routed.test"], message("routed", to="joe@routed.test"))
    submit(server, ["x@nomail.test"], message("null mx", to="x@nomail.test"))
    submit(server, ["y@nowhere.test"], message("no domain", to="y@nowhere.test"))
    got = wait_until(lambda: len(sink.messages()) >= 3 and sink.messages(), what="three deliveries")
    rcpts = sorted(t["X-Rcpt-Args"][0] for t, _ in got)
    assert rcpts == ["<ann@implicit.test>", "<bob@remote.test>", "<joe@routed.test>"]
    failures = wait_until(lambda: len(reports(server)) >= 2 and reports(server), what="two reports")
    statuses = sorted((status_blocks(r)[1][0]["Final-Recipient"], status_blocks(r)[1][0]["Status"])
                      for r in failures)
    assert statuses == [("rfc822;x@nomail.test", "5.1.10"), ("rfc822;y@nowhere.test", "5.1.2")]
    wait_until(lambda: server.queue_list() == [], what="an empty queue")


def test_eight_bit_mail_is_converted_for_a_peer_without_8bitmime(make_server, sink):
    sink.start("-8")
    server = outbound_server(make_server, sink.port, start=False)
    server.cli("dkim", "generate", "example.test")
    server.start()
    records = dkim_records(server)
    body = "Grüße aus Köln — ça va?\r\n"
    msg = message("eight bit", body=body,
                  extra="MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        "Content-Transfer-Encoding: 8bit\r\n")
    submit(server, ["bob@remote.test"], msg, mail_options=["BODY=8BITMIME"])
    trace, raw = wait_until(sink.messages, what="the converted message")[0]
    assert "BODY=8BITMIME" not in trace["X-Mail-Args"][0]
    assert raw.isascii()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "base64"
    # The very octets that were sent, line breaks included.
    assert parsed.get_payload(decode=True) == body.encode()
    # Signed after the conversion: the signature holds for what was sent.
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: records.get(name.decode(), "").encode())


def test_a_utf8_address_to_a_peer_without_smtputf8_fails_with_a_report(make_server, sink):
    sink.start()
    server = outbound_server(make_server, sink.port)
    with smtplib.SMTP("127.0.0.1", server.submission_port) as s:
        s.starttls(context=unverified_context())
        s.login("alice@example.test", PASSWORD)
        s.sendmail("alice@example.test", ["bjørn@remote.test"], message("utf8", to="bjørn@remote.test"),
                   ["SMTPUTF8"])
    report = wait_until(lambda: reports(server), what="a failure report")[0]
    _, blocks, _ = status_blocks(report)
    assert blocks[0]["Status"] == "5.6.7" and blocks[0]["Action"] == "failed"
    assert sink.messages() == []


def test_starttls_is_used_when_the_peer_offers_it(make_server):
    # Another Trimaran as the receiving side: its MX offers STARTTLS (smtp-sink cannot).
    receiver = make_server(domain="remote.test", accounts=("bob@remote.test",))
    sender = outbound_server(make_server, receiver.smtp_port)
    submit(sender, ["bob@remote.test"], message("over tls"))
    wait_until(lambda: receiver.mail_list("bob@remote.test"), what="the message at the peer")
    raw = receiver.mail_show("bob@remote.test", 1)
    # The peer's trace field says the session was encrypted (RFC 3848 ESMTPS).
    assert b"by mx.trimaran.test (Trimaran) with ESMTPS id" in raw
    wait_until(lambda: sender.queue_list() == [], what="an empty queue")
