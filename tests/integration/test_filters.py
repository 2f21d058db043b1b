"""Sender authentication in the edge against a real dnsmasq: SPF at MAIL FROM (reject or mark),
DKIM verification of what arrives, one Authentication-Results header, forged ones removed, and
DKIM signing of mail from trusted senders, checked by python3-dkim."""
import base64
import subprocess

import pytest

import mxtest
from mxtest import Dnsmasq, expect, message, queued_id, split_received


def dkim_key(dir, name):
    """(private key PEM bytes, DNS record strings) for a new RSA key."""
    pem = str(dir / f"{name}.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem],
                   check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", pem, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    p = base64.b64encode(der).decode()
    record = "v=DKIM1; k=rsa; p=" + p
    return pem, open(pem, "rb").read(), record


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("filters")
    pem, key, record = dkim_key(d, "sel")
    dns = Dnsmasq(d, [
        "--txt-record=src.test,v=spf1 ip4:127.0.0.1 -all",
        "--txt-record=bad.test,v=spf1 ip4:192.0.2.1 -all",
        "--txt-record=soft.test,v=spf1 ip4:192.0.2.1 ~all",
        "--txt-record=expl.test,v=spf1 -all exp=why.expl.test",
        "--txt-record=why.expl.test,not from %{i}",
        mxtest.txt_record("sel._domainkey.src.test", record),
    ])
    yield {"dns": dns, "pem": pem, "key": key, "record": record}
    dns.stop()


def edge_with(edge_factory, world, **extra):
    return edge_factory({"dns.servers": f"127.0.0.1:{world['dns'].port}", "filters.spf": "reject",
                         "filters.dkim_verify": "yes", "filters.authserv_id": "mx.test", **extra})


def send(port, sender, content, rcpt="bob@local.test"):
    """(reply to MAIL if refused, else the final reply after DATA)."""
    return mxtest.send_message(port, sender, [rcpt], content + b".\r\n", mail_refusable=True)


def stored(redis_server, reply):
    """The stored message after our Received header."""
    body = message(redis_server.client, queued_id(reply))[1]
    return split_received(body)[1]


PLAIN = b"From: <a@src.test>\r\nTo: <bob@local.test>\r\nSubject: hi\r\n\r\nhello\r\n"


def test_spf_pass_is_reported(edge_factory, world, redis_server):
    edge = edge_with(edge_factory, world)
    rest = stored(redis_server, send(edge.port, "a@src.test", PLAIN))
    assert rest == b"Authentication-Results: mx.test; spf=pass smtp.mailfrom=src.test; dkim=none\r\n" + PLAIN


def test_spf_fail_is_rejected_at_mail_from(edge_factory, world):
    edge = edge_with(edge_factory, world)
    expect(send(edge.port, "a@bad.test", PLAIN), 550, "5.7.23", "SPF validation failed")
    lines = expect(send(edge.port, "a@expl.test", PLAIN), 550, "5.7.23")
    assert "not from 127.0.0.1" in lines[-1]
    [ev] = [e for e in edge.events("spf") if e["domain"] == "bad.test"]
    assert ev["mailfrom"] == "fail"


def test_spf_mark_only_reports(edge_factory, world, redis_server):
    edge = edge_with(edge_factory, world, **{"filters.spf": "mark"})
    rest = stored(redis_server, send(edge.port, "a@bad.test", PLAIN.replace(b"src.test", b"bad.test")))
    assert rest.startswith(b"Authentication-Results: mx.test; spf=fail smtp.mailfrom=bad.test;")
    rest = stored(redis_server, send(edge.port, "a@soft.test", PLAIN))
    assert rest.startswith(b"Authentication-Results: mx.test; spf=softfail smtp.mailfrom=soft.test;")


def dkim_sign(world, msg, selector=b"sel", domain=b"src.test"):
    code = ("import dkim, sys\n"
            "msg = sys.stdin.buffer.read()\n"
            f"key = open({world['pem']!r}, 'rb').read()\n"
            f"sys.stdout.buffer.write(dkim.sign(msg, {selector!r}, {domain!r}, key,"
            " canonicalize=(b'relaxed', b'relaxed'), include_headers=[b'from', b'to', b'subject']))\n")
    sig = subprocess.run(["/usr/bin/python3", "-c", code], input=msg, check=True, capture_output=True).stdout
    return sig + msg


def auth_results(rest):
    """The value of the first Authentication-Results field, unfolded."""
    assert rest.startswith(b"Authentication-Results: ")
    end = rest.index(b"\r\n", 0)
    while rest[end + 2:end + 3] in (b"\t", b" "):
        end = rest.index(b"\r\n", end + 2)
    return rest[len(b"Authentication-Results: "):end].replace(b"\r\n", b"").decode()


def test_dkim_pass_and_fail(edge_factory, world, redis_server):
    edge = edge_with(edge_factory, world)
    signed = dkim_sign(world, PLAIN)
    b = signed.split(b"b=")[-1][:8].decode()
    ar = auth_results(stored(redis_server, send(edge.port, "a@src.test", signed)))
    assert ar.replace("\t", " ") == (f"mx.test; spf=pass smtp.mailfrom=src.test; "
                                     f"dkim=pass header.d=src.test header.s=sel header.b={b}") or \
        ar.replace("\t", " ") == (f"mx.test; spf=pass smtp.mailfrom=src.test; "
                                  f"dkim=pass header.d=src.test header.s=sel header.b=\"{b}\"")
    tampered = signed.replace(b"hello", b"HELLO")
    ar = auth_results(stored(redis_server, send(edge.port, "a@src.test", tampered)))
    assert "dkim=fail header.d=src.test header.s=sel" in ar


def test_forged_results_are_removed(edge_factory, world, redis_server):
    edge = edge_with(edge_factory, world)
    forged = (b"Authentication-Results: mx.test; spf=pass smtp.mailfrom=bad.test\r\n"
              b"Authentication-Results: MX.TEST (comment);\r\n\tdkim=pass header.d=bad.test\r\n"
              b"Authentication-Results: other.test; spf=pass smtp.mailfrom=src.test\r\n") + PLAIN
    rest = stored(redis_server, send(edge.port, "a@src.test", forged))
    ours = b"Authentication-Results: mx.test;"
    assert rest.count(b"Authentication-Results:") == 2
    assert rest.startswith(ours)
    assert b"Authentication-Results: other.test; spf=pass smtp.mailfrom=src.test\r\n" + PLAIN in rest
    assert b"bad.test" not in rest


def test_trusted_sender_is_signed_not_checked(edge_factory, world, redis_server):
    edge = edge_with(edge_factory, world, **{"edge.trusted_networks": "127.0.0.1/32",
                                             "filters.dkim_sign": f"src.test:sel:{world['pem']}"})
    msg = PLAIN + b"line two\r\n"
    rest = stored(redis_server, send(edge.port, "a@bad.test", msg, rcpt="x@ext.test"))
    assert rest.startswith(b"DKIM-Signature: ")
    assert b"Authentication-Results" not in rest
    # python3-dkim verifies it with the key that DNS would give.
    code = ("import dkim, sys\n"
            f"rec = {world['record'].encode()!r}\n"
            "ok = dkim.verify(sys.stdin.buffer.read(), dnsfunc=lambda name, timeout=5: rec)\n"
            "sys.exit(0 if ok else 1)\n")
    r = subprocess.run(["/usr/bin/python3", "-c", code], input=rest, capture_output=True)
    assert r.returncode == 0, r.stderr
    # A sender domain without a key is delivered unsigned.
    rest = stored(redis_server, send(edge.port, "a@other.test", PLAIN.replace(b"src.test", b"other.test"),
                                     rcpt="x@ext.test"))
    assert not rest.startswith(b"DKIM-Signature")
