"""STARTTLS (RFC 3207), submission (RFC 6409), implicit TLS (RFC 8314) and AUTH (RFC 4954)."""

import base64
import smtplib

import pytest

from smtpwire import Wire, unverified_context

pytestmark = pytest.mark.timeout(120)

PASSWORD = "correct horse"


@pytest.fixture
def sub(make_server):
    server = make_server(accounts=())
    server.add_account("alice@example.test", PASSWORD)
    server.add_account("carol@example.test", PASSWORD)
    server.add_alias("sales@example.test", "alice@example.test")
    return server


def message(sender, subject="submitted"):
    return f"From: {sender}\r\nTo: someone\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


def test_starttls_on_mx(sub):
    with smtplib.SMTP("127.0.0.1", sub.smtp_port) as s:
        s.starttls(context=unverified_context())
        s.ehlo()
        assert not s.has_extn("starttls")
        s.sendmail("bob@elsewhere.test", ["alice@example.test"], message("bob@elsewhere.test"))
    raw = sub.mail_show("alice@example.test", 1)
    assert b" with ESMTPS id " in raw


def test_commands_pipelined_after_starttls_are_discarded(sub):
    w = Wire(sub.smtp_port)
    w.cmd("EHLO c")
    w.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
    assert w.reply()[0] == 220
    w.sock = unverified_context().wrap_socket(w.sock)
    w.buf = b""
    assert w.quiet(0.7) == b"", "no reply to the injected command"
    # The injected MAIL did not open a transaction: the client must greet again first.
    assert w.cmd("MAIL FROM:<bob@elsewhere.test>")[0] == 503
    assert w.cmd("EHLO c")[0] == 250
    assert w.cmd("MAIL FROM:<bob@elsewhere.test>")[0] == 250


def test_no_auth_before_tls(sub):
    w = Wire(sub.submission_port)
    code, lines = w.cmd("EHLO c")
    assert not any(l.startswith("AUTH") for l in lines)
    creds = base64.b64encode(b"\0alice@example.test\0" + PASSWORD.encode()).decode()
    code, text = w.cmd(f"AUTH PLAIN {creds}")
    assert code == 538
    assert w.cmd("MAIL FROM:<alice@example.test>")[0] == 530


def test_submission_requires_auth(sub):
    with smtplib.SMTP("127.0.0.1", sub.submission_port) as s:
        s.starttls(context=unverified_context())
        s.ehlo()
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail("alice@example.test", ["bob@elsewhere.test"], message("alice@example.test"))
        assert e.value.smtp_code == 530


def test_wrong_password(sub):
    with smtplib.SMTP("127.0.0.1", sub.submission_port) as s:
        s.starttls(context=unverified_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("alice@example.test", "wrong")
        assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8")
    with smtplib.SMTP("127.0.0.1", sub.submission_port) as s:
        s.starttls(context=unverified_context())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("nobody@example.test", PASSWORD)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_submission_local_and_remote(sub, mechanism):
    with smtplib.SMTP("127.0.0.1", sub.submission_port) as s:
        s.starttls(context=unverified_context())
        s.ehlo()
        s.user, s.password = "alice@example.test", PASSWORD
        code, _ = s.auth(mechanism, getattr(s, "auth_" + mechanism.lower()))
        assert code == 235
        refused = s.sendmail("alice@example.test", ["carol@example.test", "dave@remote.test"],
                             message("Alice <alice@example.test>"))
        assert refused == {}
    assert len(sub.mail_list("carol@example.test")) == 1
    assert b" with ESMTPSA id " in sub.mail_show("carol@example.test", 1)
    queue = sub.queue_list()
    assert [(q[1], q[2], q[3]) for q in queue] == [("pending", "alice@example.test", "dave@remote.test")]


def test_implicit_tls_and_sending_as_an_alias(sub):
    with smtplib.SMTP_SSL("127.0.0.1", sub.submissions_port, context=unverified_context()) as s:
        s.login("alice@example.test", PASSWORD)
        s.sendmail("sales@example.test", ["carol@example.test"], message("sales@example.test"))
    assert len(sub.mail_list("carol@example.test")) == 1


def test_sender_and_from_must_be_owned(sub):
    with smtplib.SMTP_SSL("127.0.0.1", sub.submissions_port, context=unverified_context()) as s:
        s.login("alice@example.test", PASSWORD)
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail("carol@example.test", ["bob@remote.test"], message("alice@example.test"))
        assert e.value.smtp_code in (550, 553) and e.value.smtp_error.startswith(b"5.7.1")
        with pytest.raises(smtplib.SMTPSenderRefused):
            s.sendmail("", ["bob@remote.test"], message("alice@example.test"))
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("alice@example.test", ["bob@remote.test"], message("Carol <carol@example.test>"))
        assert e.value.smtp_code == 550 and e.value.smtp_error.startswith(b"5.7.1")
        with pytest.raises(smtplib.SMTPDataError):
            s.sendmail("alice@example.test", ["bob@remote.test"], b"Subject: no from\r\n\r\nx\r\n")
    assert sub.queue_list() == []


def test_auth_is_refused_on_mx(sub):
    with smtplib.SMTP("127.0.0.1", sub.smtp_port) as s:
        s.starttls(context=unverified_context())
        s.ehlo()
        assert not s.has_extn("auth")
        creds = base64.b64encode(b"\0alice@example.test\0" + PASSWORD.encode()).decode()
        code, _ = s.docmd("AUTH", "PLAIN " + creds)
        assert code == 503


def test_auth_failures_close_the_connection(sub):
    w = Wire(sub.submissions_port, tls=True)
    w.cmd("EHLO c")
    codes = []
    for _ in range(3):
        creds = base64.b64encode(b"\0alice@example.test\0nope").decode()
        codes.append(w.cmd(f"AUTH PLAIN {creds}")[0])
    assert codes == [535, 535, 421]


def test_auth_cancel_and_garbage(sub):
    w = Wire(sub.submissions_port, tls=True)
    w.cmd("EHLO c")
    assert w.cmd("AUTH PLAIN")[0] == 334
    assert w.cmd("*")[0] == 501
    assert w.cmd("AUTH PLAIN !!!notbase64")[0] == 501
    assert w.cmd("AUTH CRAM-MD5")[0] == 504
    code, _ = w.cmd("AUTH LOGIN")
    assert code == 334
    assert w.cmd(base64.b64encode(b"alice@example.test").decode())[0] == 334
    assert w.cmd(base64.b64encode(PASSWORD.encode()).decode())[0] == 235
