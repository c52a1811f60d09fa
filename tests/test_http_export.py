"""Self-service export over HTTPS (DESIGN.md G7): `GET /export.zip` with HTTP Basic
authentication (RFC 7617), checked with independent clients (Python's `urllib` and
`http.client` over TLS, `zipfile`, BLAKE3). A user gets all of their own mail and nothing of
anyone else's, whatever the request says; bad credentials get 401 and nothing else; the zip is
streamed (chunked, no Content-Length) with backpressure, and a client that leaves mid-download
stops its export without harming the server. On SQLite and PostgreSQL."""

import base64
import http.client
import imaplib
import io
import json
import os
import smtplib
import socket
import time
import urllib.error
import urllib.request
import zipfile

import blake3
import pytest

from smtpwire import unverified_context

pytestmark = pytest.mark.timeout(600)

PASSWORD = "export secret"
ALICE, BOB = "alice@example.test", "bob@example.test"
BOB_MARKER = "BOB-ONLY-41c9e2"
CHALLENGE = 'Basic realm="Trimaran", charset="UTF-8"'


def msg(subject, body="hello\r\n", to=ALICE):
    return (f"From: Someone <someone@elsewhere.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\n{body}").encode()


def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def imap(server, user):
    m = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=unverified_context(),
                          timeout=30)
    m.login(user, PASSWORD)
    return m


def basic(user, password):
    raw = user if isinstance(user, bytes) else user.encode()
    raw += b":" + (password if isinstance(password, bytes) else password.encode())
    return "Basic " + base64.b64encode(raw).decode()


def connect(server, timeout=60):
    return http.client.HTTPSConnection("127.0.0.1", server.https_port,
                                       context=unverified_context(), timeout=timeout)


def request(server, path="/export.zip", authorization=None, method="GET", headers=None):
    """One request on its own connection: (response, its whole body)."""
    conn = connect(server)
    try:
        fields = dict(headers or {})
        if authorization is not None:
            fields["Authorization"] = authorization
        conn.request(method, path, headers=fields)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def download(server, user=ALICE, password=PASSWORD, query=""):
    """What a browser-like client does: urllib asks without credentials, gets the challenge,
    then sends them (its HTTPBasicAuthHandler)."""
    base = f"https://127.0.0.1:{server.https_port}/"
    passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    passwords.add_password(None, base, user, password)
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=unverified_context()),
        urllib.request.HTTPBasicAuthHandler(passwords))
    with opener.open(base + "export.zip" + query, timeout=120) as response:
        return response.status, response.headers, response.read()


