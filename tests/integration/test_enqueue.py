"""Durable enqueue: what a 250 promises, and that nothing else gets one."""
import os
import signal
import subprocess
import time

import redis as redislib

import mxtest
from mxtest import SMTP, message, queued_ids, send_message, split_received

CONTENT = (b"From: Alice <alice@src.test>\r\n"
           b"To: Bob <bob@local.test>\r\n"
           b"Subject: byte for byte\r\n"
           b"\r\n"
           b"line one\r\n"
           b"..a dot-stuffed line\r\n"
           b"\xc3\xa9t\xc3\xa9 8bit\r\n"
           b"\ttab and trailing space \r\n")


def test_swaks_message_sits_in_redis_byte_for_byte(edge, redis_server, tmp_path):
    data = tmp_path / "msg.eml"
    data.write_bytes(CONTENT)
    out = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{edge.port}", "--from", "alice@src.test",
         "--to", "bob@local.test,carol@local.test", "--helo", "client.test",
         "--data", str(data)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "250 2.0.0 Ok: queued as " in out.stdout
    qid = out.stdout.split("queued as ")[1].split()[0]

    assert queued_ids(redis_server.client) == [qid]
    env, body, rcpts = message(redis_server.client, qid)
    assert env["sender"] == "alice@src.test"
    assert env["client_ip"] == "127.0.0.1"
    assert env["client_helo"] == "client.test"
    assert env["listener"] == "mx"
    assert env["nrcpt"] == "2"
    assert [r["to"] for r in rcpts] == ["bob@local.test", "carol@local.test"]
    assert all(r["state"] == "pending" and r["attempts"] == 0 for r in rcpts)

    received, rest = split_received(body)
    # swaks dot-stuffs on the way out and ends the data with one more CRLF before the dot;
    # the queue holds the content exactly as written, unstuffed.
    assert rest == CONTENT + b"\r\n"
    assert f"id {qid}".encode() in received
    assert int(env["size"]) == len(body)

    due = redis_server.client.zrange("mxg:due", 0, -1, withscores=True)
    assert sorted(m.decode() for m, _ in due) == [f"{qid}/0", f"{qid}/1"]
    assert all(score == int(env["received_ms"]) for _, score in due)


def test_reply_250_only_after_redis_acknowledged(edge, redis_server):
    """The queued id in the 250 is in Redis by the time the client reads it."""
    for i in range(20):
        code, lines = send_message(edge.port, "a@src.test", ["bob@local.test"],
                                   b"Subject: %d\r\n\r\nx\r\n.\r\n" % i)
        assert code == 250
        qid = lines[0].split()[-1]
        assert redis_server.client.exists(f"mxg:msg:{{{qid}}}", f"mxg:body:{{{qid}}}",
                                          f"mxg:rcpt:{{{qid}}}") == 3
        assert redis_server.client.zscore("mxg:due", f"{qid}/0") is not None


def test_kill9_edge_then_redis_after_250_loses_nothing(edge, redis_server):
    sent = []
    for i in range(10):
        code, lines = send_message(edge.port, "a@src.test", ["bob@local.test"],
                                   b"Subject: crash %d\r\n\r\nbody %d\r\n.\r\n" % (i, i))
        assert code == 250
        sent.append((lines[0].split()[-1], b"body %d\r\n" % i))
    edge.kill9()
    redis_server.kill9()
    redis_server.start()        # same directory: the AOF is replayed
    assert queued_ids(redis_server.client) == sorted(q for q, _ in sent)
    for qid, tail in sent:
        _, body, rcpts = message(redis_server.client, qid)
        assert body.endswith(tail)
        assert rcpts[0]["to"] == "bob@local.test"


def _transaction(port):
    c = SMTP(port)
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<a@src.test>")[0] == 250
    assert c.cmd("RCPT TO:<bob@local.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    return c


def test_redis_stopped_gives_451_never_250(edge, redis_server):
    redis_server.stop()
    c = _transaction(edge.port)
    c.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
    code, lines = c.reply()
    assert (code, lines[0].split()[0]) == (451, "4.3.0")
    # The session goes on; the next try is refused the same way.
    assert c.cmd("MAIL FROM:<a@src.test>")[0] == 250
    c.close()
    redis_server.start()
    # Reconnected: accepted again.
    deadline = time.monotonic() + 15
    while True:
        code, _ = send_message(edge.port, "a@src.test", ["bob@local.test"], b"x\r\n.\r\n")
        if code == 250 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert code == 250
    assert len(queued_ids(redis_server.client)) == 1


def test_redis_dies_during_data_gives_451(edge, redis_server):
    c = _transaction(edge.port)
    c.send(b"Subject: x\r\n\r\nfirst half\r\n")
    redis_server.kill9()
    c.send(b"second half\r\n.\r\n")
    code, lines = c.reply()
    assert code == 451 and lines[0].startswith("4.3.0")
    c.close()


def test_redis_read_only_gives_451(edge, redis_server):
    redis_server.client.execute_command("REPLICAOF", "127.0.0.1", "1")
    try:
        c = _transaction(edge.port)
        c.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
        code, lines = c.reply()
        assert code == 451 and lines[0].startswith("4.3.0")
        c.close()
    finally:
        redis_server.client.execute_command("REPLICAOF", "NO", "ONE")
    assert queued_ids(redis_server.client) == []
    assert "READONLY" in edge.read_log()


def test_redis_out_of_memory_gives_451(edge, redis_server):
    redis_server.client.config_set("maxmemory", "1")
    try:
        c = _transaction(edge.port)
        c.send(b"Subject: x\r\n\r\n" + (b"y" * 900 + b"\r\n") * 6 + b".\r\n")
        code, lines = c.reply()
        assert code == 451 and lines[0].startswith("4.3.0")
        c.close()
    finally:
        redis_server.client.config_set("maxmemory", "0")
    assert queued_ids(redis_server.client) == []
    assert "OOM" in edge.read_log()


def test_redis_hung_gives_451_within_timeout(edge_factory, redis_server):
    edge = edge_factory({"redis.timeout": "1s"})
    c = _transaction(edge.port)
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        c.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
        code, lines = c.reply()
        waited = time.monotonic() - t0
        assert code == 451 and lines[0].startswith("4.3.0")
        assert waited < 5, waited
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    c.close()
    # An enqueue that timed out may still have been applied by Redis later: that is a message
    # the client will send again (delivered twice at worst), never one that is lost.
    assert len(queued_ids(redis_server.client)) <= 1


def test_client_gone_before_reply_still_consistent(edge, redis_server):
    """A client that hangs up right after the final dot: the message is whole or absent."""
    c = _transaction(edge.port)
    c.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
    c.close()
    mxtest.wait_for(lambda: edge.events("queued") or edge.events("enqueue-failed"),
                    what="enqueue outcome")
    for qid in queued_ids(redis_server.client):
        assert redis_server.client.exists(f"mxg:body:{{{qid}}}", f"mxg:rcpt:{{{qid}}}") == 2


def test_external_redis_without_fsync_always_is_warned(tmp_path, edge_factory, redis_server):
    redis_server.client.config_set("appendfsync", "everysec")
    edge = edge_factory(name="edge-warn")
    mxtest.wait_for(lambda: edge.events("redis-not-durable"), what="durability warning")
    rec = edge.events("redis-not-durable")[0]
    assert "appendfsync=everysec" in rec["msg"]
