"""Real milters for the tests, each in a temp dir on free loopback ports: spamass-milter in front
of spamd (SpamAssassin's rules as Debian ships them, local tests only), and clamav-milter in front
of clamd with a one-signature database for the EICAR test file (no download is possible)."""
import os
import socket
import subprocess
import time

import mxtest

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def _answers(port=None, path=None, query=None, want=None):
    try:
        s = socket.socket(socket.AF_UNIX if path else socket.AF_INET)
        s.settimeout(2)
        s.connect(path if path else ("127.0.0.1", port))
        if query:
            s.sendall(query)
            return want in s.recv(100)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Peers:
    def __init__(self, dir):
        self.dir = str(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.procs = []

    def spawn(self, name, argv):
        log = open(os.path.join(self.dir, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()        # libmilter daemons take seconds to notice a SIGTERM
                p.wait()


class SpamassMilter(Peers):
    def __init__(self, dir):
        super().__init__(dir)
        sport, mport = mxtest.free_port(), mxtest.free_port()
        self.spamd = self.spawn("spamd", ["spamd", f"--listen=127.0.0.1:{sport}", "-L", "-x", "-m", "2",
                                          "--min-children=1", "-s", "stderr", f"--pidfile={self.dir}/spamd.pid",
                                          "-u", "nobody"])
        mxtest.wait_for(lambda: _answers(sport, query=b"PING SPAMC/1.5\r\n\r\n", want=b"PONG"),
                        timeout=60, what="spamd")
        self.socket = f"inet:{mport}@127.0.0.1"
        self.spawn("spamass-milter", ["spamass-milter", "-p", self.socket, "-r", "5", "--",
                                      "-d", "127.0.0.1", "-p", str(sport)])
        mxtest.wait_for(lambda: _answers(mport), what="spamass-milter")


class ClamavMilter(Peers):
    def __init__(self, dir):
        super().__init__(dir)
        db = os.path.join(self.dir, "db")
        os.makedirs(db)
        eicar = os.path.join(self.dir, "eicar.txt")
        with open(eicar, "wb") as f:
            f.write(EICAR)
        sig = subprocess.run(["sigtool", "--md5", eicar], check=True, capture_output=True).stdout
        with open(os.path.join(db, "test.hdb"), "wb") as f:
            f.write(sig)
        sock = os.path.join(self.dir, "clamd.sock")
        with open(os.path.join(self.dir, "clamd.conf"), "w") as f:
            f.write(f"LocalSocket {sock}\nDatabaseDirectory {db}\nForeground yes\nUser root\n"
                    f"LogFile {self.dir}/clamd.log\nPidFile {self.dir}/clamd.pid\nTemporaryDirectory {self.dir}\n")
        self.spawn("clamd", ["clamd", "-c", os.path.join(self.dir, "clamd.conf")])
        mxtest.wait_for(lambda: _answers(path=sock, query=b"PING\n", want=b"PONG"), timeout=60, what="clamd")
        mport = mxtest.free_port()
        with open(os.path.join(self.dir, "clamav-milter.conf"), "w") as f:
            f.write(f"MilterSocket inet:{mport}@127.0.0.1\nClamdSocket unix:{sock}\nOnInfected Reject\n"
                    f"Foreground yes\nUser root\nLogFile {self.dir}/clamav-milter.log\n"
                    f"PidFile {self.dir}/clamav-milter.pid\n")
        self.socket = f"inet:{mport}@127.0.0.1"
        self.spawn("clamav-milter", ["clamav-milter", "-c", os.path.join(self.dir, "clamav-milter.conf")])
        mxtest.wait_for(lambda: _answers(mport), what="clamav-milter")
