"""G5 on the foundation: stored bodies are verified on every read; corruption is reported and
never served."""

import smtplib

import blake3
import pytest
import zstandard

pytestmark = pytest.mark.timeout(120)

BODY = b"Subject: precious\r\n\r\n" + b"The quick brown fox jumps over the lazy dog.\r\n" * 200


def deliver(server):
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as s:
        s.sendmail("bob@elsewhere.test", ["alice@example.test"], BODY)
    [row] = server.mail_list("alice@example.test")
    good = server.mail_show("alice@example.test", row["uid"])
    assert blake3.blake3(good).hexdigest() == row["blake3"]
    return row, good


def stored(server, digest):
    [(compression, data)] = server.sql(
        f"SELECT compression, {'hex(data)' if server.backend == 'sqlite' else 'encode(data, ' + chr(39) + 'hex' + chr(39) + ')'} "
        f"FROM blobs WHERE hash = '{digest}'")
    return int(compression), bytes.fromhex(data)


def overwrite(server, digest, compression, data):
    literal = f"X'{data.hex()}'" if server.backend == "sqlite" else f"decode('{data.hex()}', 'hex')"
    server.sql(f"UPDATE blobs SET compression = {compression}, data = {literal} WHERE hash = '{digest}'")


def assert_refused(server, row, good):
    proc = server.mail_show("alice@example.test", row["uid"], check=False)
    assert proc.returncode != 0
    assert b"corrupt" in proc.stderr
    assert proc.stdout == b"", "not one byte of a corrupt body is served"
    assert good not in proc.stdout
    # Listing still works, and the fault is recorded for operators.
    assert server.mail_list("alice@example.test")[0]["blake3"] == row["blake3"]
    [(count,)] = server.sql(f"SELECT count FROM blob_faults WHERE hash = '{row['blake3']}'")
    assert int(count) >= 1


def test_flipped_byte_is_detected(server):
    row, good = deliver(server)
    compression, data = stored(server, row["blake3"])
    assert compression == 1, "mail text is stored compressed"
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    overwrite(server, row["blake3"], compression, bytes(damaged))
    assert_refused(server, row, good)


def test_valid_frame_of_other_bytes_is_detected(server):
    """The hash, not the decompressor, is what catches silent corruption."""
    row, good = deliver(server)
    forged = good.replace(b"lazy dog", b"lazy cat", 1)
    overwrite(server, row["blake3"], 1, zstandard.ZstdCompressor().compress(forged))
    assert_refused(server, row, good)
    # Uncompressed storage is verified the same way.
    overwrite(server, row["blake3"], 0, forged)
    assert_refused(server, row, good)
