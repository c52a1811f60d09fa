"""Message bodies in Garage (S3), on SQLite and PostgreSQL metadata: a real three-zone Garage
cluster started by scripts/garage, mail sent with smtplib and read back with imaplib, the
objects read straight from the bucket with a SigV4 client of the test's own, then Garage nodes
killed: one lost zone changes nothing, two answer 4xx (never 5xx) until they are back."""

import datetime
import hashlib
import hmac
import http.client
import imaplib
import json
import os
import secrets
import smtplib
import ssl
import subprocess
import sys
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import blake3
import pytest
import zstandard

GARAGE_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "garage"

# Building Garage takes long the first time; scripts/test does it before the tests run.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def garage(tmp_path_factory):
    """A three-node, three-zone Garage cluster for this module. If it cannot be built or
    started, the tests fail: a missing Garage must never pass silently."""
    directory = tmp_path_factory.mktemp("garage")
    proc = subprocess.run([sys.executable, str(GARAGE_SCRIPT), "up", str(directory)],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        subprocess.run([sys.executable, str(GARAGE_SCRIPT), "down", str(directory)],
                       capture_output=True)
        pytest.fail(f"scripts/garage up failed:\n{proc.stderr[-5000:]}")
    cluster = json.loads(proc.stdout)
    cluster["dir"] = str(directory)
    yield cluster
    subprocess.run([sys.executable, str(GARAGE_SCRIPT), "down", str(directory)], check=True,
                   timeout=120)


def garage_cmd(cluster, *args):
    subprocess.run([sys.executable, str(GARAGE_SCRIPT), *args[:1], cluster["dir"], *args[1:]],
                   check=True, timeout=180)


# ---- an independent S3 reader (AWS Signature Version 4) -------------------------------------
# https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html

def _hmac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def s3_get(cluster, key, query=None):
    """GET /BUCKET/KEY (path-style) signed with the cluster's key; returns (status, body)."""
    endpoint = urllib.parse.urlsplit(cluster["endpoint"])
    path = "/" + cluster["bucket"] + ("/" + key if key else "")
    params = sorted((query or {}).items())
    q = lambda s: urllib.parse.quote(str(s), safe="-_.~")
    canonical_query = "&".join(f"{q(k)}={q(v)}" for k, v in params)
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": endpoint.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        "GET", urllib.parse.quote(path, safe="/-_.~"), canonical_query,
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload])
    scope = f"{day}/{cluster['region']}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = _hmac(("AWS4" + cluster["secret"]).encode(), day)
    for part in (cluster["region"], "s3", "aws4_request"):
        k = _hmac(k, part)
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={cluster['key_id']}/{scope}, "
                                f"SignedHeaders={signed}, Signature={signature}")
    conn = http.client.HTTPConnection(endpoint.hostname, endpoint.port, timeout=30)
    try:
        conn.request("GET", urllib.parse.quote(path, safe="/-_.~") +
                     ("?" + canonical_query if canonical_query else ""), headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def list_keys(cluster, prefix):
    status, body = s3_get(cluster, "", {"list-type": "2", "prefix": prefix})
    assert status == 200, body
    ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
    return sorted(e.text for e in ET.fromstring(body).iterfind(".//s3:Contents/s3:Key", ns))


def body_from_bucket(cluster, prefix, digest):
    """A body as Trimaran's object layout holds it (crates/store/src/s3.rs): 14-byte header
    "TRMB", version 1, compression (0 none, 1 zstd), original size (u64 big-endian), data."""
    status, obj = s3_get(cluster, f"{prefix}/blobs/{digest[:2]}/{digest}")
    assert status == 200, (status, obj[:300])
    assert obj[:5] == b"TRMB\x01"
    compression, size = obj[5], int.from_bytes(obj[6:14], "big")
    data = obj[14:]
    if compression == 1:
        data = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    else:
        assert compression == 0
    assert len(data) == size
    assert blake3.blake3(data).hexdigest() == digest
    return data


# ---- Trimaran with its bodies in Garage -----------------------------------------------------

def blob_server(make_server, cluster, *extra):
    """A server (and its admin commands) whose [blobs] go to the cluster, under a prefix of
    its own so the test can count exactly its objects."""
    server = make_server(*extra, start=False)
    prefix = f"t-{secrets.token_hex(6)}"
    config = server.data_dir.parent / "blobs.toml"
    config.write_text(
        "[blobs]\n"
        f'url = "s3://{cluster["bucket"]}/{prefix}"\n'
        f'endpoint = "{cluster["endpoint"]}"\n'
        f'region = "{cluster["region"]}"\n'
        f'access_key_id = "{cluster["key_id"]}"\n'
        f'secret_access_key = "{cluster["secret"]}"\n')
    server.config = config
    server.start()
    return server, prefix


def message(subject, body=b"Hello from the object store.\r\n"):
    return (f"From: Bob <bob@elsewhere.test>\r\nTo: alice@example.test\r\n"
            f"Subject: {subject}\r\n\r\n").encode() + body


def attachment_message(size):
    """An incompressible multi-block body (Garage splits objects into 1 MiB blocks)."""
    import base64
    blob = base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n")
    return (b"From: Bob <bob@elsewhere.test>\r\nTo: alice@example.test\r\n"
            b"Subject: attachment\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + blob)


def send(server, msg):
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=120) as s:
        assert s.sendmail("bob@elsewhere.test", ["alice@example.test"], msg) == {}


def imap_bodies(server):
    """Every INBOX message's exact bytes, by UID, read over IMAP (TLS)."""
    m = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port,
                          ssl_context=ssl._create_unverified_context(), timeout=60)
    try:
        m.login("alice@example.test", "secret")
        assert m.select("INBOX")[0] == "OK"
        status, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
        assert status == "OK", data
        out = {}
        for item in data:
            if isinstance(item, tuple):
                uid = int(item[0].split(b"UID ")[1].split()[0])
                out[uid] = item[1]
        return out
    finally:
        m.logout()


