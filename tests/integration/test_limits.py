"""The edge's limits, each with a small override so that it bites fast.

Command and text line lengths, address part lengths, recipients per message, message size (DATA
and BDAT), messages per session, connections in total and per IP, the idle timeout, the minimum
data rate, and the error counter's tarpit and cut-off.
"""
import select
import time

import pytest

from mxtest import (SMTP, ehlo, expect, message, queued_id, queued_ids, replies,
                    split_received, wait_for)


def start_tx(c, sender="s@ext.test", rcpts=("u@local.test",)):
    expect(c.cmd(f"MAIL FROM:<{sender}>"), 250, "2.1.0")
    for r in rcpts:
        expect(c.cmd(f"RCPT TO:<{r}>"), 250, "2.1.5")


def long_domain(n, tail="ext.test"):
    """A syntactically valid domain of exactly n octets ending in tail."""
    labels, left = [], n - len(tail)    # octets of "label." pieces before tail
    while left > 0:
        take = min(64, left)
        if left - take == 1:
            take -= 1                   # never leave a piece too short for a label
        labels.append("a" * (take - 1))
        left -= take
    d = ".".join(labels + [tail])
    assert len(d) == n, (len(d), n)
    return d


# ---- line lengths --------------------------------------------------------------------------

def test_command_line_limit(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    # 512 octets with the CRLF is the limit and is accepted.
    expect(c.cmd("NOOP " + "x" * (512 - 2 - 5)), 250, "2.0.0")
    expect(c.cmd("NOOP " + "x" * (513 - 2 - 5)), 500, "5.5.2")
    expect(c.cmd("NOOP " + "x" * 5000), 500, "5.5.2")
    # The session goes on, and the tail of the long line was not read as a command.
    expect(c.cmd("NOOP"), 250, "2.0.0")
    start_tx(c)


def test_command_line_limit_in_pieces(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    # An over-long line that arrives in pieces is refused once, and its tail is skipped.
    c.send("MAIL FROM:<" + "a" * 700)
    expect(c.reply(), 500, "5.5.2")
    time.sleep(0.05)
    c.send("b" * 700 + "@ext.test>\r\n")
    expect(c.cmd("NOOP"), 250, "2.0.0")
    expect(c.cmd("RCPT TO:<u@local.test>"), 503, "5.5.1")   # the MAIL was never taken


def test_text_line_limit(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c)
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: long\r\n\r\n" + b"x" * 999 + b"\r\n.\r\n")   # 1001 octets with CRLF
    expect(c.reply(), 550, "5.5.2")
    assert queued_ids(redis_server.client) == []
    # The session can send another message; a line of exactly 1000 octets is fine.
    start_tx(c)
    expect(c.cmd("DATA"), 354)
    ok = b"Subject: ok\r\n\r\n" + b"y" * 998 + b"\r\n"
    c.send(ok + b".\r\n")
    qid = queued_id(c.reply())
    _, body, _ = message(redis_server.client, qid)
    assert split_received(body)[1] == ok
    assert queued_ids(redis_server.client) == [qid]


def test_text_line_limit_in_bdat(edge, connect, redis_server):
    c = connect(edge.port)
    ehlo(c)
    start_tx(c)
    content = b"Subject: long\r\n\r\n" + b"x" * 999 + b"\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(content) + content)
    expect(c.reply(), 550, "5.5.2")
    assert queued_ids(redis_server.client) == []


# ---- address lengths -----------------------------------------------------------------------

def test_local_part_limit(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    expect(c.cmd(f"MAIL FROM:<{'a' * 65}@ext.test>"), 501, "5.1.7", "local part too long")
    expect(c.cmd(f"MAIL FROM:<{'a' * 64}@ext.test>"), 250, "2.1.0")
    expect(c.cmd(f"RCPT TO:<{'b' * 65}@local.test>"), 501, "5.1.3", "local part too long")
    expect(c.cmd(f"RCPT TO:<{'b' * 64}@local.test>"), 250, "2.1.5")


def test_domain_limit(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    d256 = long_domain(256)
    expect(c.cmd(f"MAIL FROM:<a@{d256}>"), 501, "5.1.7", "domain too long")
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 250, "2.1.0")
    expect(c.cmd(f"RCPT TO:<a@{long_domain(256, 'local.test')}>"), 501, "5.1.3",
           "domain too long")


def test_path_limit(edge, connect):
    c = connect(edge.port)
    ehlo(c)
    # <64 @ 190> is 257 octets with the brackets; <64 @ 189> is 256.
    expect(c.cmd(f"MAIL FROM:<{'a' * 64}@{long_domain(190)}>"), 501, "5.1.7", "too long")
    expect(c.cmd(f"MAIL FROM:<{'a' * 64}@{long_domain(189)}>"), 250, "2.1.0")
    expect(c.cmd(f"RCPT TO:<{'b' * 64}@{long_domain(190, 'local.test')}>"), 501, "5.1.3",
           "too long")


# ---- per message and per session ------------------------------------------------------------

def test_max_recipients(edge_factory, connect, redis_server):
    m = edge_factory({"edge.max_recipients": "3"})
    c = connect(m.port)
    ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 250, "2.1.0")
    c.send("".join(f"RCPT TO:<r{i}@local.test>\r\n" for i in range(5)))
    r = replies(c, 5)
    for x in r[:3]:
        expect(x, 250, "2.1.5")
    expect(r[3], 452, "4.5.3")
    expect(r[4], 452, "4.5.3")
    expect(c.cmd("DATA"), 354)
    c.send("Subject: many\r\n\r\nx\r\n.\r\n")
    qid = queued_id(c.reply())
    env, _, rcpts = message(redis_server.client, qid)
    assert [x["to"] for x in rcpts] == ["r0@local.test", "r1@local.test", "r2@local.test"]
    assert env["nrcpt"] == "3"
    assert redis_server.client.zcard("mxg:due") == 3


def test_size_limit_in_data(edge_factory, connect, redis_server):
    m = edge_factory({"edge.message_size_limit": "1k"})
    c = connect(m.port)
    ehlo(c)
    start_tx(c)
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: big\r\n\r\n" + b"0123456789abcdef" * 8 * 20 + b"\r\n.\r\n")   # ~2.6k
    expect(c.reply(), 552, "5.3.4")
    assert queued_ids(redis_server.client) == []
    # The session goes on and takes a message within the limit.
    start_tx(c, rcpts=["v@local.test"])
    expect(c.cmd("DATA"), 354)
    small = b"Subject: small\r\n\r\n" + b"z" * 900 + b"\r\n"
    c.send(small + b".\r\n")
    qid = queued_id(c.reply())
    _, body, rcpts = message(redis_server.client, qid)
    assert split_received(body)[1] == small
    assert [x["to"] for x in rcpts] == ["v@local.test"]
    assert queued_ids(redis_server.client) == [qid]


def test_size_limit_in_bdat(edge_factory, connect, redis_server):
    m = edge_factory({"edge.message_size_limit": "1k"})
    c = connect(m.port)
    ehlo(c)
    start_tx(c)
    big = b"x" * 600 + b"\r\n"
    c.send(b"BDAT %d\r\n" % len(big) + big)
    expect(c.reply(), 250, "2.0.0")
    c.send(b"BDAT %d LAST\r\n" % len(big) + big)
    expect(c.reply(), 552, "5.3.4")
    assert queued_ids(redis_server.client) == []
    # A non-LAST chunk over the limit ends the transaction at once (RFC 3030 section 2).
    start_tx(c)
    huge = b"y" * 2000 + b"\r\n"
    c.send(b"BDAT %d\r\n" % len(huge) + huge)
    expect(c.reply(), 552, "5.3.4")
    c.send(b"BDAT 3 LAST\r\nabc")
    expect(c.reply(), 503, "5.5.1")
    assert queued_ids(redis_server.client) == []
    # And a new transaction in the same session works.
    start_tx(c)
    ok = b"Subject: ok\r\n\r\nfine\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(ok) + ok)
    qid = queued_id(c.reply())
    _, body, _ = message(redis_server.client, qid)
    assert split_received(body)[1] == ok
    assert queued_ids(redis_server.client) == [qid]


def test_max_messages_per_session(edge_factory, connect, redis_server):
    m = edge_factory({"edge.max_messages": "2"})
    c = connect(m.port)
    ehlo(c)
    ids = []
    for i in range(2):
        start_tx(c)
        expect(c.cmd("DATA"), 354)
        c.send(f"Subject: {i}\r\n\r\nx\r\n.\r\n")
        ids.append(queued_id(c.reply()))
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 421, "4.7.0")
    assert c.closed()
    assert queued_ids(redis_server.client) == sorted(ids)


# ---- connections ---------------------------------------------------------------------------

def test_max_connections(edge_factory, connect):
    m = edge_factory({"edge.max_connections": "3", "edge.max_connections_per_ip": "0"})

    def greeted():
        c = connect(m.port)
        return c if c.greeting[0] == 220 else None
    # The start-up check's connection may not have been seen to close yet: it holds a slot
    # until it is.
    held = [wait_for(greeted, timeout=5, what="a connection slot") for _ in range(3)]
    extra = connect(m.port)
    expect(extra.greeting, 421, "4.3.2")
    assert extra.closed()
    # A slot that frees up can be used again.
    expect(held[0].cmd("QUIT"), 221, "2.0.0")
    assert held[0].closed()
    c = wait_for(greeted, timeout=5, what="a free connection slot")
    ehlo(c)


def test_max_connections_per_ip(edge_factory, connect):
    m = edge_factory({"edge.max_connections_per_ip": "2"})

    def greeted():
        c = connect(m.port)
        return c if c.greeting[0] == 220 else None
    a = connect(m.port)
    assert a.greeting[0] == 220
    # The start-up check's connection may not have been seen to close yet.
    b = wait_for(greeted, timeout=5, what="a second per-IP slot")
    third = connect(m.port)
    expect(third.greeting, 421, "4.7.0")
    assert third.closed()
    # The submission listener counts the same client too.
    fourth = connect(m.sub_port)
    expect(fourth.greeting, 421, "4.7.0")
    b.close()
    wait_for(greeted, timeout=5, what="a free per-IP slot")


def test_idle_timeout(edge_factory, connect):
    m = edge_factory({"edge.idle_timeout": "1s"})
    c = connect(m.port)
    ehlo(c)
    t0 = time.monotonic()
    expect(c.reply(), 421, "4.4.2")
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed < 3, elapsed
    assert c.closed()


def test_idle_timeout_in_data(edge_factory, connect, redis_server):
    m = edge_factory({"edge.idle_timeout": "1s"})
    c = connect(m.port)
    ehlo(c)
    start_tx(c)
    expect(c.cmd("DATA"), 354)
    c.send("Subject: stalled\r\n\r\npart")
    expect(c.reply(), 421, "4.4.2")
    assert c.closed()
    assert queued_ids(redis_server.client) == []


def test_min_data_rate(edge_factory, connect, redis_server):
    m = edge_factory({"edge.idle_timeout": "1s", "edge.min_data_rate": "1k"})
    c = connect(m.port)
    ehlo(c)
    start_tx(c)
    expect(c.cmd("DATA"), 354)
    t0 = time.monotonic()
    got = None
    while time.monotonic() - t0 < 6:
        try:
            c.send(b"x")
        except OSError:
            break
        r, _, _ = select.select([c.sock], [], [], 0.3)
        if r:
            got = c.reply()
            break
    assert got is not None, "no reply to a trickle"
    expect(got, 421, "4.4.2", "data rate")
    assert time.monotonic() - t0 < 4
    assert c.closed()
    assert queued_ids(redis_server.client) == []


def test_fair_rate_is_not_cut(edge_factory, connect, redis_server):
    m = edge_factory({"edge.idle_timeout": "1s", "edge.min_data_rate": "1k"})
    c = connect(m.port)
    ehlo(c)
    start_tx(c)
    expect(c.cmd("DATA"), 354)
    # About 4 kB/s for 1.5 s: slower than the idle timeout alone, faster than the minimum rate.
    for _ in range(6):
        c.send(b"y" * 998 + b"\r\n")
        time.sleep(0.25)
    c.send(b".\r\n")
    qid = queued_id(c.reply())
    assert queued_ids(redis_server.client) == [qid]


# ---- the error counter ---------------------------------------------------------------------

def timed(c, line):
    t0 = time.monotonic()
    r = c.cmd(line)
    return r, time.monotonic() - t0


def test_error_tarpit_then_drop(edge_factory, connect):
    m = edge_factory({"edge.soft_error_limit": "2", "edge.hard_error_limit": "4",
                      "edge.error_sleep": "300ms"})
    c = connect(m.port)
    ehlo(c)
    for _ in range(2):
        r, dt = timed(c, "BOGUS")
        expect(r, 502, "5.5.2")
        assert dt < 0.25, dt
    # A good command is answered at once even now.
    r, dt = timed(c, "NOOP")
    expect(r, 250, "2.0.0")
    assert dt < 0.25, dt
    r, dt = timed(c, "BOGUS")      # the 3rd error: past the soft limit, delayed
    expect(r, 502, "5.5.2")
    assert dt >= 0.25, dt
    c.send("BOGUS\r\n")            # the 4th: the hard limit
    expect(c.reply(), 502, "5.5.2")
    expect(c.reply(), 421, "4.7.0")
    assert c.closed()


def test_error_tarpit_holds_pipelined_commands(edge_factory, connect):
    m = edge_factory({"edge.soft_error_limit": "1", "edge.hard_error_limit": "10",
                      "edge.error_sleep": "300ms"})
    c = connect(m.port)
    ehlo(c)
    expect(c.cmd("BOGUS"), 502, "5.5.2")
    t0 = time.monotonic()
    c.send("MAIL FROM:<bad\r\nMAIL FROM:<a@ext.test>\r\n")
    r = replies(c, 2)
    expect(r[0], 501, "5.1.7")
    expect(r[1], 250, "2.1.0")
    assert time.monotonic() - t0 >= 0.25
