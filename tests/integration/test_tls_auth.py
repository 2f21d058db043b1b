"""STARTTLS (RFC 3207), implicit TLS (RFC 8314) and SMTP AUTH (RFC 4954, PLAIN and LOGIN).

TLS is checked with the openssl command line client and with Python's ssl module, against a
certificate the tests generate (tls_pair). AUTH uses the users of auth_users (alice with a
sha512-crypt hash, bob with sha256-crypt). Covered: STARTTLS command injection, the state reset
after the handshake, AUTH only after TLS and only on submission, the AUTH dialogs and their
errors, submission requiring AUTH, and relaying by an authenticated user.
"""
import base64
import re
import socket
import ssl
import subprocess
import time

import pytest

from mxtest import (SMTP, Mxgate, ehlo, expect, free_port, message, port_open, queued_id,
                    queued_ids, replies_until_close, smtps_connect, split_received,
                    tls_client_context, wait_for)


@pytest.fixture
def tls_edge(edge_factory, tls_pair, auth_users):
    cert, key = tls_pair
    return edge_factory({"tls.cert": cert, "tls.key": key, "edge.auth_users": auth_users})


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain(user, password, authzid=""):
    return b64(f"{authzid}\0{user}\0{password}")


def submission_tls(m, connect, name="client.test"):
    """A submission session after STARTTLS and a second EHLO; returns (client, EHLO keywords)."""
    c = connect(m.sub_port)
    ehlo(c, name)
    c.starttls()
    return c, ehlo(c, name)


def login(c, user="alice", password="secret-alice"):
    expect(c.cmd(f"AUTH PLAIN {plain(user, password)}"), 235, "2.7.0")


# ---- STARTTLS ------------------------------------------------------------------------------

def test_openssl_s_client_starttls(tls_edge):
    p = subprocess.Popen(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{tls_edge.port}",
         "-servername", "mx.test", "-ign_eof", "-nocommands"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # One command per write: EHLO must be the last command of its group.
        p.stdin.write(b"EHLO s-client.test\r\n")
        p.stdin.flush()
        time.sleep(0.5)
        p.stdin.write(b"QUIT\r\n")
        p.stdin.flush()
        out, _ = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = out.decode("utf-8", "replace")
    assert "CN = mx.test" in text or "CN=mx.test" in text, text
    assert re.search(r"SSL handshake has read \d+ bytes", text), text
    assert re.search(r"New, TLSv1\.[23], Cipher is \S+", text), text
    # The EHLO after the handshake, answered over TLS, without STARTTLS.
    assert "250-mx.test\r\n250-PIPELINING\r\n" in text, text
    assert "250 CHUNKING" in text
    assert "STARTTLS" not in text.split("250-mx.test", 1)[1]
    assert "221 2.0.0 Bye" in text, text


def test_final_replies_over_tls_reach_the_client(edge_factory, tls_pair, connect):
    """The last reply before the server closes (221 to QUIT, 421 at the idle timeout) must go
    out through TLS before the connection is closed."""
    cert, key = tls_pair
    m = edge_factory({"tls.cert": cert, "tls.key": key, "edge.idle_timeout": "1s"})
    c = connect(m.port)
    ehlo(c)
    c.starttls()
    ehlo(c)
    c.send("QUIT\r\n")
    rs = replies_until_close(c)
    assert len(rs) == 1, rs
    expect(rs[0], 221, "2.0.0")
    d = connect(m.port)
    ehlo(d)
    d.starttls()
    ehlo(d)
    rs = replies_until_close(d)
    assert len(rs) == 1, rs
    expect(rs[0], 421, "4.4.2")


def test_python_starttls_and_received_header(tls_edge, connect, redis_server):
    c = connect(tls_edge.port)
    assert "STARTTLS" in ehlo(c)
    c.starttls()
    assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert "STARTTLS" not in ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<u@local.test>"), 250, "2.1.5")
    expect(c.cmd("DATA"), 354)
    c.send("Subject: tls\r\n\r\nx\r\n.\r\n")
    qid = queued_id(c.reply())
    _, body, _ = message(redis_server.client, qid)
    received = split_received(body)[0].decode()
    assert f"with ESMTPS id {qid}" in received
    assert f"(using {c.sock.version()} with cipher {c.sock.cipher()[0]} " in received


def test_starttls_command_injection(tls_edge, connect, redis_server):
    c = connect(tls_edge.port)
    ehlo(c)
    c.send("STARTTLS\r\nMAIL FROM:<x@y.test>\r\n")
    expect(c.reply(), 554, "5.5.0")
    assert c.closed()
    assert c.buf == b""     # no 220, and surely no 250 to the injected MAIL
    assert queued_ids(redis_server.client) == []


def test_starttls_command_injection_on_submission(tls_edge, connect):
    c = connect(tls_edge.sub_port)
    ehlo(c)
    c.send("STARTTLS\r\nAUTH PLAIN " + plain("alice", "secret-alice") + "\r\n")
    expect(c.reply(), 554, "5.5.0")
    assert c.closed()
    assert c.buf == b""


def test_plaintext_after_starttls_reply_is_never_a_command(tls_edge, connect):
    """Plaintext sent after the 220 (instead of a ClientHello) ends the session: it is never
    answered as a command, before or after TLS."""
    c = connect(tls_edge.port)
    ehlo(c)
    expect(c.cmd("STARTTLS"), 220, "2.0.0")
    c.send("MAIL FROM:<x@y.test>\r\n")
    try:
        s = tls_client_context().wrap_socket(c.sock, server_hostname="mx.test")
    except (ssl.SSLError, OSError):
        s = None
    if s is not None:
        # Should the handshake survive, the injected MAIL must still not have been taken.
        c.sock = s
        rs = replies_until_close(c)
        assert all(code != 250 for code, _ in rs), rs
    else:
        assert c.buf == b""


def test_state_is_reset_after_starttls(tls_edge, connect):
    c = connect(tls_edge.port)
    ehlo(c)
    c.starttls()
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 503, "5.5.1")
    assert "STARTTLS" not in ehlo(c)
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 250, "2.1.0")


