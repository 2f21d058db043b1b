"""Fixtures: a private redis-server and an mxgate edge on free loopback ports, per test."""
import os
import subprocess

import pytest

import mxtest


def stop_all(stops):
    """Calls every stop, even when one raises (a sanitizer report, say); then raises the first."""
    first = None
    for stop in stops:
        try:
            stop()
        except Exception as e:         # noqa: BLE001 - re-raised below
            first = first or e
    if first is not None:
        raise first


@pytest.fixture
def redis_server(tmp_path):
    r = mxtest.Redis(tmp_path / "redis")
    yield r
    r.stop()


@pytest.fixture
def edge_factory(tmp_path, redis_server):
    """Starts `mxgate edge` with extra -o overrides; every one started is stopped afterwards."""
    started = []

    def make(overrides=None, name="edge", **kw):
        m = mxtest.Mxgate(tmp_path / name, redis_server.url, overrides, **kw)
        started.append(m)
        return m

    yield make
    stop_all(m.stop for m in started)


@pytest.fixture
def connect():
    """Raw SMTP clients, closed after the test."""
    opened = []

    def make(port, **kw):
        c = mxtest.SMTP(port, **kw)
        opened.append(c)
        return c
    yield make
    for c in opened:
        c.close()


@pytest.fixture
def edge(edge_factory):
    return edge_factory()


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory):
    """A self-signed certificate and key made with the openssl command for mx.test."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=mx.test"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="session")
def auth_users(tmp_path_factory):
    """An AUTH users file: alice / secret-alice (sha512-crypt), bob / s3cret (sha256-crypt)."""
    d = tmp_path_factory.mktemp("auth")
    path = str(d / "users")

    def hash(method, pw):
        return subprocess.run(["openssl", "passwd", method, pw], check=True,
                              capture_output=True, text=True).stdout.strip()
    alice = hash("-6", "secret-alice")
    bob = hash("-5", "s3cret")
    with open(path, "w") as f:
        f.write(f"# test users\nalice {alice}\nbob {bob}\n")
    return path


def pytest_configure(config):
    assert os.path.exists(mxtest.BIN), f"mxgate binary not found at {mxtest.BIN}; run make"
