"""Helpers for mxgate's integration tests: real servers on free loopback ports in a temp dir.

Redis is Debian's redis-server, started with the durable settings the queue requires; mxgate is the
binary under test (MXGATE_BIN), started as `mxgate edge` or `mxgate run`. Every process started here
is stopped by the fixture that started it, whatever the test did.
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import time

import redis

BIN = os.environ.get("MXGATE_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "bin", "mxgate")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def check_sanitizers(text, where):
    """Fails when a sanitizer build of mxgate reported anything (it logs, it does not exit)."""
    for mark in SANITIZER_MARKS:
        if mark in text:
            i = text.index(mark)
            raise AssertionError(f"sanitizer report in {where}:\n{text[max(0, i - 200):i + 3000]}")


class Redis:
    """A private redis-server on a unix socket, durable like the one `mxgate run` starts."""

    def __init__(self, dir):
        self.dir = str(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "redis.sock")
        self.url = "unix:" + self.sock
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.sock, "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--no-appendfsync-on-rewrite", "no",
             "--maxmemory-policy", "noeviction", "--save", "", "--logfile",
             os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ping, what="redis-server")
        self.client = redis.Redis(unix_socket_path=self.sock)

    def _ping(self):
        try:
            return redis.Redis(unix_socket_path=self.sock, socket_timeout=0.5).ping()
        except (redis.RedisError, OSError):
            return False

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None

    def kill9(self):
        self.stop(signal.SIGKILL)


class Mxgate:
    """`mxgate edge` (or another command) with -o overrides, on free ports, logs in a file."""

    def __init__(self, dir, redis_url, overrides=None, command="edge", conf_file=None,
                 wait_ports=True):
        self.dir = str(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.sub_port = free_port()
        base = {
            "state_dir": os.path.join(self.dir, "var"),
            "edge.listen": f"127.0.0.1:{self.port}",
            "edge.submission_listen": f"127.0.0.1:{self.sub_port}",
            "edge.hostname": "mx.test",
            "local.domains": "local.test, example.test",
            "log.level": "debug",
            "screen.greet_wait": "0s",      # screening has its own tests (test_screen.py)
            "filters.spf": "off",           # and so do SPF and DKIM (test_filters.py), which
            "filters.dkim_verify": "no",    # would ask the machine's resolver otherwise
        }
        if redis_url is not None:
            base["redis.url"] = redis_url
        base.update(overrides or {})
        self.overrides = base
        first = base["edge.listen"].replace(",", " ").split()
        if first:       # the port to wait for and to talk to is the first MX listener's
            self.port = int(first[0].rsplit(":", 1)[1])
        self.command = command
        self.conf_file = conf_file
        self.log_path = os.path.join(self.dir, f"{command}.log")
        self.proc = None
        self.start(wait_ports)

    def argv(self):
        args = [BIN]
        if self.conf_file:
            args += ["-c", self.conf_file]
        for k, v in self.overrides.items():
            args += ["-o", f"{k}={v}"]
        return args + [self.command]

    def start(self, wait_ports=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        if wait_ports:
            # The edge says when it listens; probing its port instead would leave a connection
            # that counts against its limits until the edge has seen it close.
            if self.command == "edge" and self.overrides.get("log.level") in ("debug", "info"):
                ready = lambda: bool(self.events("started"))
            else:
                ready = lambda: port_open(self.port)
            try:
                wait_for(lambda: self.proc.poll() is not None or ready(), what="mxgate listening")
            except AssertionError:
                self.proc.kill()        # never leave a process the caller cannot stop
                self.proc.wait()
                raise
            assert self.proc.poll() is None, "mxgate exited at start:\n" + self.read_log()

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def events(self, name=None):
        """The JSON log lines, optionally only those with event == name."""
        out = []
        for line in self.read_log().splitlines():
            if not line.startswith("{"):
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue        # a line still being written
            if name is None or rec.get("event") == name:
                out.append(rec)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        if self.log:
            self.log.close()
            self.log = None
        check_sanitizers(self.read_log(), self.log_path)
        return rc

    def kill9(self):
        return self.stop(signal.SIGKILL)


def start_role(dir, redis_url, overrides, command="relay"):
    """`mxgate relay` (or bridge), which listens on nothing: started once it logs "started"."""
    m = Mxgate(dir, redis_url, overrides, command=command, wait_ports=False)
    try:
        wait_for(lambda: m.events("started") or m.proc.poll() is not None, what=f"{command} started")
    except AssertionError:
        m.proc.kill()
        m.proc.wait()
        raise
    assert m.proc.poll() is None, m.read_log()
    return m


class Dnsmasq:
    """dnsmasq on a free loopback port, serving the test domains."""

    def __init__(self, dir, records):
        self.port = free_port()
        self.log = os.path.join(str(dir), "dnsmasq.log")
        args = ["dnsmasq", "-k", "-p", str(self.port), "--no-resolv", "--no-hosts", "-C", "/dev/null",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--local=/test/",
                f"--log-facility={self.log}", f"--pid-file={dir}/dnsmasq.pid"] + records
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(f"{dir}/dnsmasq.pid"), what="dnsmasq")
        time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def txt_record(name, text):
    """dnsmasq's --txt-record for a long record: one character-string (at most 255 bytes) per
    comma-separated part, joined again by the reader (RFC 6376 section 3.6.2.2)."""
    return f"--txt-record={name}," + ",".join(text[i:i + 250] for i in range(0, len(text), 250))


class SMTP:
    """A raw SMTP client: bytes out exactly as given, replies parsed (code, [lines])."""

    def __init__(self, port, host="127.0.0.1", timeout=10, read_greeting=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.greeting = self.reply() if read_greeting else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed; had " + repr(self.buf))
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        lines = []
        while True:
            line = self._line()
            lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True when the server closes the connection (reading nothing more)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def starttls(self):
        code, _ = self.cmd("STARTTLS")
        assert code == 220
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mx.test")
        return self.sock

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def queued_ids(r, prefix="mxg"):
    """Ids of the messages in the queue (from their envelope keys)."""
    return sorted(k.decode().split("{")[1].rstrip("}") for k in r.keys(f"{prefix}:msg:*"))


def message(r, qid, prefix="mxg"):
    """Everything the queue holds for one message."""
    env = {k.decode(): v.decode() for k, v in r.hgetall(f"{prefix}:msg:{{{qid}}}").items()}
    body = r.get(f"{prefix}:body:{{{qid}}}")
    rcpts = {int(k): json.loads(v) for k, v in r.hgetall(f"{prefix}:rcpt:{{{qid}}}").items()}
    return env, body, [rcpts[i] for i in sorted(rcpts)]


def split_received(body):
    """(our Received header, the rest) of a stored message."""
    assert body.startswith(b"Received: from ")
    end = body.index(b"\r\n", body.index(b"; ")) + 2
    return body[:end], body[end:]


def send_message(port, sender, rcpts, content, ehlo="client.test", mail_refusable=False):
    """One message over a fresh session; returns the final reply (code, lines). With
    mail_refusable, a refused MAIL FROM is returned instead of failing the test."""
    c = SMTP(port)
    try:
        assert c.cmd(f"EHLO {ehlo}")[0] == 250
        reply = c.cmd(f"MAIL FROM:<{sender}>")
        if mail_refusable and reply[0] != 250:
            return reply
        assert reply[0] == 250
        for r in rcpts:
            code, lines = c.cmd(f"RCPT TO:<{r}>")
            assert code == 250, lines
        assert c.cmd("DATA")[0] == 354
        c.send(content)
        return c.reply()
    finally:
        c.close()


# ---- helpers for the edge's protocol tests ----

def expect(reply, code, enhanced=None, text=None):
    """Asserts an SMTP reply's code, the enhanced code opening its last line, and optionally a
    piece of its text; returns the reply's lines."""
    got, lines = reply
    assert got == code, f"expected {code} {enhanced or ''}, got {reply!r}"
    if enhanced is not None:
        assert lines[-1].split(" ", 1)[0] == enhanced, f"expected {code} {enhanced}, got {reply!r}"
    if text is not None:
        assert text in "\n".join(lines), f"expected {text!r} in {reply!r}"
    return lines