def test_starttls_errors(tls_edge, edge_factory, connect):
    c = connect(tls_edge.port)
    ehlo(c)
    expect(c.cmd("STARTTLS now"), 501, "5.5.4")
    expect(c.cmd("MAIL FROM:<a@ext.test>"), 250, "2.1.0")
    expect(c.cmd("STARTTLS"), 503, "5.5.1")
    expect(c.cmd("RSET"), 250, "2.0.0")
    c.starttls()
    ehlo(c)
    expect(c.cmd("STARTTLS"), 554, "5.5.1")
    # Without a certificate STARTTLS is neither offered nor accepted.
    plain_edge = edge_factory(name="no-tls")
    d = connect(plain_edge.port)
    assert "STARTTLS" not in ehlo(d)
    expect(d.cmd("STARTTLS"), 502, "5.5.1")


# ---- AUTH ----------------------------------------------------------------------------------

def test_auth_before_tls_is_refused(tls_edge, connect):
    c = connect(tls_edge.sub_port)
    keywords = ehlo(c)
    assert "STARTTLS" in keywords
    assert not any(k.startswith("AUTH") for k in keywords)
    expect(c.cmd(f"AUTH PLAIN {plain('alice', 'secret-alice')}"), 538, "5.7.11")
    expect(c.cmd("AUTH LOGIN"), 538, "5.7.11")
    expect(c.cmd("MAIL FROM:<alice@local.test>"), 530, "5.7.0")


def test_auth_plain_initial_response(tls_edge, connect):
    c, keywords = submission_tls(tls_edge, connect)
    assert "AUTH PLAIN LOGIN" in keywords
    expect(c.cmd(f"AUTH PLAIN {plain('alice', 'secret-alice')}"), 235, "2.7.0")
    # AUTH is not offered again, nor accepted twice.
    assert not any(k.startswith("AUTH") for k in ehlo(c))
    expect(c.cmd(f"AUTH PLAIN {plain('alice', 'secret-alice')}"), 503, "5.5.1")


def test_auth_plain_dialog(tls_edge, connect):
    c, _ = submission_tls(tls_edge, connect)
    assert c.cmd("AUTH PLAIN") == (334, [""])
    expect(c.cmd(plain("bob", "s3cret")), 235, "2.7.0")


