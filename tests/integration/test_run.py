"""`mxgate run`: the appliance with its private Redis, restarts, and a clean stop."""
import os
import signal
import subprocess
import time

import redis as redislib

import mxtest
from mxtest import message, queued_ids, send_message


def children_of(pid):
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return {int(p): c for p, c in (line.split(None, 1) for line in out.split("\n") if line.strip())}


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def start_run(tmp_path, overrides=None):
    m = mxtest.Mxgate(tmp_path / "run", None, overrides, command="run")
    sock = os.path.join(m.overrides["state_dir"], "redis.sock")
    return m, sock


def test_run_starts_private_durable_redis_and_accepts_mail(tmp_path):
    m, sock = start_run(tmp_path)
    try:
        r = redislib.Redis(unix_socket_path=sock)
        assert r.config_get("appendonly")["appendonly"] == "yes"
        assert r.config_get("appendfsync")["appendfsync"] == "always"
        assert r.config_get("no-appendfsync-on-rewrite")["no-appendfsync-on-rewrite"] == "no"
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"

        code, lines = send_message(m.port, "a@src.test", ["bob@example.test"],
                                   b"Subject: run\r\n\r\nhello\r\n.\r\n")
        assert code == 250
        qid = lines[0].split()[-1]
        # The relay routes it to the local stage, the bridge into bob's Maildir.
        state = m.overrides["state_dir"]
        new = os.path.join(state, "mailboxes", "bob", "Maildir", "new")
        mxtest.wait_for(lambda: os.path.isdir(new) and os.listdir(new), what="delivery to the Maildir")
        data = open(os.path.join(new, os.listdir(new)[0]), "rb").read()
        assert data.endswith(b"hello\n") and f"id {qid}".encode() in data
        mxtest.wait_for(lambda: queued_ids(r) == [], what="message removed from the queue")

        # It says where everything listens.
        out = m.read_log()
        assert f"SMTP (MX)         127.0.0.1:{m.port}" in out
        assert f"submission        127.0.0.1:{m.sub_port}" in out
        assert f"unix:{os.path.realpath(sock)}" in out

        # The embedded default offers STARTTLS with a self-signed certificate.
        c = mxtest.SMTP(m.sub_port)
        _, ehlo = c.cmd("EHLO client.test")
        assert "STARTTLS" in ehlo
        c.starttls()
        assert c.cmd("EHLO client.test")[0] == 250
        c.close()
    finally:
        pid = m.proc.pid
        kids = children_of(pid)
        assert m.stop() == 0
        for k in kids:
            assert not alive(k), f"child {kids[k]} ({k}) outlived mxgate run"


def test_run_restarts_a_crashed_role(tmp_path):
    m, sock = start_run(tmp_path)
    try:
        kids = children_of(m.proc.pid)
        edge_pid = [p for p, c in kids.items() if c.strip() == "mxgate"][0]
        os.kill(edge_pid, signal.SIGKILL)
        mxtest.wait_for(lambda: any(c.strip() == "mxgate" and p != edge_pid
                                    for p, c in children_of(m.proc.pid).items()),
                        timeout=10, what="edge restarted")
        mxtest.wait_for(lambda: mxtest.port_open(m.port), what="edge listening again")
        code, _ = send_message(m.port, "a@src.test", ["bob@example.test"], b"x\r\n.\r\n")
        assert code == 250
        assert "role-died" in m.read_log()
    finally:
        assert m.stop() == 0


def test_run_keeps_the_queue_across_restarts(tmp_path):
    # Remote mail through a smarthost that is not there: the message stays queued, deferred.
    m, sock = start_run(tmp_path, {"edge.trusted_networks": "127.0.0.0/8",
                                   "relay.smarthost": f"127.0.0.1:{mxtest.free_port()}"})
    code, lines = send_message(m.port, "a@src.test", ["bob@remote.test"], b"keep me\r\n.\r\n")
    assert code == 250
    qid = lines[0].split()[-1]
    assert m.stop() == 0
    m.start()
    try:
        r = redislib.Redis(unix_socket_path=sock)
        assert queued_ids(r) == [qid]
    finally:
        m.stop()


def test_second_run_on_same_state_dir_is_refused(tmp_path):
    m, sock = start_run(tmp_path)
    try:
        r = subprocess.run(m.argv(), capture_output=True, text=True, timeout=30)
        assert r.returncode == 1
        assert "is in use by another mxgate run" in r.stderr
    finally:
        m.stop()
