"""`mxgate config ...`, the command line, and the generated reference staying in step."""
import os
import subprocess

import pytest

import mxtest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def run(*args, **kw):
    return subprocess.run([mxtest.BIN, *args], capture_output=True, text=True, timeout=30, **kw)


def test_check_good_file(tmp_path):
    rcpts = tmp_path / "recipients"
    rcpts.write_text("alice@local.test\n@example.test\n")
    f = tmp_path / "good.conf"
    f.write_text("# a site\n"
                 "edge.listen = 127.0.0.1:2525, [::1]:2525\n"
                 "local.domains = local.test\n"
                 "    example.test\n"
                 f"local.recipients = {rcpts}\n"
                 "edge.trusted_networks = 10.0.0.0/8 192.0.2.0/24\n"
                 "edge.message_size_limit = 20M\n"
                 "edge.idle_timeout = 2m\n")
    r = run("config", "check", str(f))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{f}: ok"


def test_check_reports_every_error_with_file_and_line(tmp_path):
    f = tmp_path / "bad.conf"
    f.write_text("edge.listen = 127.0.0.1:2525\n"
                 "edge.lissten = 127.0.0.1:25\n"
                 "\n"
                 "edge.max_recipients = 0\n"
                 "edge.idle_timeout = soon\n"
                 "edge.listen = 127.0.0.1:2526\n"
                 "edge.bare_newline = strip\n"
                 "this is not a setting\n")
    r = run("config", "check", str(f))
    assert r.returncode == 1
    errs = r.stderr.splitlines()
    assert errs == [
        f"{f}:2: unknown key 'edge.lissten'",
        f"{f}:4: edge.max_recipients: '0' is below the minimum 1",
        f"{f}:5: edge.idle_timeout: 'soon' is not a duration",
        f"{f}:6: 'edge.listen' is set twice (first at line 1)",
        f"{f}:7: edge.bare_newline: 'strip' is not one of normalize|reject",
        f"{f}:8: line is not 'key = value'",
    ]


def test_check_semantic_errors_name_file_and_key(tmp_path):
    f = tmp_path / "sem.conf"
    f.write_text(f"local.recipients = {tmp_path}/missing\n"
                 "redis.url = http://nope\n")
    r = run("config", "check", str(f))
    assert r.returncode == 1
    assert f"{f}: local.recipients: {tmp_path}/missing: cannot read" in r.stderr
    assert f"{f}: redis.url: " in r.stderr


def test_check_bad_recipients_file_has_its_line(tmp_path):
    rc = tmp_path / "rcpts"
    rc.write_text("alice@local.test\nnot an address\n")
    f = tmp_path / "c.conf"
    f.write_text(f"local.recipients = {rc}\n")
    r = run("config", "check", str(f))
    assert r.returncode == 1
    assert f"{rc}:2: 'not an address' is not an address or @domain" in r.stderr


def test_check_missing_file():
    r = run("config", "check", "/nonexistent/mxgate.conf")
    assert r.returncode == 1
    assert r.stderr.strip() == "/nonexistent/mxgate.conf: cannot read: No such file or directory"


def test_overrides_are_checked_and_win(tmp_path):
    f = tmp_path / "c.conf"
    f.write_text("edge.max_recipients = 50\n")
    r = run("-c", str(f), "-o", "edge.max_recipients=7", "config", "show")
    assert r.returncode == 0, r.stderr
    assert "edge.max_recipients = 7\n" in r.stdout
    r = run("-o", "edge.nope=1", "config", "check")
    assert r.returncode == 1
    assert "-o: unknown key 'edge.nope'" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["-x", "run"], "unknown option '-x'"),
    (["-o", "novalue", "run"], "-o needs key=value, got 'novalue'"),
    (["-c"], "option '-c' needs an argument"),
    (["config", "explode"], "unknown config subcommand 'explode'"),
    (["edge", "extra"], "unexpected argument 'extra'"),
])
def test_cli_errors_name_the_bad_argument(args, needle):
    r = run(*args)
    assert r.returncode == 2
    assert needle in r.stderr


def test_docs_reference_is_in_step_with_the_table():
    r = run("config", "reference")
    with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
        assert f.read() == r.stdout, "docs/configuration.md is stale: run make docs"


def test_sample_conf_is_in_step_with_the_table():
    r = run("config", "sample")
    with open(os.path.join(ROOT, "conf", "mxgate.conf")) as f:
        assert f.read() == r.stdout, "conf/mxgate.conf is stale: run make docs"


def test_fixed_key_names_exist():
    r = run("config", "show")
    keys = {line.split(" = ")[0] for line in r.stdout.splitlines()}
    for k in ["state_dir", "redis.url", "edge.listen", "edge.submission_listen", "edge.hostname",
              "local.domains", "local.recipients", "edge.trusted_networks", "edge.auth_users",
              "tls.cert", "tls.key", "dns.servers", "admin.listen"]:
        assert k in keys


def test_edge_with_bad_file_exits_with_the_error(tmp_path):
    f = tmp_path / "bad.conf"
    f.write_text("edge.max_connections = lots\n")
    r = run("-c", str(f), "edge")
    assert r.returncode == 1
    assert f"{f}:1: edge.max_connections: 'lots' is not an integer" in r.stderr


def test_edge_port_in_use_fails_clearly(tmp_path, redis_server):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        r = run("-o", f"redis.url={redis_server.url}", "-o", f"edge.listen=127.0.0.1:{port}",
                "-o", "edge.submission_listen=", "edge")
        assert r.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    finally:
        s.close()


@pytest.mark.parametrize("text,errors", [
    ("relay.retry_schedule = 5*1m, 3*1x\nrelay.smarthost = [::1\n",
     ['relay.retry_schedule: step 2 "3*1x": unknown unit "x"',
      "relay.smarthost: '[::1' is not host[:port]"]),
    ("relay.domain_limits = big.example:600:20, broken.example:fast\n",
     ["relay.domain_limits: 'broken.example:fast' is not domain:rate:concurrency"]),
    ("relay.domain_tls = bank.example:verify, odd.example:sometimes\n",
     ["relay.domain_tls: 'odd.example:sometimes' is not domain:none|may|encrypt|verify"]),
    ("relay.mx_limits = mx1.big.example:1200:30, mx2.big.example\n",
     ["relay.mx_limits: 'mx2.big.example' is not domain:rate:concurrency"]),
])
def test_check_relay_settings(tmp_path, text, errors):
    f = tmp_path / "relay.conf"
    f.write_text(text)
    r = run("config", "check", str(f))
    assert r.returncode == 1
    for e in errors:
        assert f"{f}: {e}" in r.stderr