def test_auth_login_dialog(tls_edge, connect):
    c, _ = submission_tls(tls_edge, connect)
    assert c.cmd("AUTH LOGIN") == (334, ["VXNlcm5hbWU6"])
    assert c.cmd(b64("bob")) == (334, ["UGFzc3dvcmQ6"])
    expect(c.cmd(b64("s3cret")), 235, "2.7.0")


def test_auth_login_with_initial_user(tls_edge, connect):
    c, _ = submission_tls(tls_edge, connect)
    assert c.cmd(f"AUTH LOGIN {b64('alice')}") == (334, ["UGFzc3dvcmQ6"])
    expect(c.cmd(b64("secret-alice")), 235, "2.7.0")


def test_auth_wrong_password_and_unknown_user(tls_edge, connect):
    c, _ = submission_tls(tls_edge, connect)
    expect(c.cmd(f"AUTH PLAIN {plain('alice', 'wrong')}"), 535, "5.7.8")
    expect(c.cmd(f"AUTH PLAIN {plain('mallory', 'secret-alice')}"), 535, "5.7.8")
    assert c.cmd("AUTH LOGIN") == (334, ["VXNlcm5hbWU6"])
    assert c.cmd(b64("bob"))[0] == 334
    expect(c.cmd(b64("secret-alice")), 535, "5.7.8")
    # Still unauthenticated, and a right password still works afterwards.
    expect(c.cmd("MAIL FROM:<alice@local.test>"), 530, "5.7.0")
    login(c)


def test_auth_cancel_and_bad_base64(tls_edge, connect):
    c, _ = submission_tls(tls_edge, connect)
    assert c.cmd("AUTH LOGIN")[0] == 334
    expect(c.cmd("*"), 501, "5.7.0")
    assert c.cmd("AUTH PLAIN")[0] == 334
    expect(c.cmd("*"), 501, "5.7.0")
    expect(c.cmd("AUTH PLAIN !!!notbase64"), 501, "5.5.2")
    assert c.cmd("AUTH LOGIN")[0] == 334
    expect(c.cmd("@@@="), 501, "5.5.2")
    # A PLAIN message with a different authorization identity, or no NULs, is malformed.
    expect(c.cmd(f"AUTH PLAIN {plain('alice', 'secret-alice', authzid='bob')}"), 501, "5.5.2")
    expect(c.cmd(f"AUTH PLAIN {b64('alicesecret')}"), 501, "5.5.2")
    expect(c.cmd("AUTH CRAM-MD5"), 504, "5.5.4")
    # After all that the session is back in command mode and can authenticate.
    expect(c.cmd("NOOP"), 250, "2.0.0")
    login(c)


def test_auth_needs_ehlo_after_tls(tls_edge, connect):
    c = connect(tls_edge.sub_port)
    ehlo(c)
    c.starttls()
    expect(c.cmd(f"AUTH PLAIN {plain('alice', 'secret-alice')}"), 503, "5.5.1")


def test_failed_auth_counts_as_error(edge_factory, tls_pair, auth_users, connect):
    cert, key = tls_pair
    m = edge_factory({"tls.cert": cert, "tls.key": key, "edge.auth_users": auth_users,
                      "edge.soft_error_limit": "3", "edge.hard_error_limit": "3"})
    c, _ = submission_tls(m, connect)
    expect(c.cmd(f"AUTH PLAIN {plain('alice', 'x')}"), 535, "5.7.8")
    expect(c.cmd(f"AUTH PLAIN {plain('alice', 'y')}"), 535, "5.7.8")
    c.send(f"AUTH PLAIN {plain('alice', 'z')}\r\n")
    expect(c.reply(), 535, "5.7.8")
    expect(c.reply(), 421, "4.7.0")
    assert c.closed()


def test_submission_requires_auth(tls_edge, connect):
    c, _ = submission_tls(tls_edge, connect)
    expect(c.cmd("MAIL FROM:<alice@local.test>"), 530, "5.7.0")
    expect(c.cmd("RCPT TO:<u@local.test>"), 503, "5.5.1")


