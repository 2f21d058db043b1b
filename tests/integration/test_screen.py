"""Screening at connect on the MX listener: allow and deny lists, the per-IP connection rate, the
pregreet test, weighted DNSBL/DNSWL scores from a real dnsmasq, and the pass remembered in Redis.
Clients connect from different loopback addresses (127.0.0.x) to be different clients."""
import socket
import time

import pytest

import mxtest
from mxtest import Dnsmasq, expect


class Client(mxtest.SMTP):
    """A raw SMTP client connecting from a chosen loopback address."""

    def __init__(self, port, source="127.0.0.1", read_greeting=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
        self.buf = b""
        self.greeting = self.reply() if read_greeting else None


SCREEN = {"edge.trusted_networks": "", "screen.greet_wait": "1s"}


@pytest.fixture
def screened(edge_factory):
    started = []

    def make(extra=None):
        started.append(edge_factory({**SCREEN, **(extra or {})}, name=f"edge{len(started)}"))
        return started[-1]
    return make


def verdicts(edge, name=None):
    return [e for e in edge.events("screen") if name is None or e["verdict"] == name]


def test_a_client_that_talks_first_is_refused(screened):
    edge = screened()
    c = Client(edge.port, read_greeting=False)
    assert c._line() == "220-mx.test ESMTP mxgate"     # the bait: a greeting that is not over
    c.send("EHLO bot.test\r\n")
    expect(c.reply(), 554, "5.5.1", "talked before the greeting")
    assert c.closed()
    mxtest.wait_for(lambda: verdicts(edge, "pregreet"), what="pregreet logged")
    assert verdicts(edge, "pregreet")[0]["detail"] == "EHLO bot.test\\x0d\\x0a"


def test_a_patient_client_is_greeted_after_the_wait_and_remembered(screened, redis_server):
    edge = screened({"screen.pass_ttl": "1h"})
    t0 = time.monotonic()
    c = Client(edge.port, source="127.0.0.2")
    assert time.monotonic() - t0 >= 0.95
    assert c.greeting == (220, ["mx.test ESMTP mxgate", "mx.test ESMTP mxgate"])
    expect(c.cmd("EHLO ok.test"), 250)
    c.close()
    r = redis_server.client
    mxtest.wait_for(lambda: r.get("mxg:screen:127.0.0.2") == b"1", what="pass remembered")
    assert 3590 <= r.ttl("mxg:screen:127.0.0.2") <= 3600
    # The next connection skips the tests: a plain greeting, at once.
    t0 = time.monotonic()
    c = Client(edge.port, source="127.0.0.2")
    assert time.monotonic() - t0 < 0.9
    assert c.greeting == (220, ["mx.test ESMTP mxgate"])
    c.close()
    assert [v["verdict"] for v in verdicts(edge)] == ["pass", "cached"]


def test_pregreet_action_ignore_only_logs(screened, redis_server):
    edge = screened({"screen.pregreet_action": "ignore"})
    c = Client(edge.port, source="127.0.0.3", read_greeting=False)
    c.send("EHLO early.test\r\n")
    # The client still gets the whole greeting, then the answer to what it sent early.
    assert c.reply() == (220, ["mx.test ESMTP mxgate", "mx.test ESMTP mxgate"])
    expect(c.reply(), 250)
    c.close()
    assert verdicts(edge, "pregreet")
    assert redis_server.client.get("mxg:screen:127.0.0.3") is None     # a failed test is not a pass


def test_deny_allow_and_trusted(screened):
    edge = screened({"screen.deny": "127.0.0.4/32, 127.0.1.0/24", "screen.allow": "127.0.0.5/32",
                     "screen.greet_wait": "5s", "edge.trusted_networks": "127.0.0.6/32"})
    c = Client(edge.port, source="127.0.1.9", read_greeting=False)
    expect(c.reply(), 554, "5.7.1", "client address refused")
    assert c.closed()
    for source in ("127.0.0.5", "127.0.0.6"):      # allowed, trusted: no wait
        t0 = time.monotonic()
        c = Client(edge.port, source=source)
        assert time.monotonic() - t0 < 2
        assert c.greeting == (220, ["mx.test ESMTP mxgate"])
        c.close()
    assert [v["verdict"] for v in verdicts(edge)] == ["denied", "allowed"]


def test_submission_is_not_screened(screened):
    edge = screened({"screen.deny": "127.0.0.0/8"})
    c = Client(edge.sub_port)
    assert c.greeting[0] == 220
    c.close()


def test_connection_rate_limit_per_ip(screened):
    edge = screened({"screen.connection_rate_limit": "3", "screen.greet_wait": "0s"})
    for _ in range(3):
        c = Client(edge.port, source="127.0.0.7")
        assert c.greeting[0] == 220
        c.close()
    c = Client(edge.port, source="127.0.0.7", read_greeting=False)
    expect(c.reply(), 421, "4.7.0", "too many connections")
    assert c.closed()
    c = Client(edge.port, source="127.0.0.8")         # another client is not counted with it
    assert c.greeting[0] == 220
    c.close()


@pytest.fixture
def lists(tmp_path):
    """Answers for clients 127.0.0.20-24 on bl.test, bl2.test and wl.test; slow.test never answers."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    dns = Dnsmasq(tmp_path, [
        "--host-record=20.0.0.127.bl.test,127.0.0.2",           # .20: listed on bl (2)
        "--host-record=20.0.0.127.bl2.test,127.0.0.4",          #      and on bl2 (1): score 3
        "--host-record=21.0.0.127.bl.test,127.0.0.2",           # .21: listed (2) but allowlisted (-5)
        "--host-record=21.0.0.127.wl.test,127.0.10.1",
        "--host-record=22.0.0.127.bl.test,127.255.255.254",     # .22: an error answer, not a listing
        "--host-record=23.0.0.127.bl2.test,127.0.0.9",          # .23: bl2 answer outside its filter
        f"--server=/slow.test/127.0.0.1#{silent.getsockname()[1]}",
    ])
    yield dns
    dns.stop()
    silent.close()


def dnsbl_edge(screened, dns, **extra):
    return screened({"dns.servers": f"127.0.0.1:{dns.port}", "screen.dnsbl_threshold": "2",
                     "screen.dnsbl_sites": "bl.test*2, bl2.test=127.0.0.[2..4], wl.test=127.0.[0..255].[1..3]*-5",
                     "screen.dnswl_threshold": "-1", "screen.pass_ttl": "1h", **extra})


def test_dnsbl_score_over_the_threshold_is_refused(screened, lists):
    edge = dnsbl_edge(screened, lists)
    c = Client(edge.port, source="127.0.0.20", read_greeting=False)
    assert c._line() == "220-mx.test ESMTP mxgate"
    expect(c.reply(), 554, "5.7.1", "client [127.0.0.20] blocked using DNSBL")
    assert c.closed()
    [v] = verdicts(edge, "dnsbl")
    assert v["score"] == 3 and v["listed"] == "bl.test=127.0.0.2*2 bl2.test=127.0.0.4*1"


def test_dnswl_passes_at_once(screened, lists, redis_server):
    edge = dnsbl_edge(screened, lists, **{"screen.greet_wait": "5s"})
    t0 = time.monotonic()
    c = Client(edge.port, source="127.0.0.21")
    assert time.monotonic() - t0 < 3            # not the whole greet wait
    assert c.greeting == (220, ["mx.test ESMTP mxgate", "mx.test ESMTP mxgate"])
    c.close()
    [v] = verdicts(edge, "dnswl")
    assert v["score"] == -3
    # The pass is written without waiting for Redis's answer.
    mxtest.wait_for(lambda: redis_server.client.get("mxg:screen:127.0.0.21") == b"1", what="pass remembered")


def test_error_answers_are_not_listings_and_not_remembered(screened, lists, redis_server):
    edge = dnsbl_edge(screened, lists)
    for source in ("127.0.0.22", "127.0.0.23"):
        c = Client(edge.port, source=source)
        assert c.greeting[0] == 220
        c.close()
    mxtest.wait_for(lambda: len(verdicts(edge, "pass")) == 2, what="two passes")
    error, outside = verdicts(edge, "pass")
    assert error["score"] == 0 and error["dns_errors"] == 1
    assert outside["score"] == 0 and "listed" not in outside
    r = redis_server.client
    mxtest.wait_for(lambda: r.get("mxg:screen:127.0.0.23") == b"1", what="pass remembered")
    assert r.get("mxg:screen:127.0.0.22") is None       # checked again next time


def test_a_list_that_never_answers_holds_no_client_past_the_wait(screened, lists):
    edge = screened({"dns.servers": f"127.0.0.1:{lists.port}", "dns.timeout": "20s",
                     "screen.dnsbl_sites": "slow.test*5, bl.test*2", "screen.dnsbl_threshold": "2"})
    t0 = time.monotonic()
    c = Client(edge.port, source="127.0.0.24")
    assert time.monotonic() - t0 < 3
    assert c.greeting[0] == 220
    c.close()
    # A listed client is still refused while the slow list has not answered.
    c = Client(edge.port, source="127.0.0.20", read_greeting=False)
    c._line()
    expect(c.reply(), 554, "5.7.1")
    [v] = verdicts(edge, "pass")
    assert v["dns_errors"] == 1


def test_bad_screen_settings_are_named(tmp_path):
    import subprocess
    for key, value, error in [
        ("screen.dnsbl_sites", "bl.test=127.0.0.256", "screen.dnsbl_sites: entry 'bl.test=127.0.0.256'"),
        ("screen.deny", "10.0.0.0/33", "screen.deny: bad network '10.0.0.0/33'"),
        ("screen.pregreet_action", "maybe", "screen.pregreet_action"),
    ]:
        r = subprocess.run([mxtest.BIN, "-o", f"{key}={value}", "config", "check"], capture_output=True, text=True)
        assert r.returncode != 0 and error in r.stderr, r.stderr
