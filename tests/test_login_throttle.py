"""Throttling of failed logins per client address and per account, shared by SMTP AUTH, POP3
and IMAP."""

import imaplib
import poplib
import smtplib
import time

import pytest

from smtpwire import unverified_context

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def throttled(make_server, tmp_path):
    config = tmp_path / "throttle.toml"
    config.write_text("[login_throttle]\nmax_failures_per_address = 3\n"
                      "max_failures_per_account = 2\nwindow = 600\n")
    server = make_server("--config", str(config), accounts=())
    server.add_account("alice@example.test", "right")
    return server


def smtp_login(server, password, source="127.0.0.1"):
    # One AUTH PLAIN per call: smtplib's login() would also retry with LOGIN.
    with smtplib.SMTP_SSL("127.0.0.1", server.submissions_port, context=unverified_context(),
                          source_address=(source, 0), timeout=30) as s:
        s.ehlo()
        s.user, s.password = "alice@example.test", password
        code, resp = s.auth("PLAIN", s.auth_plain)
        assert code == 235


def test_an_address_that_keeps_failing_is_shut_out_of_every_protocol(throttled):
    for _ in range(3):
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            smtp_login(throttled, "wrong")
        assert e.value.smtp_code == 535
    # Even the right password is not checked from this address now, and POP3 agrees.
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        smtp_login(throttled, "right")
    assert e.value.smtp_code == 454 and e.value.smtp_error.startswith(b"4.7.0")
    p = poplib.POP3_SSL("127.0.0.1", throttled.pop3s_port, context=unverified_context(), timeout=30)
    p.user("alice@example.test")
    with pytest.raises(poplib.error_proto, match="Too many failed logins"):
        p.pass_("right")
    m = imaplib.IMAP4_SSL("127.0.0.1", throttled.imaps_port, ssl_context=unverified_context(),
                          timeout=30)
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        m.login("alice@example.test", "right")
    # Another client address is not shut out, but the account is slowed down...
    started = time.time()
    smtp_login(throttled, "right", source="127.0.0.2")
    assert time.time() - started >= 1.5
    # ...and its count is cleared by that success.
    smtp_login(throttled, "right", source="127.0.0.3")
