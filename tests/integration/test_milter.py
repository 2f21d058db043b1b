"""The edge as a milter client (milter.mx, milter.submission): real spamass-milter and
clamav-milter, a milter that hangs, one that answers garbage, and a scripted milter that asks for
every modification, checked in what the queue holds."""
import base64
import socket
import struct
import threading
import time

import pytest

import mxtest
from milters import EICAR, GTUBE, ClamavMilter, SpamassMilter
from mxtest import expect, message, queued_id, split_received


@pytest.fixture(scope="module")
def spamass(tmp_path_factory):
    m = SpamassMilter(tmp_path_factory.mktemp("spamass"))
    yield m
    m.stop()


@pytest.fixture(scope="module")
def clamav(tmp_path_factory):
    m = ClamavMilter(tmp_path_factory.mktemp("clamav"))
    yield m
    m.stop()


def send(port, content, sender="a@src.test", rcpts=("bob@local.test",)):
    """(reply to MAIL if refused, else the final reply after DATA)."""
    return mxtest.send_message(port, sender, rcpts, content + b".\r\n", mail_refusable=True)


CLEAN = b"From: <a@src.test>\r\nTo: <bob@local.test>\r\nSubject: hello\r\n\r\nJust a note.\r\n"


def test_spamassassin_rejects_gtube_and_tags_the_rest(edge_factory, spamass, redis_server):
    edge = edge_factory({"milter.mx": spamass.socket})
    expect(send(edge.port, CLEAN.replace(b"Just a note.", GTUBE)), 550, "5.7.1", "Blocked by SpamAssassin")
    rest = split_received(message(redis_server.client, queued_id(send(edge.port, CLEAN)))[1])[1]
    assert b"\r\nX-Spam-Status: No, score=" in b"\r\n" + rest
    assert rest.endswith(b"\r\n\r\nJust a note.\r\n")


def mime_with(attachment):
    return (b"From: <a@src.test>\r\nTo: <bob@local.test>\r\nSubject: file\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
            b"see attached\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"f.com\"\r\n\r\n"
            + base64.encodebytes(attachment).replace(b"\n", b"\r\n") + b"--b1--\r\n")


def test_clamav_rejects_eicar(edge_factory, clamav, spamass):
    # Both milters in a chain: the virus scanner first.
    edge = edge_factory({"milter.mx": f"{clamav.socket}, {spamass.socket}"})
    expect(send(edge.port, mime_with(EICAR)), 550, "5.7.1")
    assert queued_id(send(edge.port, mime_with(b"harmless bytes\n")))


def test_submission_has_its_own_chain(edge_factory, clamav, auth_users, tls_pair, redis_server):
    cert, key = tls_pair
    edge = edge_factory({"milter.submission": clamav.socket, "edge.auth_users": auth_users,
                         "tls.cert": cert, "tls.key": key})
    c = mxtest.SMTP(edge.sub_port)
    try:
        expect(c.cmd("EHLO client.test"), 250)
        c.starttls()
        expect(c.cmd("EHLO client.test"), 250)
        cred = base64.b64encode(b"\0alice\0secret-alice").decode()
        expect(c.cmd(f"AUTH PLAIN {cred}"), 235)
        expect(c.cmd("MAIL FROM:<alice@src.test>"), 250)
        expect(c.cmd("RCPT TO:<x@ext.test>"), 250)
        expect(c.cmd("DATA"), 354)
        c.send(mime_with(EICAR) + b".\r\n")
        expect(c.reply(), 550, "5.7.1")
    finally:
        c.close()
    # The MX listener has no milters here.
    assert queued_id(send(edge.port, mime_with(EICAR)))


class Silent:
    """A milter that accepts connections and never answers; counts closed connections."""

    def __init__(self, garbage=False):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.garbage = garbage
        self.closed = 0
        self.accepted = 0
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        try:
            if self.garbage:
                conn.recv(65536)
                conn.sendall(b"\x00\x00\x00\x05Xjunk")
            while conn.recv(65536):
                pass
        except OSError:
            pass
        self.closed += 1
        conn.close()


@pytest.mark.parametrize("garbage", [False, True])
def test_a_broken_milter_gets_the_default_action(edge_factory, garbage):
    peer = Silent(garbage)
    edge = edge_factory({"milter.mx": f"inet:{peer.port}@127.0.0.1", "milter.command_timeout": "1s"})
    t0 = time.monotonic()
    c = mxtest.SMTP(edge.port, read_greeting=False)
    expect(c.reply(), 421, "4.7.1")
    assert time.monotonic() - t0 < 5
    assert c.closed()
    # Every connection the edge made (its start-up probe's session too) is closed again.
    mxtest.wait_for(lambda: peer.accepted >= 1 and peer.closed == peer.accepted, what="milter connections closed")


def test_default_action_accept_skips_a_broken_milter(edge_factory, redis_server):
    peer = Silent()
    edge = edge_factory({"milter.mx": f"inet:{peer.port}@127.0.0.1", "milter.command_timeout": "500ms",
                         "milter.default_action": "accept"})
    assert queued_id(send(edge.port, CLEAN))
    mxtest.wait_for(lambda: peer.closed == peer.accepted, what="milter connection closed")