def test_authenticated_relay(tls_edge, connect, redis_server):
    c, _ = submission_tls(tls_edge, connect, "laptop.test")
    login(c)
    expect(c.cmd("MAIL FROM:<alice@local.test>"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<friend@ext.test>"), 250, "2.1.5")
    expect(c.cmd("DATA"), 354)
    content = b"Subject: out\r\n\r\nhello world\r\n"
    c.send(content + b".\r\n")
    qid = queued_id(c.reply())
    env, body, rcpts = message(redis_server.client, qid)
    assert env["auth_user"] == "alice"
    assert env["listener"] == "submission"
    assert env["sender"] == "alice@local.test"
    assert [x["to"] for x in rcpts] == ["friend@ext.test"]
    received, rest = split_received(body)
    received = received.decode()
    assert received.startswith("Received: from laptop.test ([127.0.0.1])\r\n")
    assert f"\tby mx.test (mxgate) with ESMTPSA id {qid}\r\n" in received
    assert re.search(r"\r\n\t\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)\r\n", received)
    assert "\r\n\t(authenticated user alice)\r\n" in received
    assert "\tfor <friend@ext.test>; " in received
    assert rest == content


def test_auth_on_mx_port_is_refused(tls_edge, connect):
    c = connect(tls_edge.port)
    assert not any(k.startswith("AUTH") for k in ehlo(c))
    expect(c.cmd(f"AUTH PLAIN {plain('alice', 'secret-alice')}"), 503, "5.5.1")
    c.starttls()
    assert not any(k.startswith("AUTH") for k in ehlo(c))
    expect(c.cmd(f"AUTH PLAIN {plain('alice', 'secret-alice')}"), 503, "5.5.1")
    # And the MX port does not relay for anyone unauthenticated.
    expect(c.cmd("MAIL FROM:<alice@local.test>"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<friend@ext.test>"), 554, "5.7.1")


def test_auth_not_offered_without_users_file(edge_factory, tls_pair, connect):
    cert, key = tls_pair
    m = edge_factory({"tls.cert": cert, "tls.key": key})
    c, keywords = submission_tls(m, connect)
    assert not any(k.startswith("AUTH") for k in keywords)
    expect(c.cmd(f"AUTH PLAIN {plain('alice', 'secret-alice')}"), 503, "5.5.1")


# ---- implicit TLS --------------------------------------------------------------------------

def test_implicit_tls_listener(edge_factory, tls_pair, auth_users, redis_server):
    cert, key = tls_pair
    port = free_port()
    edge_factory({"tls.cert": cert, "tls.key": key, "edge.auth_users": auth_users,
                  "edge.smtps_listen": f"127.0.0.1:{port}"})
    wait_for(lambda: port_open(port), what="smtps listener")
    c = smtps_connect(port)
    try:
        assert c.greeting == (220, ["mx.test ESMTP mxgate"])
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        keywords = ehlo(c, "phone.test")
        assert "AUTH PLAIN LOGIN" in keywords
        assert "STARTTLS" not in keywords
        expect(c.cmd("MAIL FROM:<alice@local.test>"), 530, "5.7.0")
        expect(c.cmd("STARTTLS"), 554, "5.5.1")
        login(c)
        expect(c.cmd("MAIL FROM:<alice@local.test>"), 250, "2.1.0")
        expect(c.cmd("RCPT TO:<friend@ext.test>"), 250, "2.1.5")
        expect(c.cmd("DATA"), 354)
        c.send("Subject: smtps\r\n\r\nx\r\n.\r\n")
        qid = queued_id(c.reply())
    finally:
        c.close()
    env, body, _ = message(redis_server.client, qid)
    assert env["listener"] == "smtps" and env["auth_user"] == "alice"
    assert f"with ESMTPSA id {qid}" in split_received(body)[0].decode()


def test_implicit_tls_listener_refuses_plaintext(edge_factory, tls_pair):
    cert, key = tls_pair
    port = free_port()
    edge_factory({"tls.cert": cert, "tls.key": key, "edge.smtps_listen": f"127.0.0.1:{port}"})
    wait_for(lambda: port_open(port), what="smtps listener")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"EHLO plain.test\r\n")
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
    assert not got.startswith(b"220") and b"250" not in got


def test_implicit_tls_needs_a_certificate(tmp_path, redis_server):
    m = Mxgate(tmp_path / "smtps-no-cert", redis_server.url,
               {"edge.smtps_listen": f"127.0.0.1:{free_port()}"}, wait_ports=False)
    try:
        rc = m.proc.wait(timeout=10)
        assert "edge.smtps_listen needs tls.cert and tls.key" in m.read_log()
        assert rc == 1      # a clean start-up failure, not a crash
    finally:
        m.stop()
