"""The edge against a hostile client and a flaky network: it must stay up, correct and leak-free.

Every test ends by checking that the edge process is alive, that a normal message still gets
250 and lands in Redis, that every session the edge opened was freed again (a "disconnect" log
line for each "connect", same session ids), and that the log is valid UTF-8 JSON. Under a
sanitizer build the harness also fails the test on any ASan/UBSan/LSan report when the edge stops.

Covered: abrupt disconnects (FIN, RST, and a RST that meets the edge while it is busy) at every
protocol stage, including inside TLS, AUTH, the tarpit and a backlog of unread replies; a
disconnect while the enqueue waits on a stopped Redis; garbage commands (random bytes, NULs,
lone CRs, a 1 MB line, non-UTF-8 addresses, huge parameter lists, 2000 pipelined RCPTs, absurd
BDAT sizes); garbage where TLS is expected and TLS where plaintext is; 300 concurrent sessions
and 300 connect-and-drop clients; a client that pipelines without reading (backpressure); and
SIGTERM with sessions idle, in DATA, waiting on the enqueue, stuck, or holding no message.
"""
import itertools
import json
import random
import signal
import socket
import ssl
import struct
import threading
import time

import pytest

from mxtest import (BIN, SMTP, ehlo, expect, free_port, message, port_open, queued_id,
                    queued_ids, replies_until_close, split_received, tls_client_context,
                    wait_for)

CONTENT = b"Subject: robustness\r\n\r\nhello\r\n"
SANITIZED = b"__asan_init" in open(BIN, "rb").read()      # an ASan build references its runtime


# ---- helpers -------------------------------------------------------------------------------

def abort(sock, mode):
    """Drops a connection without QUIT: a FIN ("close") or a RST ("rst", SO_LINGER 0)."""
    if mode == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def events(edge, name=None):
    """The edge's JSON log records (optionally only those with event == name), read as whole
    lines only: a line the edge is writing right now may be seen in part."""
    with open(edge.log_path, "rb") as f:
        raw = f.read()
    out = []
    for line in raw[:raw.rfind(b"\n") + 1].decode("utf-8", "replace").splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if name is None or rec.get("event") == name:
                out.append(rec)
    return out


def live_sessions(edge):
    """Session ids the edge logged a connect for and no disconnect yet."""
    evs = events(edge)     # one read of the log, so that both lists agree
    opened = {e["session"] for e in evs if e.get("event") == "connect"}
    closed = [e["session"] for e in evs if e.get("event") == "disconnect"]
    assert len(closed) == len(set(closed)), "a session was freed twice"
    assert set(closed) <= opened
    return opened - set(closed)


def leaked(edge, timeout=3.0):
    """None when every session the edge logged is freed within timeout (they end within
    milliseconds), else a report of the ones left and the log of the first."""
    try:
        wait_for(lambda: not live_sessions(edge), timeout=timeout, what="every session freed")
        return None
    except AssertionError:
        left = sorted(live_sessions(edge))
        lines = [ln for ln in edge.read_log().splitlines() if left[0] in ln]
        return f"sessions never freed: {left}; log of the first:\n" + "\n".join(lines[-12:])


def assert_no_live_sessions(edge, timeout=3.0):
    report = leaked(edge, timeout)
    if report:
        # A leaked session would hold the SIGTERM stop for its whole 10 s deadline: kill instead.
        edge.kill9()
        raise AssertionError(report)


def assert_log_is_clean_json(edge):
    """Every log line is valid UTF-8 and JSON, whatever bytes the clients sent."""
    with open(edge.log_path, "rb") as f:
        raw = f.read()
    text = raw[:raw.rfind(b"\n") + 1].decode("utf-8")     # raises on a byte that is not UTF-8
    for line in text.splitlines():
        if line.startswith("{"):
            json.loads(line)