def test_default_action_reject(edge_factory):
    edge = edge_factory({"milter.mx": f"inet:{mxtest.free_port()}@127.0.0.1", "milter.default_action": "reject"})
    c = mxtest.SMTP(edge.port, read_greeting=False)
    expect(c.reply(), 554, "5.7.1")


class Scripted:
    """A milter speaking protocol 6 that continues every event and answers the end of message with
    the modifications (and final reply) it is given."""

    def __init__(self, at_eom):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.at_eom = at_eom
        self.seen = []
        threading.Thread(target=self.run, daemon=True).start()

    @staticmethod
    def pkt(cmd, data=b""):
        return struct.pack(">I", len(data) + 1) + cmd + data

    def run(self):
        while True:     # the edge's start-up probe makes a session (and a milter connection) too
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        buf = b""
        try:
            while True:
                while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                n = struct.unpack(">I", buf[:4])[0]
                cmd, data, buf = buf[4:5], buf[5:4 + n], buf[4 + n:]
                self.seen.append((cmd, data))
                if cmd == b"O":
                    conn.sendall(self.pkt(b"O", struct.pack(">III", 6, 0x1ff, 0)))
                elif cmd in (b"D", b"A"):
                    pass
                elif cmd == b"Q":
                    return
                elif cmd == b"E":
                    conn.sendall(b"".join(self.pkt(c, d) for c, d in self.at_eom))
                else:
                    conn.sendall(self.pkt(b"c"))
        finally:
            conn.close()


def test_every_modification_is_applied(edge_factory, redis_server):
    new_body = b"replaced body\nsecond line\n"
    peer = Scripted([
        (b"h", b"X-Added\0yes\0"),                         # add header (at the end of the header)
        (b"i", struct.pack(">I", 0) + b"X-First\0top\0"),  # insert header at the top
        (b"m", struct.pack(">I", 1) + b"Subject\0changed\0"),  # change the first Subject
        (b"m", struct.pack(">I", 1) + b"X-Drop\0\0"),      # delete X-Drop
        (b"e", b"<new@src.test>\0"),                       # change the sender
        (b"+", b"<added@local.test>\0"),                   # add a recipient
        (b"-", b"<carol@local.test>\0"),                   # remove one
        (b"b", new_body),                                  # replace the body
        (b"a", b""),
    ])
    edge = edge_factory({"milter.mx": f"inet:{peer.port}@127.0.0.1"})
    content = (b"From: <a@src.test>\r\nX-Drop: me\r\nSubject: original\r\nTo: <bob@local.test>\r\n\r\n"
               b"the old body\r\n")
    qid = queued_id(send(edge.port, content, rcpts=("bob@local.test", "carol@local.test")))
    env, body, rcpts = message(redis_server.client, qid)
    assert env["sender"] == "new@src.test"
    assert [r["to"] for r in rcpts] == ["bob@local.test", "added@local.test"]
    _, rest = split_received(body)
    assert rest == (b"X-First: top\r\nFrom: <a@src.test>\r\nSubject: changed\r\nTo: <bob@local.test>\r\n"
                    b"X-Added: yes\r\n\r\nreplaced body\r\nsecond line\r\n")
    # The milter saw the headers and the body as the client sent them.
    headers = [d for c, d in peer.seen if c == b"L"]
    assert headers[0] == b"From\0<a@src.test>\0" and len(headers) == 4
    assert [d for c, d in peer.seen if c == b"B"] == [b"the old body\r\n"]


def test_quarantine_holds_the_message(edge_factory, redis_server):
    peer = Scripted([(b"q", b"spam detected\0"), (b"c", b"")])
    edge = edge_factory({"milter.mx": f"inet:{peer.port}@127.0.0.1"})
    qid = queued_id(send(edge.port, CLEAN))
    r = redis_server.client
    assert r.zscore("mxg:repo:quarantine/spam", qid) is not None
    assert r.zcard("mxg:due") == 0 and r.zcard("mxg:due:urgent") == 0
    env, _, _ = message(r, qid)
    assert env["repo"] == "quarantine/spam" and env["repo_reason"] == "spam detected"


@pytest.mark.parametrize("reply, code, enhanced", [
    ((b"y", b"554 5.7.0 go away\0"), 554, "5.7.0"),
    ((b"t", b""), 451, "4.7.1"),
    ((b"r", b""), 550, "5.7.1"),
])
def test_refusals_at_the_end_of_data(edge_factory, redis_server, reply, code, enhanced):
    peer = Scripted([reply])
    edge = edge_factory({"milter.mx": f"inet:{peer.port}@127.0.0.1"})
    expect(send(edge.port, CLEAN), code, enhanced)
    assert mxtest.queued_ids(redis_server.client) == []


def test_discard_answers_250_and_keeps_nothing(edge_factory, redis_server):
    peer = Scripted([(b"d", b"")])
    edge = edge_factory({"milter.mx": f"inet:{peer.port}@127.0.0.1"})
    expect(send(edge.port, CLEAN), 250, "2.0.0", "discarded")
    assert mxtest.queued_ids(redis_server.client) == []
