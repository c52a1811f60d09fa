"""SMTP receiving on the MX listener (RFC 5321 and extensions), on SQLite and PostgreSQL."""

import smtplib

import blake3
import pytest

from smtpwire import Wire

pytestmark = pytest.mark.timeout(120)

MSG = b"From: Bob <bob@elsewhere.test>\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nHi Alice!\r\n"


def stored_body(server, account, uid):
    """The stored bytes, checked against the listed hash, minus the trace fields we prepend."""
    raw = server.mail_show(account, uid)
    listed = {m["uid"]: m for m in server.mail_list(account)}[uid]
    assert listed["blake3"] == blake3.blake3(raw).hexdigest()
    assert listed["size"] == len(raw)
    assert raw.startswith(b"Return-Path: <")
    return raw


def test_ehlo_advertises_what_works(server):
    w = Wire(server.smtp_port)
    assert w.greeting[0] == 220 and "mx.trimaran.test" in w.greeting[1][0]
    code, lines = w.cmd("EHLO client.test")
    assert code == 250
    keywords = {line.split()[0] for line in lines[1:]}
    assert {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING", "BINARYMIME",
            "ENHANCEDSTATUSCODES", "STARTTLS"} <= keywords
    assert "AUTH" not in keywords, "no AUTH on the MX listener"


def test_delivery_to_account_and_alias(server):
    server.add_alias("postmaster@example.test", "alice@example.test")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        assert s.sendmail("bob@elsewhere.test", ["alice@example.test"], MSG) == {}
        assert s.sendmail("bob@elsewhere.test", ["Postmaster@Example.TEST"], MSG.replace(b"hello", b"via alias")) == {}
    rows = server.mail_list("alice@example.test")
    assert [(r["mailbox"], r["uid"], r["subject"]) for r in rows] == [
        ("INBOX", 1, "hello"), ("INBOX", 2, "via alias")]
    raw = stored_body(server, "alice@example.test", 1)
    assert raw.endswith(MSG)
    assert b"Return-Path: <bob@elsewhere.test>\r\nReceived: from " in raw
    assert b"by mx.trimaran.test (Trimaran) with ESMTP id " in raw


def test_nul_bytes_in_header_and_body_are_delivered_intact(server):
    """A NUL is not valid in mail (RFC 5322 §3.5) but turns up; refusing or deferring it for
    ever would bounce the sender for our own limit (G2). PostgreSQL's text columns cannot hold
    U+0000: the metadata and search text keep U+FFFD there, the stored bytes stay exact."""
    msg = (b"From: Bob <bob@elsewhere.test>\r\nTo: alice@example.test\r\n"
           b"Subject: nul\x00here\r\n\r\nbody \x00 with a NUL\r\n")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        assert s.sendmail("bob@elsewhere.test", ["alice@example.test"], msg) == {}
    rows = server.mail_list("alice@example.test")
    assert len(rows) == 1 and rows[0]["subject"].startswith("nul"), rows
    assert stored_body(server, "alice@example.test", rows[0]["uid"]).endswith(msg)


def test_subaddress_reaches_the_account(server):
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        s.sendmail("bob@elsewhere.test", ["alice+lists@example.test"], MSG)
    assert len(server.mail_list("alice@example.test")) == 1


def test_unknown_user_and_relay_are_refused(server):
    w = Wire(server.smtp_port)
    w.cmd("EHLO c")
    assert w.cmd("MAIL FROM:<bob@elsewhere.test>")[0] == 250
    code, text = w.cmd("RCPT TO:<nobody@example.test>")
    assert code == 550 and text[0].startswith("5.1.1")
    code, text = w.cmd("RCPT TO:<someone@elsewhere.test>")
    assert code == 550 and text[0].startswith("5.7.1"), "never an open relay"
    code, _ = w.cmd("DATA")
    assert code in (503, 554)
    assert server.queue_list() == []


def test_bad_command_sequences(server):
    w = Wire(server.smtp_port)
    assert w.cmd("MAIL FROM:<a@b.test>")[0] == 503
    w.cmd("EHLO c")
    assert w.cmd("RCPT TO:<alice@example.test>")[0] == 503
    assert w.cmd("DATA")[0] == 503
    assert w.cmd("MAIL FROM:<a@b.test>")[0] == 250
    assert w.cmd("MAIL FROM:<a@b.test>")[0] == 503
    assert w.cmd("FROBNICATE")[0] == 500
    assert w.cmd("MAIL FROM:foo")[0] in (501, 503)
    assert w.cmd("RSET")[0] == 250
    assert w.cmd("MAIL FROM:foo")[0] == 501
    assert w.cmd("RCPT TO:<alice@example.test> NOTIFY=NEVER")[0] in (503, 555)
    assert w.cmd("NOOP")[0] == 250
    assert w.cmd("VRFY alice")[0] == 252
    assert w.cmd("HELP")[0] == 214
    assert w.cmd("QUIT")[0] == 221
    assert server.mail_list("alice@example.test") == []


