"""A raw SMTP client for what smtplib will not do: pipelining, BDAT, broken input."""

import socket
import ssl
import time


class Wire:
    def __init__(self, port, host="127.0.0.1", timeout=10, tls=False):
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls:
            sock = unverified_context().wrap_socket(sock)
        self.sock = sock
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def reply(self):
        """One complete (possibly multi-line) reply: (code, [text lines])."""
        lines = []
        while True:
            line = self.line()
            lines.append(line[4:].rstrip(b"\r\n").decode(errors="replace"))
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def cmd(self, text):
        self.send(text.encode() + b"\r\n" if isinstance(text, str) else text)
        return self.reply()

    def starttls(self):
        code, _ = self.cmd("STARTTLS")
        assert code == 220
        self.sock = unverified_context().wrap_socket(self.sock)
        self.buf = b""

    def quiet(self, seconds=0.5):
        """Bytes the server sends within `seconds` without being asked."""
        self.sock.settimeout(seconds)
        try:
            return self.buf + self.sock.recv(65536)
        except (socket.timeout, ssl.SSLError, TimeoutError):
            return self.buf
        finally:
            self.sock.settimeout(10)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def unverified_context():
    # The server's certificate is self-signed in tests.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_until(predicate, timeout=10.0, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