def ehlo(c, name="client.test"):
    """EHLO on a raw client; the keywords of the 250 reply (the lines after the host name)."""
    lines = expect(c.cmd(f"EHLO {name}"), 250)
    return lines[1:]


def replies(c, n):
    """The next n replies of a raw client."""
    return [c.reply() for _ in range(n)]


def queued_id(reply):
    """The queue id of a `250 2.0.0 Ok: queued as ID` reply."""
    lines = expect(reply, 250, "2.0.0", "Ok: queued as ")
    return lines[-1].rsplit(" ", 1)[1]


def nodelay(c):
    """Turns off Nagle on a raw client, so that each send() goes out as its own segment."""
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def send_split(c, parts, pause=0.02):
    """Sends each part as its own TCP write, pausing between them so the server reads them apart."""
    for i, p in enumerate(parts):
        if i:
            time.sleep(pause)
        c.send(p)


def tls_client_context():
    """A client TLS context that accepts the tests' self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def smtps_connect(port, timeout=10):
    """A raw client on an implicit-TLS listener: TLS first, then the greeting."""
    c = SMTP(port, timeout=timeout, read_greeting=False)
    c.sock = tls_client_context().wrap_socket(c.sock, server_hostname="mx.test")
    c.greeting = c.reply()
    return c


def replies_until_close(c):
    """Every reply a raw client gets until the server closes the connection."""
    out = []
    while True:
        try:
            out.append(c.reply())
        except (ConnectionError, OSError):
            return out