def test_invalid_utf8_and_non_ascii_without_smtputf8(server):
    w = Wire(server.smtp_port)
    w.cmd("EHLO c")
    assert w.cmd(b"MAIL FROM:<\xff\xfe@elsewhere.test> SMTPUTF8\r\n")[0] // 100 == 5
    assert w.cmd("MAIL FROM:<bob@elsewhere.test>")[0] == 250
    code, text = w.cmd("RCPT TO:<用户@example.test>".encode() + b"\r\n")
    assert code == 553 and text[0].startswith("5.6.7")
    assert server.mail_list("alice@example.test") == []


def test_smtputf8_and_8bit_mail(make_server):
    server = make_server(accounts=("alice@example.test", "用户@example.test"))
    body = "From: 발신자 <sender@elsewhere.test>\r\nSubject: 안녕하세요 café\r\n\r\nTexte accentué, 한국어 본문.\r\n".encode()
    w = Wire(server.smtp_port)
    w.cmd("EHLO c")
    assert w.cmd("MAIL FROM:<발신자@elsewhere.test> SMTPUTF8 BODY=8BITMIME".encode() + b"\r\n")[0] == 250
    assert w.cmd("RCPT TO:<用户@example.test>".encode() + b"\r\n")[0] == 250
    assert w.cmd("DATA")[0] == 354
    assert w.cmd(body + b".\r\n")[0] == 250
    rows = server.mail_list("用户@example.test")
    assert rows[0]["subject"] == "안녕하세요 café"
    raw = stored_body(server, "用户@example.test", 1)
    assert raw.endswith(body)
    assert "with UTF8SMTP id".encode() in raw


def test_pipelined_transaction(server):
    w = Wire(server.smtp_port)
    w.cmd("EHLO c")
    w.send(b"MAIL FROM:<bob@elsewhere.test>\r\nRCPT TO:<alice@example.test>\r\n"
           b"RCPT TO:<nobody@example.test>\r\nDATA\r\n")
    assert [w.reply()[0] for _ in range(4)] == [250, 250, 550, 354]
    w.send(b"Subject: pipelined\r\n\r\n..dot-stuffed line\r\n.\r\nMAIL FROM:<x@y.test>\r\nRSET\r\nQUIT\r\n")
    assert [w.reply()[0] for _ in range(4)] == [250, 250, 250, 221]
    raw = stored_body(server, "alice@example.test", 1)
    assert raw.endswith(b"Subject: pipelined\r\n\r\n.dot-stuffed line\r\n")


def test_bare_lf_does_not_end_data(server):
    """SMTP smuggling: only CRLF.CRLF ends the message."""
    w = Wire(server.smtp_port)
    w.cmd("EHLO c")
    w.cmd("MAIL FROM:<bob@elsewhere.test>")
    w.cmd("RCPT TO:<alice@example.test>")
    assert w.cmd("DATA")[0] == 354
    w.send(b"Subject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@x.test>\n.\r\nstill body\r\n.\r\n")
    assert w.reply()[0] == 250
    rows = server.mail_list("alice@example.test")
    assert len(rows) == 1
    assert stored_body(server, "alice@example.test", 1).endswith(b"MAIL FROM:<evil@x.test>\n.\r\nstill body\r\n")


def test_bdat_chunks_and_binarymime(server):
    w = Wire(server.smtp_port)
    w.cmd("EHLO c")
    part1 = b"Subject: chunked\r\nContent-Type: application/octet-stream\r\n\r\n"
    part2 = bytes(range(256)) + b"\r\n.\r\n\x00tail"
    assert w.cmd("MAIL FROM:<bob@elsewhere.test> BODY=BINARYMIME")[0] == 250
    assert w.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert w.cmd(b"BDAT %d\r\n" % len(part1) + part1)[0] == 250
    assert w.cmd(b"BDAT %d LAST\r\n" % len(part2) + part2)[0] == 250
    # DATA is not allowed once BDAT was used, nor BINARYMIME with DATA.
    assert w.cmd("MAIL FROM:<bob@elsewhere.test> BODY=BINARYMIME")[0] == 250
    assert w.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert w.cmd("DATA")[0] == 503
    assert w.cmd("RSET")[0] == 250
    assert w.cmd("MAIL FROM:<bob@elsewhere.test>")[0] == 250
    assert w.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert w.cmd(b"BDAT 3\r\nabc")[0] == 250
    assert w.cmd("DATA")[0] == 503
    assert w.cmd(b"BDAT 0 LAST\r\n")[0] == 250
    raw = stored_body(server, "alice@example.test", 1)
    assert raw.endswith(part1 + part2)
    assert stored_body(server, "alice@example.test", 2).endswith(b"abc")


def test_bdat_without_transaction_is_consumed(server):
    w = Wire(server.smtp_port)
    w.cmd("EHLO c")
    # The 5 bytes "NOOP\r" belong to the chunk and must not run as a command.
    assert w.cmd(b"BDAT 5\r\nNOOP\r")[0] == 503
    assert w.cmd(b"\nNOOP\r\n")[0] == 500
    assert w.reply()[0] == 250