def entries(data):
    """{(mailbox, uid): BLAKE3} of a zip, every body checked against its manifest."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None
        manifest = json.loads(z.read("trimaran-export.json"))
        out = {}
        for e in manifest["messages"]:
            body = z.read(e["file"])
            assert blake3.blake3(body).hexdigest() == e["blake3"], e["file"]
            out[(e["mailbox"], e["uid"])] = e["blake3"]
        everything = b"".join(z.read(n) for n in z.namelist())
    return out, everything


def stored(server, user, mailbox=None):
    return {(r["mailbox"], r["uid"]): r["blake3"] for r in server.mail_list(user, mailbox)}


def send(server, to, bodies):
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as s:
        for body in bodies:
            s.sendmail("someone@elsewhere.test", to, body)


@pytest.fixture
def filled(make_server):
    """Alice has mail in INBOX and a folder of her own; Bob has his own mail, one message
    both got, and a folder he shares with Alice (RFC 4314), which is not her mail."""
    server = make_server(accounts=())
    for user in (ALICE, BOB):
        server.add_account(user, PASSWORD)
    send(server, [ALICE], [msg(f"alice {i}") for i in range(3)])
    send(server, [ALICE, BOB], [msg("to both")])
    send(server, [BOB], [msg(f"secret of bob {BOB_MARKER}", f"{BOB_MARKER}\r\n", BOB)])
    m = imap(server, ALICE)
    ok(m.create("Projects"))
    for i in range(2):
        ok(m.append("Projects", r"(\Seen)", None, msg(f"project {i}")))
    m.logout()
    m = imap(server, BOB)
    ok(m.create("Team"))
    ok(m.append("Team", None, None, msg(f"team {BOB_MARKER}", f"{BOB_MARKER} shared\r\n", BOB)))
    ok(m.setacl("Team", ALICE, "lrs"))
    m.logout()
    return server


def test_a_user_downloads_all_of_their_own_mail_and_nothing_else(filled):
    server = filled
    status, headers, data = download(server)
    assert status == 200
    assert headers["Content-Type"] == "application/zip"
    assert headers["Content-Disposition"] == 'attachment; filename="alice@example.test.zip"'
    assert headers["Cache-Control"] == "no-store"
    # Streamed as it is made: chunked, no length announced.
    assert headers["Content-Length"] is None
    assert headers["Transfer-Encoding"] == "chunked"
    got, everything = entries(data)
    assert got == stored(server, ALICE)
    assert {mailbox for mailbox, _ in got} == {"INBOX", "Projects"}
    assert len(got) == 6
    # Nothing of Bob's: neither his own mail nor the folder he shares with Alice.
    bob_only = set(stored(server, BOB).values()) - set(got.values())
    assert len(bob_only) == 2
    assert BOB_MARKER.encode() not in everything
    assert b"to both" in everything  # Alice's copy of the message both got is hers

    # Bob's credentials give Bob's mail, whatever he asks for.
    status, _, data = download(server, BOB)
    got, _ = entries(data)
    assert got == stored(server, BOB)
    for query in ("?mailbox=Other%20Users/alice@example.test/Projects",
                  "?mailbox=Other%20Users/alice@example.test"):
        response, body = request(server, "/export.zip" + query, basic(BOB, PASSWORD))
        assert response.status == 400 and not body.startswith(b"PK"), query
    response, body = request(server, "/export.zip?mailbox=Projects", basic(BOB, PASSWORD))
    assert response.status == 404 and not body.startswith(b"PK")


def test_bad_credentials_get_401_and_nothing_else(filled):
    server = filled
    for authorization in (None,                                   # none at all
                          basic(ALICE, "wrong"),                  # wrong password
                          basic("nobody@example.test", PASSWORD),  # no such account
                          basic(b"\xffalice", PASSWORD),           # not UTF-8
                          basic(ALICE, b"\xff\xfe"),
                          basic("", ""),
                          "Bearer abc.def"):                      # a scheme we do not offer
        response, body = request(server, authorization=authorization)
        assert response.status == 401, authorization
        assert response.getheader("WWW-Authenticate") == CHALLENGE
        assert response.getheader("Content-Type").startswith("text/plain")
        assert len(body) < 200 and b"PK" not in body
    # Malformed Basic credentials: a clear 400, no challenge to retry with.
    for authorization in ("Basic !!!", "Basic " + base64.b64encode(b"no colon").decode(), "Basic"):
        response, body = request(server, authorization=authorization)
        assert response.status == 400, authorization
        assert b"PK" not in body
    # Unauthenticated requests learn nothing about mailboxes.
    response, _ = request(server, "/export.zip?mailbox=NoSuchBox")
    assert response.status == 401
    # urllib with a wrong password gives up after the challenge, with 401.
    with pytest.raises(urllib.error.HTTPError) as e:
        download(server, password="wrong")
    assert e.value.code == 401
    assert download(server)[0] == 200


def test_the_mailbox_parameter_selects_one_mailbox(filled):
    server = filled
    for query, mailbox in (("?mailbox=Projects", "Projects"), ("?mailbox=inbox", "INBOX"),
                           ("?mailbox=INBOX", "INBOX")):
        status, _, data = download(server, query=query)
        assert status == 200
        got, _ = entries(data)
        assert got == stored(server, ALICE, mailbox), query
        assert got and {m for m, _ in got} == {mailbox}
    auth = basic(ALICE, PASSWORD)
    response, _ = request(server, "/export.zip?mailbox=Nowhere", auth)
    assert response.status == 404
    # Bytes that are not UTF-8 decode to U+FFFD, a name no mailbox has.
    response, _ = request(server, "/export.zip?mailbox=%FF", auth)
    assert response.status in (400, 404)
    for query in ("?mailbox=", "?mailbox=a//b", "?mailbox=%2FProjects", "?mailbx=INBOX",
                  "?mailbox=INBOX&mailbox=Projects"):
        response, body = request(server, "/export.zip" + query, auth)
        assert response.status == 400, query
        assert b"PK" not in body


def test_unknown_paths_methods_and_oversized_requests(filled):
    server = filled
    auth = basic(ALICE, PASSWORD)
    response, _ = request(server, "/nothing-here", auth)
    assert response.status == 404
    response, _ = request(server, "/export.zip/", auth)
    assert response.status == 404
    response, body = request(server, "/export.zip", auth, method="POST")
    assert response.status == 405
    assert "GET" in response.getheader("Allow")
    assert b"PK" not in body
    response, body = request(server, "/export.zip", auth, method="HEAD")
    assert response.status == 200 and body == b""
    assert response.getheader("Content-Type") == "application/zip"
    # A request head larger than the server buffers: 431 (RFC 6585), or the connection closed.
    try:
        response, _ = request(server, "/export.zip", auth, headers={"X-Big": "x" * 200_000})
        assert response.status == 431
    except (OSError, http.client.HTTPException):
        pass
    # Clear text on the HTTPS port gets no HTTP answer: passwords never travel unencrypted.
    with socket.create_connection(("127.0.0.1", server.https_port), timeout=30) as s:
        s.sendall(b"GET /export.zip HTTP/1.1\r\nHost: x\r\nAuthorization: " +
                  auth.encode() + b"\r\n\r\n")
        try:
            answer = s.recv(4096)
        except ConnectionError:
            answer = b""
        assert not answer.startswith(b"HTTP/")
    # Garbage after the TLS handshake: 400, and the server carries on.
    conn = connect(server)
    conn.connect()
    conn.sock.sendall(b"\x00\x01 not http\r\n\r\n")
    assert conn.sock.recv(4096).startswith(b"HTTP/1.1 400")
    conn.close()
    assert download(server)[0] == 200


def test_https_failures_count_in_the_shared_login_throttle(make_server, tmp_path):
    config = tmp_path / "throttle.toml"
    config.write_text("[login_throttle]\nmax_failures_per_address = 3\n"
                      "max_failures_per_account = 10\nwindow = 600\n")
    server = make_server("--config", str(config), accounts=())
    server.add_account(ALICE, PASSWORD)
    for _ in range(3):
        response, _ = request(server, authorization=basic(ALICE, "wrong"))
        assert response.status == 401
    # Now even the right password is not checked from this address, over HTTPS or IMAP.
    response, body = request(server, authorization=basic(ALICE, PASSWORD))
    assert response.status == 429
    assert int(response.getheader("Retry-After")) > 0
    assert b"PK" not in body
    m = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=unverified_context(),
                          timeout=30)
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        m.login(ALICE, PASSWORD)


LARGE_COUNT = 300
LARGE_SIZE = 100_000


def large_message(i):
    # Random base64: deflate shrinks it only to about three quarters, so the zip stays
    # larger than what socket buffers and the channel can hold.
    data = base64.encodebytes(os.urandom(LARGE_SIZE * 3 // 4)).replace(b"\n", b"\r\n")
    return (f"From: <someone@elsewhere.test>\r\nTo: <{ALICE}>\r\nSubject: large {i}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + data


def went_away(server):
    return server.log_text().count("HTTPS export stopped: the client went away")


def test_a_large_mailbox_streams_with_backpressure_and_early_leavers_stop(make_server):
    server = make_server(accounts=())
    server.add_account(ALICE, PASSWORD)
    send(server, [ALICE], (large_message(i) for i in range(LARGE_COUNT)))
    auth = basic(ALICE, PASSWORD)

    # More clients leave early than exports may run at once (8): each one's export stops and
    # frees its place.
    for left in range(1, 11):
        conn = connect(server)
        conn.request("GET", "/export.zip", headers={"Authorization": auth})
        response = conn.getresponse()
        assert response.status == 200
        assert response.read(100).startswith(b"PK")
        response.close()
        conn.close()
        deadline = time.time() + 60
        while went_away(server) < left and time.time() < deadline:
            time.sleep(0.1)
        assert went_away(server) == left
    assert "panicked" not in server.log_text()

    # A slow reader holds the writer back: after a megabyte read, the export is not done.
    conn = connect(server, timeout=120)
    conn.request("GET", "/export.zip", headers={"Authorization": auth})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Length") is None
    assert response.getheader("Transfer-Encoding") == "chunked"
    first = response.read(1_000_000)
    time.sleep(3)
    assert "HTTPS export sent" not in server.log_text()
    data = first + response.read()
    conn.close()
    assert len(data) > 15_000_000
    got, _ = entries(data)
    assert len(got) == LARGE_COUNT
    assert got == stored(server, ALICE)
    deadline = time.time() + 30
    while "HTTPS export sent" not in server.log_text() and time.time() < deadline:
        time.sleep(0.2)
    assert "HTTPS export sent" in server.log_text()
