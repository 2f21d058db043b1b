"""Listeners: several per process, IPv4 and IPv6."""
import socket

import pytest

import mxtest
from mxtest import message, split_received


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv4_and_ipv6_listeners_in_one_process(edge_factory, redis_server):
    p4, p6 = mxtest.free_port(), mxtest.free_port()
    edge = edge_factory({"edge.listen": f"127.0.0.1:{p4}, [::1]:{p6}"})
    listening = {e["address"] for e in edge.events("listening")}
    assert f"127.0.0.1:{p4}" in listening and f"[::1]:{p6}" in listening

    c = socket.create_connection(("::1", p6), timeout=10)
    f = c.makefile("rwb")

    def cmd(line):
        if line is not None:
            f.write(line.encode() + b"\r\n")
            f.flush()
        while True:
            reply = f.readline().decode()
            if reply[3] != "-":
                return int(reply[:3]), reply[4:].strip()

    assert cmd(None)[0] == 220
    assert cmd("EHLO v6.client.test")[0] == 250
    assert cmd("MAIL FROM:<a@src.test>")[0] == 250
    assert cmd("RCPT TO:<bob@local.test>")[0] == 250
    assert cmd("DATA")[0] == 354
    code, text = cmd("Subject: v6\r\n\r\nover IPv6\r\n.")
    assert code == 250
    c.close()
    qid = text.split()[-1]
    env, body, _ = message(redis_server.client, qid)
    assert env["client_ip"] == "::1"
    received, _ = split_received(body)
    assert received.startswith(b"Received: from v6.client.test ([IPv6:::1])\r\n")