def test_size_limits(make_server):
    server = make_server("--max-message-size", "10000")
    w = Wire(server.smtp_port)
    code, lines = w.cmd("EHLO c")
    assert "SIZE 10000" in lines
    code, text = w.cmd("MAIL FROM:<bob@elsewhere.test> SIZE=20000")
    assert code == 552 and text[0].startswith("5.3.4")
    assert w.cmd("MAIL FROM:<bob@elsewhere.test>")[0] == 250
    assert w.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert w.cmd("DATA")[0] == 354
    code, text = w.cmd(b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n" * 300 + b"y" * 20000 + b"\r\n.\r\n")
    assert code == 552 and text[0].startswith("5.3.4")
    # Oversize BDAT: the chunk is still consumed, the transaction fails.
    assert w.cmd("MAIL FROM:<bob@elsewhere.test>")[0] == 250
    assert w.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert w.cmd(b"BDAT 20000\r\n" + b"z" * 20000)[0] == 552
    assert w.cmd(b"BDAT 3 LAST\r\nabc")[0] == 503
    assert w.cmd("NOOP")[0] == 250
    assert server.mail_list("alice@example.test") == []


def test_too_many_recipients(make_server):
    server = make_server("--max-recipients", "3")
    w = Wire(server.smtp_port)
    w.cmd("EHLO c")
    w.cmd("MAIL FROM:<bob@elsewhere.test>")
    assert [w.cmd("RCPT TO:<alice@example.test>")[0] for _ in range(3)] == [250] * 3
    code, text = w.cmd("RCPT TO:<alice@example.test>")
    assert code == 452 and text[0].startswith("4.5.3")
    assert w.cmd("DATA")[0] == 354
    assert w.cmd(b"Subject: dup\r\n\r\nx\r\n.\r\n")[0] == 250
    assert len(server.mail_list("alice@example.test")) == 1, "one copy however often named"


def test_overlong_command_line(server):
    w = Wire(server.smtp_port)
    w.cmd("EHLO c")
    code, _ = w.cmd(b"MAIL FROM:<" + b"a" * 100000 + b"@x.test>\r\n")
    assert code == 500
    assert w.cmd("NOOP")[0] == 250, "the session survives"


def test_too_many_errors_closes(server):
    w = Wire(server.smtp_port)
    codes = []
    try:
        for _ in range(40):
            codes.append(w.cmd("BOGUS")[0])
    except ConnectionError:
        pass
    assert codes[-1] == 421 and len(codes) < 40


def test_disconnect_mid_data_stores_nothing(server):
    for _ in range(3):
        w = Wire(server.smtp_port)
        w.cmd("EHLO c")
        w.cmd("MAIL FROM:<bob@elsewhere.test>")
        w.cmd("RCPT TO:<alice@example.test>")
        assert w.cmd("DATA")[0] == 354
        w.send(b"Subject: cut\r\n\r\npartial body without the end\r\n")
        w.close()
        w = Wire(server.smtp_port)
        w.cmd("EHLO c")
        w.cmd("MAIL FROM:<bob@elsewhere.test>")
        w.cmd("RCPT TO:<alice@example.test>")
        w.send(b"BDAT 1000\r\n" + b"x" * 500)
        w.close()
    w = Wire(server.smtp_port)
    assert w.cmd("NOOP")[0] == 250
    assert server.mail_list("alice@example.test") == []


def test_one_body_for_a_hundred_recipients(make_server):
    accounts = [f"user{i}@example.test" for i in range(100)]
    server = make_server("--max-recipients", "200", accounts=accounts)
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        assert s.sendmail("bob@elsewhere.test", accounts, b"Subject: to all\r\n\r\nonce\r\n") == {}
    hashes = {server.mail_list(a)[0]["blake3"] for a in accounts}
    assert len(hashes) == 1
    [(count,)] = server.sql("SELECT count(*) FROM blobs")
    assert int(count) == 1


def test_alias_loop_and_fan_out(make_server):
    server = make_server(accounts=("alice@example.test", "bob@example.test"))
    server.add_alias("team@example.test", "alice@example.test")
    server.add_alias("team@example.test", "bob@example.test")
    server.add_alias("team@example.test", "loop@example.test")
    server.add_alias("loop@example.test", "team@example.test")
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        s.sendmail("x@elsewhere.test", ["team@example.test"], b"Subject: team\r\n\r\nhi\r\n")
    assert len(server.mail_list("alice@example.test")) == 1
    assert len(server.mail_list("bob@example.test")) == 1


def test_connection_limit_and_idle_timeout(make_server, tmp_path):
    config = tmp_path / "limits.toml"
    config.write_text("[smtp]\nmax_connections_per_ip = 3\ncommand_timeout = 2\n")
    server = make_server("--config", str(config))
    held = [Wire(server.smtp_port) for _ in range(3)]
    assert all(w.greeting[0] == 220 for w in held)
    extra = Wire(server.smtp_port)
    assert extra.greeting[0] == 421 and extra.greeting[1][0].startswith("4.7.0")
    # An idle client is dropped after the command timeout, with a 421.
    code, text = held[0].reply()
    assert code == 421 and text[0].startswith("4.4.2")
    for w in held:
        w.close()
    assert Wire(server.smtp_port).cmd("NOOP")[0] == 250