def check_all_in_bucket(server, cluster, prefix, sent):
    """Every sent message reads back byte for byte over IMAP, from the admin CLI, and straight
    from the bucket; the database holds no body."""
    rows = server.mail_list("alice@example.test")
    assert len(rows) == len(sent)
    fetched = imap_bodies(server)
    for row, msg in zip(rows, sent):
        raw = fetched[row["uid"]]
        assert raw.endswith(msg), row
        assert raw.startswith(b"Return-Path: <bob@elsewhere.test>\r\n")
        assert blake3.blake3(raw).hexdigest() == row["blake3"]
        assert server.mail_show("alice@example.test", row["uid"]) == raw
        assert body_from_bucket(cluster, prefix, row["blake3"]) == raw
    keys = list_keys(cluster, prefix + "/")
    assert keys == sorted(f"{prefix}/blobs/{r['blake3'][:2]}/{r['blake3']}" for r in rows)
    assert server.sql("SELECT count(*) FROM blobs")[0][0] in (0, "0"), \
        "bodies must not be in the metadata database"


def test_bodies_live_in_garage(make_server, garage):
    server, prefix = blob_server(make_server, garage)
    sent = [message("text"), attachment_message(3 * 1024 * 1024),
            message("8bit", "Grüße, 안녕하세요\r\n".encode()),
            message("repeated", b"same line\r\n" * 20000)]
    for msg in sent:
        send(server, msg)
    check_all_in_bucket(server, garage, prefix, sent)
    # A restarted server reads the same bodies.
    server.restart()
    check_all_in_bucket(server, garage, prefix, sent)


def test_losing_garage_zones(make_server, garage):
    # The reply waits at most 15 s for the store here (60 s by default) before answering 4xx:
    # long enough for the blob store to abandon a request stuck on the node just killed
    # (after 5 s, crates/store/src/s3.rs) and try again.
    server, prefix = blob_server(make_server, garage, "--store-wait", "15")
    sent = [message("before")]
    send(server, sent[0])
    try:
        # One zone lost: quorum (2 of 3) still holds, so mail is accepted and read as before.
        garage_cmd(garage, "kill", "3")
        for i in range(3):
            sent.append(message(f"one zone down {i}"))
            send(server, sent[-1])
        check_all_in_bucket(server, garage, prefix, sent)

        # Two lost: no write quorum. The sender must get a temporary failure, never a bounce.
        garage_cmd(garage, "kill", "2")
        retry = message("two zones down")
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=120) as s:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                s.sendmail("bob@elsewhere.test", ["alice@example.test"], retry)
        assert refused.value.smtp_code in (451, 452), refused.value
        assert len(server.mail_list("alice@example.test")) == len(sent)
    finally:
        garage_cmd(garage, "start", "2")
        garage_cmd(garage, "start", "3")

    # The zones are back: the client's retry of the same message is accepted.
    send(server, retry)
    sent.append(retry)
    check_all_in_bucket(server, garage, prefix, sent)