def send_ok(port, redis, tag="ok"):
    """A normal message over a fresh session: 250, and it is in Redis with its content."""
    c = SMTP(port)
    try:
        ehlo(c)
        expect(c.cmd("MAIL FROM:<sender@ext.test>"), 250, "2.1.0")
        expect(c.cmd("RCPT TO:<user@local.test>"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        body = b"Subject: " + tag.encode() + b"\r\n\r\nstill fine\r\n"
        c.send(body + b".\r\n")
        qid = queued_id(c.reply())
        expect(c.cmd("QUIT"), 221)
    finally:
        c.close()
    env, stored, rcpts = message(redis.client, qid)
    assert split_received(stored)[1] == body
    assert [r["to"] for r in rcpts] == ["user@local.test"]
    return qid


def assert_healthy(edge, redis):
    """The edge is up, still takes mail, and holds no session."""
    assert edge.proc.poll() is None, "edge died:\n" + edge.read_log()[-4000:]
    send_ok(edge.port, redis)
    assert_no_live_sessions(edge)
    assert_log_is_clean_json(edge)
    assert edge.proc.poll() is None


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def client_hello():
    """The bytes of a TLS ClientHello, as Python's ssl would send first."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_client_context().wrap_bio(inc, out, server_hostname="mx.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def start_tx(c):
    ehlo(c)
    expect(c.cmd("MAIL FROM:<sender@ext.test>"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<user@local.test>"), 250, "2.1.5")


def read_closed(sock, timeout=5.0):
    """Everything the server sends until it closes; raises if it does not close in time."""
    sock.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return got
        except socket.timeout:
            break
        if not chunk:
            return got
        got += chunk
    raise AssertionError(f"server did not close; got {got[:300]!r}")


@pytest.fixture
def tls_edge(edge_factory, tls_pair, auth_users):
    """An edge with STARTTLS, AUTH on submission, and an implicit-TLS listener (m.smtps_port)."""
    cert, key = tls_pair
    port = free_port()
    m = edge_factory({"tls.cert": cert, "tls.key": key, "edge.auth_users": auth_users,
                      "edge.smtps_listen": f"127.0.0.1:{port}"})
    m.smtps_port = port
    wait_for(lambda: port_open(port), what="smtps listener")
    return m


# ---- abrupt disconnects at every stage -------------------------------------------------------
#
# Each stage brings a session to one point and returns (socket, last bytes): the test sends the
# last bytes and hangs up at once, in one of three ways: a FIN ("close"), a RST ("rst"), or a
# RST that reaches the edge together with the last bytes because it was busy (stopped) meanwhile
# ("rst_while_busy"), so it reads them and finds the connection gone when it answers.

HANGUPS = ("close", "rst", "rst_while_busy")


def _tls_submission(m, user_step):
    """A submission session after STARTTLS and EHLO, in AUTH LOGIN up to user_step."""
    c = SMTP(m.sub_port)
    ehlo(c)
    c.starttls()
    ehlo(c)
    if user_step:
        expect(c.cmd("AUTH LOGIN"), 334)
        expect(c.cmd("YWxpY2U="), 334, text="UGFzc3dvcmQ6")     # "alice" -> "Password:"
    return c


def open_stage(m, stage):
    """A session brought to the point named by stage: (its socket, the bytes still to send)."""
    if stage == "before_greeting":
        return socket.create_connection(("127.0.0.1", m.port)), b""
    if stage == "smtps_mid_handshake":      # ClientHello sent, ServerHello seen, no Finished
        s = socket.create_connection(("127.0.0.1", m.smtps_port), timeout=5)
        s.sendall(client_hello())
        assert s.recv(5)[:1] == b"\x16"
        return s, b""
    if stage in ("mid_auth_login", "auth_check_pending"):
        # After STARTTLS, EHLO, AUTH LOGIN and the user name the password never comes; or
        # AUTH PLAIN is sent, and the crypt(3) check is on a worker thread when the client goes.
        c = _tls_submission(m, stage == "mid_auth_login")
        return c.sock, b"" if stage == "mid_auth_login" else \
            b"AUTH PLAIN AGFsaWNlAHNlY3JldC1hbGljZQ==\r\n"     # alice / secret-alice
    c = SMTP(m.port)
    ehlo(c)
    if stage == "after_ehlo":
        return c.sock, b""
    if stage == "mid_command_line":
        return c.sock, b"MAIL FROM:<sender@ext.te"
    if stage == "after_mail":
        expect(c.cmd("MAIL FROM:<sender@ext.test>"), 250)
        return c.sock, b""
    if stage.startswith("tls_"):
        c.starttls()
        ehlo(c)
    if stage in ("mid_data", "after_final_dot", "mid_bdat", "tls_after_final_dot"):
        expect(c.cmd("MAIL FROM:<sender@ext.test>"), 250, "2.1.0")
        expect(c.cmd("RCPT TO:<user@local.test>"), 250, "2.1.5")
        if stage == "mid_bdat":
            return c.sock, b"BDAT 1000 LAST\r\n" + b"x" * 300
        expect(c.cmd("DATA"), 354)
        if stage == "mid_data":
            return c.sock, b"Subject: cut\r\n\r\nhalf a li"
        return c.sock, CONTENT + b".\r\n"     # gone before the 250
    if stage == "tls_quit_unread":          # the server is closing, its 221 still unsent
        return c.sock, b"QUIT\r\n"
    if stage == "in_error_sleep":           # past the soft limit the tarpit holds the reply
        for _ in range(10):
            expect(c.cmd("XYZZY"), 502, "5.5.2")
        return c.sock, b"XYZZY\r\n"
    if stage == "replies_unread":           # thousands of replies the client never reads
        c.send(b"RSET\r\n" * 50000)
        time.sleep(0.2)
        return c.sock, b"RSET\r\n" * 100
    expect(c.cmd("STARTTLS"), 220, "2.0.0")
    if stage == "after_starttls_reply":     # no ClientHello follows
        return c.sock, b""
    hello = client_hello()
    if stage == "mid_client_hello":
        return c.sock, hello[:len(hello) // 2]
    assert stage == "mid_tls_handshake"     # ClientHello sent, ServerHello seen, no Finished
    c.send(hello)
    c.sock.settimeout(5)
    assert c.sock.recv(5)[:1] == b"\x16"
    return c.sock, b""


STAGES = ["before_greeting", "after_ehlo", "mid_command_line", "after_mail", "mid_data",
          "after_final_dot", "mid_bdat", "after_starttls_reply", "mid_client_hello",
          "mid_tls_handshake", "smtps_mid_handshake", "mid_auth_login", "auth_check_pending",
          "tls_after_final_dot", "tls_quit_unread", "in_error_sleep", "replies_unread"]
TLS_HANDSHAKE_STAGES = ("after_starttls_reply", "mid_client_hello", "mid_tls_handshake",
                        "smtps_mid_handshake")


def hang_up(edge, sock, final, how):
    if how == "rst_while_busy":
        edge.proc.send_signal(signal.SIGSTOP)
    try:
        if final:
            sock.sendall(final)
        abort(sock, "close" if how == "close" else "rst")
        if how == "rst_while_busy":
            time.sleep(0.05)
    finally:
        if how == "rst_while_busy":
            edge.proc.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("stage", STAGES)
def test_abrupt_disconnect(stage, tls_edge, redis_server):
    m, r = tls_edge, redis_server.client
    problems = []
    for how in HANGUPS:
        lost = len(events(m, "lost-in-data"))
        outcomes = len(events(m, "queued")) + len(events(m, "enqueue-failed"))
        sock, final = open_stage(m, stage)
        hang_up(m, sock, final, how)
        report = leaked(m)
        if report:
            problems.append(f"{how}: {report}")
            break       # the leaked session would only muddle the next rounds
        if stage in ("mid_data", "mid_bdat"):
            if len(events(m, "lost-in-data")) != lost + 1:
                problems.append(f"{how}: no lost-in-data event")
        if stage in ("after_final_dot", "tls_after_final_dot"):
            if how == "close":
                # Content and FIN arrive together: the message is taken, the 250 has no one
                # to go to, and the log says so.
                wait_for(lambda: len(events(m, "queued")) + len(events(m, "enqueue-failed"))
                         > outcomes, what="enqueue outcome")
                last = (events(m, "queued") + events(m, "enqueue-failed"))[-1]
                if last.get("event") != "queued" or last.get("client_gone") is not True:
                    problems.append(f"{how}: outcome {last}")
            for qid in queued_ids(r):
                if r.exists(f"mxg:body:{{{qid}}}", f"mxg:rcpt:{{{qid}}}") != 2:
                    problems.append(f"{how}: message {qid} stored in part")
        elif stage not in ("after_final_dot", "tls_after_final_dot") and queued_ids(r):
            problems.append(f"{how}: something was queued: {queued_ids(r)}")
        if stage in TLS_HANDSHAKE_STAGES:
            evs = events(m)
            sid = [e["session"] for e in evs if e["event"] == "connect"][-1]
            if not any(e["event"] == "tls-failed" and e["session"] == sid for e in evs):
                problems.append(f"{how}: no tls-failed for {sid}")
    if problems:
        m.kill9()       # a leaked session would hold the SIGTERM stop for 10 s
        raise AssertionError("\n".join(problems))
    assert_healthy(m, redis_server)


# ---- disconnect while the enqueue waits on Redis ----------------------------------------------

@pytest.mark.parametrize("redis_answers", ["in_time", "after_timeout"])
def test_disconnect_while_enqueue_pending(redis_answers, edge_factory, redis_server):
    m = edge_factory({"redis.timeout": "1s"})
    clients = []
    for _ in range(2):
        c = SMTP(m.port)
        start_tx(c)
        expect(c.cmd("DATA"), 354)
        clients.append(c)
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        for c in clients:
            c.send(CONTENT + b".\r\n")
        time.sleep(0.3)                 # both enqueues are now sent to the stopped Redis
        abort(clients[0].sock, "close")
        abort(clients[1].sock, "rst")
        wait_for(lambda: len(events(m, "close")) >= 2, what="both clients seen gone")
        assert live_sessions(m), "sessions freed while their enqueue was still pending"
        if redis_answers == "after_timeout":
            wait_for(lambda: len(events(m, "enqueue-failed")) == 2, timeout=5,
                     what="enqueue timeouts")
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    if redis_answers == "in_time":
        wait_for(lambda: len(events(m, "queued")) == 2, what="both enqueues answered")
        qids = {e["queue_id"] for e in events(m, "queued")}
        assert all(e.get("client_gone") for e in events(m, "queued"))
        assert set(queued_ids(redis_server.client)) == qids
    else:
        assert {e.get("queue_id") for e in events(m, "enqueue-failed")} != {None}
        # The timed-out connection was dropped; the edge connects again by itself.
        wait_for(lambda: len(events(m, "redis-connected")) >= 2, what="Redis reconnected")
    assert_healthy(m, redis_server)


# ---- garbage ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [20240601, 2])
@pytest.mark.parametrize("greet", ["ehlo", "none"])
def test_random_bytes_as_commands(greet, seed, edge_factory, redis_server):
    """64 KB of random bytes as commands, sent in one go while the replies are read. Each line
    is an error (500 or 502) until the hard error limit (421, end); without EHLO the first line
    that parses at all is a pipelining violation (554, end). The client must get every one of
    those replies, the last included, before the connection ends."""
    m = edge_factory({"edge.error_sleep": "0s"})
    c = SMTP(m.port)
    if greet == "ehlo":
        ehlo(c)
    junk = random.Random(seed).randbytes(64 * 1024)
    sender = threading.Thread(target=lambda: _send_quietly(c.sock, junk), daemon=True)
    sender.start()
    got = replies_until_close(c)
    sender.join(10)
    sid = events(m, "connect")[-1]["session"]
    wait_for(lambda: [e for e in events(m, "disconnect") if e["session"] == sid],
             what="session end")
    rejects = [e for e in events(m, "reject") if e["session"] == sid]
    if len(rejects) == 20:
        final = (421, ["4.7.0 mx.test Error: too many errors"])
    else:
        # Lines refused before they are parsed (too long, NUL, CR) are errors; the first line
        # that parses is then a pipelining violation when no EHLO announced PIPELINING.
        assert greet == "none" and events(m, "pipelining-violation")
        final = (554, ["5.5.0 Error: SMTP protocol synchronization"])
    assert [code for code, _ in got[:-1]] == [int(e["reply"][:3]) for e in rejects], \
        f"{len(got)} replies reached the client for {len(rejects)} errors and a {final[0]}"
    assert got[-1] == final, got[-3:]
    assert_healthy(m, redis_server)


def _send_quietly(sock, data):
    try:
        sock.sendall(data)
    except OSError:
        pass                            # the server may close first


def test_nuls_and_lone_crs_in_commands(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    for bad in (b"NOOP\0\r\n", b"\0\0\0\0\r\n", b"MAIL FROM:<a\0b@ext.test>\r\n",
                b"NOOP\rRSET\r\n", b"\r\r\r\r\n", b"RSET\r \r\n"):
        c.send(bad)
        expect(c.reply(), 500, "5.5.2", "bad character")
    # None of it was taken as a command: no MAIL, the session carries on.
    expect(c.cmd("RCPT TO:<user@local.test>"), 503, "5.5.1")
    expect(c.cmd("MAIL FROM:<sender@ext.test>"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<user@local.test>"), 250, "2.1.5")
    expect(c.cmd("DATA"), 354)
    c.send(CONTENT + b".\r\n")
    queued_id(c.reply())
    c.close()
    assert_healthy(edge, redis_server)


def test_megabyte_line_without_newline(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    before = rss_kb(edge.proc.pid)
    c.send(b"MAIL FROM:<" + b"a" * (1024 * 1024))
    expect(c.reply(), 500, "5.5.2", "line too long")      # once, not once per read
    time.sleep(0.2)
    grown = rss_kb(edge.proc.pid) - before
    if not SANITIZED:
        assert grown < 4096, f"edge grew by {grown} kB holding a line it refused"
    c.send(b"@ext.test>\r\n")
    expect(c.cmd("NOOP"), 250, "2.0.0")     # the tail was skipped, not read as a command
    expect(c.cmd("RCPT TO:<user@local.test>"), 503, "5.5.1")
    c.close()
    assert_healthy(edge, redis_server)


def test_non_utf8_in_mail_from(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    for arg in (b"<\xff\xfe\xc0\x80@ext.test>", b"<\xff\xfe@ext.test> SMTPUTF8",
                b"<user@\xe9xample.test> SMTPUTF8", b"<\xed\xa0\x80@ext.test> SMTPUTF8",
                b"<\xc3@ext.test> SMTPUTF8 BODY=8BITMIME"):
        c.send(b"MAIL FROM:" + arg + b"\r\n")
        assert c.reply() == (501, ["5.1.7 Bad sender address syntax"]), arg
    expect(c.cmd("RSET"), 250)
    c.close()
    rejects = events(edge, "reject")
    assert len(rejects) == 5
    assert_healthy(edge, redis_server)     # includes: the log is valid UTF-8 JSON


def test_huge_parameter_lists(edge_factory, redis_server):
    m = edge_factory({"edge.max_command_line": "65536", "edge.error_sleep": "0s"})
    c = SMTP(m.port)
    ehlo(c)
    unsupported = (555, ["5.5.4 Unsupported parameter"])
    duplicate = (501, ["5.5.4 Duplicate parameter"])
    cases = [
        (" ".join(f"X-P{i}=v{i}" for i in range(4000)), unsupported),
        (" ".join("BODY=8BITMIME" for _ in range(4500)), duplicate),
        (" ".join(f"ENVID=e{i}" for i in range(5000)), duplicate),
        ("SIZE=1" + " " * 60000 + "SIZE=2", duplicate),
        ("=" * 60000, (501, ["5.5.4 Syntax error in parameters"])),
    ]
    for params, want in cases:
        line = f"MAIL FROM:<sender@ext.test> {params}"
        assert len(line) + 2 <= 65536
        t0 = time.monotonic()
        assert c.cmd(line) == want, params[:40]
        assert time.monotonic() - t0 < 2, "parameter parsing is too slow"
    expect(c.cmd("MAIL FROM:<sender@ext.test>"), 250)
    rcpt = "RCPT TO:<user@local.test> " + " ".join("NOTIFY=NEVER" for _ in range(5000))
    assert c.cmd(rcpt) == duplicate
    c.close()
    assert_healthy(m, redis_server)


def test_2000_rcpts_pipelined_in_one_write(edge_factory, connect, redis_server):
    """RFC 5321 4.5.3.1.10: past the recipient limit, 452 for each extra RCPT; the client then
    sends DATA for the ones accepted. The refusals are the server's limit, not client errors,
    so they must not end the session (Postfix counts them only past an overshoot limit)."""
    # A short error sleep only keeps the test fast; the default (1 s) changes nothing here.
    edge = edge_factory({"edge.error_sleep": "100ms"})
    c = connect(edge.port)
    ehlo(c)
    group = "MAIL FROM:<sender@ext.test>\r\n"
    group += "".join(f"RCPT TO:<r{i}@local.test>\r\n" for i in range(2000))
    group += "DATA\r\n"
    c.send(group)
    c.sock.settimeout(30)
    got = []
    while len(got) < 2002:
        try:
            got.append(c.reply())
        except ConnectionError:
            break
    summary = [(code, sum(1 for _ in grp)) for code, grp in
               itertools.groupby(code for code, _ in got)]
    assert len(got) == 2002, f"session ended early; reply codes (code, run length): {summary}"
    expect(got[0], 250, "2.1.0")
    assert [code for code, _ in got[1:1001]] == [250] * 1000
    assert [code for code, _ in got[1001:2001]] == [452] * 1000, got[1001:1030]
    expect(got[2001], 354)
    c.send(CONTENT + b".\r\n")
    qid = queued_id(c.reply())
    env, _, rcpts = message(redis_server.client, qid)
    assert env["nrcpt"] == "1000"
    assert [r["to"] for r in rcpts] == [f"r{i}@local.test" for i in range(1000)]
    c.close()
    assert_healthy(edge, redis_server)


def test_bdat_of_size_2_64_minus_1_then_disconnect(edge_factory, redis_server):
    m = edge_factory({"edge.message_size_limit": "64k"})
    for mode in ("close", "rst"):
        c = SMTP(m.port)
        start_tx(c)
        c.send(b"BDAT 18446744073709551615\r\n")
        c.send(b"x" * (200 * 1024))    # past the size limit: parsed on, stored nothing
        time.sleep(0.2)
        abort(c.sock, mode)
    assert_no_live_sessions(m)
    assert len(events(m, "lost-in-data")) == 2
    assert queued_ids(redis_server.client) == []
    assert_healthy(m, redis_server)


@pytest.mark.parametrize("size", ["-1", "-0", "abc", "1e3", "+5", "0x10", " 5", "5  LAST",
                                  "5 LASTX", "18446744073709551616", "99999999999999999999999",
                                  ""])
def test_bdat_bad_size(size, edge, connect, redis_server):
    c = connect(edge.port)
    start_tx(c)
    c.send(f"BDAT {size}\r\n")
    expect(c.reply(), 501, "5.5.4")
    # Without a size the chunk's end is unknown: the session ends rather than read it as commands.
    assert c.closed()
    assert queued_ids(redis_server.client) == []
    assert_healthy(edge, redis_server)


# ---- TLS garbage ------------------------------------------------------------------------------

TLS_GARBAGE = {
    "random": random.Random(7).randbytes(4096),
    # A handshake record header announcing 65535 octets: "packet length too long" at once.
    "oversized_record": b"\x16\x03\x01\xff\xff" + bytes(100),
    # A whole record holding a ClientHello one octet long: a decode error at once.
    "malformed_client_hello": b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",
}


def send_and_reset_while_busy(edge, sock, data):
    """The edge is busy (stopped) while the bytes and then a RST arrive: it reads the bytes
    and finds the connection already reset when it answers them."""
    edge.proc.send_signal(signal.SIGSTOP)
    try:
        sock.sendall(data)
        abort(sock, "rst")
        time.sleep(0.05)
    finally:
        edge.proc.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("then", ["read", "close", "rst", "rst_while_busy"])
@pytest.mark.parametrize("garbage", list(TLS_GARBAGE))
def test_garbage_after_starttls(garbage, then, tls_edge, redis_server):
    """Not TLS after the 220 to STARTTLS; "close" and "rst" hang up right after sending it,
    so the server's TLS alert may meet a connection that is already gone."""
    def failed():
        """Sessions of the MX listener (not the fixture's probe of smtps) that failed TLS."""
        evs = events(tls_edge)
        mx = {e["session"] for e in evs if e["event"] == "connect" and e["listener"] == "mx"}
        return {e["session"] for e in evs if e["event"] == "tls-failed"} & mx
    for _ in range(5):
        c = SMTP(tls_edge.port)
        ehlo(c)
        expect(c.cmd("STARTTLS"), 220, "2.0.0")
        if then == "rst_while_busy":
            send_and_reset_while_busy(tls_edge, c.sock, TLS_GARBAGE[garbage])
            continue
        c.send(TLS_GARBAGE[garbage])
        if then == "read":
            got = read_closed(c.sock)
            assert b"250" not in got and b"220" not in got
            c.close()
        else:
            abort(c.sock, then)
    wait_for(lambda: len(failed()) == 5, what="tls-failed logged")
    assert_healthy(tls_edge, redis_server)


def test_client_hello_to_plaintext_port(tls_edge, redis_server):
    # A TLS client on the plaintext port: it reads our greeting as a broken TLS record.
    s = socket.create_connection(("127.0.0.1", tls_edge.port), timeout=5)
    with pytest.raises(ssl.SSLError):
        tls_client_context().wrap_socket(s, server_hostname="mx.test")
    s.close()
    # The raw ClientHello as command lines: each refused (NULs, or no such verb), nothing more.
    # After EHLO, so that the lines may follow each other: a client that has not said EHLO may
    # not pipeline at all, and about one ClientHello in thirty has a line without a NUL, which
    # would then end the session as a synchronization error.
    c = SMTP(tls_edge.port)
    ehlo(c)
    hello = client_hello()
    c.send(hello)
    time.sleep(0.2)
    c.send(b"\r\nNOOP\r\n")
    got = [c.reply() for _ in range(hello.count(b"\n") + 2)]
    assert {code for code, _ in got[:-1]} <= {500, 502}, got
    assert got[-1] == (250, ["2.0.0 Ok"]), got
    c.close()
    assert_healthy(tls_edge, redis_server)


@pytest.mark.parametrize("data", [b"EHLO plain.test\r\n", b"GET / HTTP/1.0\r\n\r\n",
                                  b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", b""])
def test_plaintext_to_implicit_tls_port(data, edge_factory, tls_pair, auth_users, redis_server):
    cert, key = tls_pair
    port = free_port()
    m = edge_factory({"tls.cert": cert, "tls.key": key, "edge.auth_users": auth_users,
                      "edge.smtps_listen": f"127.0.0.1:{port}"})
    wait_for(lambda: port_open(port), what="smtps listener")
    for mode in ("read", "close", "rst", "close_later", "rst_later", "rst_while_busy"):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if mode == "rst_while_busy":
            time.sleep(0.05)            # accepted, and the TLS filter set up
            send_and_reset_while_busy(m, s, data)
            continue
        s.sendall(data)
        if mode == "read":
            if data:
                got = read_closed(s)
                assert not got.startswith(b"220") and b"250" not in got
            abort(s, "close")
        else:
            if mode.endswith("_later"):
                time.sleep(0.05)
            abort(s, mode.split("_")[0])
    assert_healthy(m, redis_server)


# ---- many sessions ----------------------------------------------------------------------------

def test_300_concurrent_sessions_then_300_dropped(edge_factory, redis_server):
    m = edge_factory({"edge.max_connections_per_ip": "0"})
    n = 300
    barrier = threading.Barrier(n, timeout=60)
    results, errors = {}, []

    def one(i):
        try:
            c = SMTP(m.port, timeout=60)
            ehlo(c, f"client{i}.test")
            barrier.wait()              # all 300 sessions are open at once
            expect(c.cmd(f"MAIL FROM:<s{i}@ext.test>"), 250)
            expect(c.cmd(f"RCPT TO:<u{i}@local.test>"), 250)
            expect(c.cmd("DATA"), 354)
            c.send(f"Subject: n{i}\r\n\r\nbody {i}\r\n.\r\n")
            results[i] = queued_id(c.reply())
            expect(c.cmd("QUIT"), 221)
            c.close()
        except Exception as e:          # noqa: BLE001 - reported below
            errors.append((i, repr(e)))
            barrier.abort()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors[:5]
    assert len(results) == n
    assert sorted(queued_ids(redis_server.client)) == sorted(results.values())
    for i in (0, 137, n - 1):
        env, body, rcpts = message(redis_server.client, results[i])
        assert split_received(body)[1] == f"Subject: n{i}\r\n\r\nbody {i}\r\n".encode()
        assert env["sender"] == f"s{i}@ext.test" and rcpts[0]["to"] == f"u{i}@local.test"
    assert_no_live_sessions(m)

    before = len(events(m, "connect"))
    socks = []
    for i in range(n):
        socks.append(socket.create_connection(("127.0.0.1", m.port), timeout=5))
    for i, s in enumerate(socks):
        abort(s, "rst" if i % 2 else "close")
    wait_for(lambda: len(events(m, "connect")) == before + n, timeout=20,
             what="all 300 accepted")
    assert_no_live_sessions(m, timeout=20)
    assert_healthy(m, redis_server)


# ---- a client that does not read (backpressure) -------------------------------------------------

def test_pipelining_without_reading_is_throttled(edge, redis_server):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", edge.port))
    c = SMTP.__new__(SMTP)
    c.sock, c.buf = s, b""
    c.greeting = c.reply()
    ehlo(c)
    base = rss_kb(edge.proc.pid)
    s.setblocking(False)
    chunk = b"RSET\r\n" * 10000
    sent, stalled_since = 0, None
    limit = 2_000_000 * 6                   # 2M RSETs, 12 MB: far past any sane buffering
    while sent < limit:
        try:
            sent += s.send(chunk[sent % len(chunk):] if sent % len(chunk) else chunk)
            stalled_since = None
        except BlockingIOError:
            if stalled_since is None:
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since > 1.0:
                break
            time.sleep(0.01)
    assert sent >= 100_000 * 6, f"stalled after only {sent} bytes"
    assert sent < limit, "the server read 2M commands from a client that reads no replies"
    grown = rss_kb(edge.proc.pid) - base
    if not SANITIZED:
        assert grown < 16 * 1024, f"edge grew by {grown} kB"
    # Other clients are served meanwhile.
    send_ok(edge.port, redis_server, "during-backpressure")
    # The client reads at last: every RSET is answered, in order, and the session goes on.
    s.setblocking(True)
    s.settimeout(30)
    nrset = -(-sent // 6)
    want = b"250 2.0.0 Ok\r\n" * nrset
    got = bytearray()

    def read_all():
        while len(got) < len(want):
            data = s.recv(1 << 20)
            if not data:
                return
            got.extend(data)
    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    if sent % 6:
        s.sendall(b"RSET\r\n"[sent % 6:])     # the rest of a command cut by the last send
    reader.join(60)
    assert bytes(got) == want, (len(got), len(want))
    c.buf = b""
    expect(c.cmd("NOOP"), 250)
    abort(s, "close")
    assert_healthy(edge, redis_server)


# ---- SIGTERM ----------------------------------------------------------------------------------

def test_sigterm_with_idle_data_and_pending_sessions(edge, redis_server):
    idle = SMTP(edge.port)
    ehlo(idle)
    in_data = SMTP(edge.port)
    start_tx(in_data)
    expect(in_data.cmd("DATA"), 354)
    in_data.send(b"Subject: in data\r\n\r\nfirst half\r\n")
    pending = SMTP(edge.port)
    start_tx(pending)
    expect(pending.cmd("DATA"), 354)
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        pending.send(CONTENT + b".\r\n")
        time.sleep(0.2)
        t0 = time.monotonic()
        edge.proc.send_signal(signal.SIGTERM)
        # The idle session hears 421 at once and is closed.
        expect(idle.reply(), 421, "4.3.2", "shutting down")
        assert idle.closed()
        # The session in DATA may finish its message.
        in_data.send(b"second half\r\n.\r\n")
        time.sleep(0.2)
        assert edge.proc.poll() is None, "edge exited with a message in hand"
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    qid_pending = queued_id(pending.reply())
    expect(pending.reply(), 421, "4.3.2")
    qid_data = queued_id(in_data.reply())
    expect(in_data.reply(), 421, "4.3.2")
    rc = edge.proc.wait(timeout=12)
    assert rc == 0
    assert time.monotonic() - t0 < 12
    assert set(queued_ids(redis_server.client)) == {qid_pending, qid_data}
    _, body, _ = message(redis_server.client, qid_data)
    assert split_received(body)[1] == b"Subject: in data\r\n\r\nfirst half\r\nsecond half\r\n"
    assert events(edge, "stopped")
    assert not live_sessions(edge)
    for c in (idle, in_data, pending):
        c.close()
    assert edge.stop() == 0          # checks the sanitizer report of the exit


def test_sigterm_with_stuck_sessions_exits_at_deadline(edge, redis_server):
    idle = SMTP(edge.port)
    ehlo(idle)
    stuck = SMTP(edge.port)
    start_tx(stuck)
    expect(stuck.cmd("DATA"), 354)
    stuck.send(b"Subject: never ends\r\n\r\n")
    quiet = socket.create_connection(("127.0.0.1", edge.port))     # never reads its greeting
    time.sleep(0.2)
    t0 = time.monotonic()
    edge.proc.send_signal(signal.SIGTERM)
    expect(idle.reply(), 421, "4.3.2")
    rc = edge.proc.wait(timeout=14)
    took = time.monotonic() - t0
    assert rc == 0
    assert 9 < took < 12.5, took
    assert events(edge, "stop-deadline")
    assert queued_ids(redis_server.client) == []
    for c in (idle, stuck):
        c.close()
    quiet.close()
    assert edge.stop() == 0


def test_sigterm_ends_sessions_that_hold_no_message(tls_edge, redis_server):
    """Sessions with nothing in hand are ended at once: idle over TLS (421 over TLS), idle in
    the AUTH dialog (421), and stuck before the TLS handshake (closed); the edge then exits
    quickly and cleanly, not at the 10 s deadline."""
    over_tls = SMTP(tls_edge.port)
    ehlo(over_tls)
    over_tls.starttls()
    ehlo(over_tls)
    in_auth = _tls_submission(tls_edge, True)
    before_handshake = SMTP(tls_edge.port)
    ehlo(before_handshake)
    expect(before_handshake.cmd("STARTTLS"), 220, "2.0.0")
    t0 = time.monotonic()
    tls_edge.proc.send_signal(signal.SIGTERM)
    time.sleep(2.5)
    seen = {}
    for name, c in (("idle over TLS", over_tls), ("idle in AUTH", in_auth),
                    ("before handshake", before_handshake)):
        c.sock.settimeout(0.2)
        try:
            got = c.sock.recv(4096)
            seen[name] = got.decode("utf-8", "replace") if got else "closed"
        except (ssl.SSLError, socket.timeout, ConnectionError):
            seen[name] = "nothing after 2.5 s"
    exited = tls_edge.proc.poll() is not None
    for c in (over_tls, in_auth, before_handshake):
        c.close()
    rc = tls_edge.proc.wait(timeout=14)
    assert rc == 0
    assert seen["idle over TLS"] == "421 4.3.2 mx.test Service shutting down\r\n", seen
    assert seen["idle in AUTH"].startswith("421 4.3.2 "), seen
    assert seen["before handshake"] == "closed", seen
    assert exited, (f"edge still running 2.5 s after SIGTERM (exited after "
                    f"{time.monotonic() - t0:.1f} s, once the clients hung up); sessions saw {seen}")
    assert not events(tls_edge, "stop-deadline")
    assert tls_edge.stop() == 0
