"""HA store masters, deployed as Mooncake deploys them: two ``mooncake_master --enable_ha
--ha_backend_connstring=etcd://...`` (weft's translation into ``weft store-master --ha``) on a
private etcd, and two ``MooncakeDistributedStore`` clients whose master is that ``etcd://``
address. The clients write values of several sizes (some with two replicas) and remove one; once
the leader's journal is in etcd the leader is SIGKILLed, the standby takes over and restores the
pool's state, and both clients, following the new leader by themselves, read every value back
byte for byte; the removed key stays missing and new puts work. The Python counterpart of
tests/integration/ha_master_test.cc's AKilledLeadersObjectsAllReadBackThroughTheNextLeader.

mooncake_master cannot pass weft's --ha-lease-ms / --ha-rejoin-ms, so the masters run with the
defaults (a 5 s lease, ranks held 15 s): every wait below is bounded by PATIENCE, which is sized
for that, and nothing asserts how long anything took. Without the etcd binary the test skips,
except under CI=true, where it fails (as tests/support/etcd_process.h does); without the weft CLI
(WEFT_BIN or `weft` on PATH) it skips, as test_store.py does.
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from weft.mooncake_store import ERR_OBJECT_NOT_FOUND, MooncakeDistributedStore, ReplicateConfig

SEGMENT = 32 << 20
PATIENCE = 60.0  # seconds: the bound of every wait (a failover takes about one 5 s lease)
ETCD_CANDIDATES = ("/usr/bin/etcd", "/usr/local/bin/etcd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def eventually(done, patience=PATIENCE, step=0.1):
    """Polls ``done`` until it returns something true or ``patience`` seconds pass; its last value."""
    until = time.monotonic() + patience
    while True:
        value = done()
        if value or time.monotonic() >= until:
            return value
        time.sleep(step)


def stop(proc, timeout=30):
    """Ends a child this test started: SIGTERM, then SIGKILL if it lingers. Its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


class Etcd:
    """A private etcd on 127.0.0.1 (free client and peer ports, a data dir under tmp), with its
    v3 JSON gateway for reading what the leader journals."""

    def __init__(self, binary, tmp_path):
        self.port = free_port()
        peer_port = free_port()
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self.log_path = tmp_path / "etcd.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--name=weft-test", f"--data-dir={tmp_path / 'etcd-data'}", f"--listen-client-urls={client}",
             f"--advertise-client-urls={client}", f"--listen-peer-urls={peer}",
             f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=weft-test={peer}", "--log-outputs=stderr"],
            stdout=self._log, stderr=subprocess.STDOUT)
        self.url = f"etcd://127.0.0.1:{self.port}"

    def healthy(self):
        assert self.proc.poll() is None, f"etcd exited at start:\n{self.log()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200 and b"true" in r.read()
        except (urllib.error.URLError, OSError):
            return False

    def keys(self, prefix):
        """The keys under ``prefix`` now (etcd's v3 gateway: POST /v3/kv/range, base64 keys)."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                           "range_end": base64.b64encode(end.encode()).decode(), "keys_only": True}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/v3/kv/range", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as r:
            reply = json.loads(r.read())
        return {base64.b64decode(kv["key"]).decode()[len(prefix):] for kv in reply.get("kvs", [])}

    def log(self):
        return self.log_path.read_text(errors="replace")

    def close(self):
        stop(self.proc)
        self._log.close()


@pytest.fixture
def weft_bin(monkeypatch):
    """The weft CLI that mooncake_master execs (pip builds only the extension)."""
    path = os.environ.get("WEFT_BIN") or shutil.which("weft")
    if not path:
        pytest.skip("no weft CLI: set WEFT_BIN to the C++ build's weft (cmake --build build) to run this test")
    monkeypatch.setenv("WEFT_BIN", path)
    return path


@pytest.fixture
def etcd(tmp_path):
    binary = next((p for p in ETCD_CANDIDATES if os.access(p, os.X_OK)), None)
    if binary is None:
        message = "etcd is not installed (apt-get install etcd-server, or scripts/install-deps.sh)"
        if in_ci():
            pytest.fail(message + "; CI=true needs it")
        pytest.skip(message + "; skipping the HA store test")
    server = Etcd(binary, tmp_path)
    try:
        assert eventually(server.healthy), f"etcd never became healthy:\n{server.log()}"
        yield server
    finally:
        server.close()


class Master:
    """One ``mooncake_master --enable_ha`` (exec'ing ``weft store-master --ha``), its stdout and
    stderr in a file."""

    def __init__(self, name, etcd_url, tmp_path):
        self.name = name
        self.log_path = tmp_path / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "weft.mooncake_master", "--rpc_address=127.0.0.1", f"--rpc_port={free_port()}",
             "--enable_ha", f"--ha_backend_connstring={etcd_url}", "--set", f"rank_size={SEGMENT}"],
            stdout=self._log, stderr=subprocess.STDOUT)

    def output(self):
        return self.log_path.read_text(errors="replace")

    def says(self, text):
        assert self.proc.poll() is None, f"{self.name} exited ({self.proc.returncode}):\n{self.output()}"
        return text in self.output()

    def close(self):
        stop(self.proc)
        self._log.close()


def sizes_for(count):
    """From 100 B to 300 KiB: every third value the largest, the others spread between."""
    return [300 * 1024 if i % 3 == 0 else 100 + 12289 * i for i in range(count)]


def read_back(mc, key, until):
    """``mc.get(key)``, retried while the client fails over (a failing get gives b""), until it
    returns a value or ``until`` (monotonic) passes; then tried once more."""
    while True:
        got = mc.get(key)
        if got or time.monotonic() >= until:
            return got
        time.sleep(0.1)


def test_a_killed_leaders_objects_all_read_back_through_the_next_leader(weft_bin, etcd, tmp_path, monkeypatch):
    monkeypatch.setenv("WEFT_CLUSTER_SECRET", "ha-" + uuid.uuid4().hex)

    masters, clients = [], []
    try:
        masters = [Master(name, etcd.url, tmp_path) for name in ("master-a", "master-b")]
        for m in masters:
            assert eventually(lambda: m.says("standby for pool")), f"{m.name} never campaigned:\n{m.output()}"
        assert eventually(lambda: any(m.says("leads pool") for m in masters)), \
            "no master leads:\n" + "\n---\n".join(m.output() for m in masters)
        leading = [m for m in masters if "leads pool" in m.output()]
        assert len(leading) == 1, "two leaders:\n" + "\n---\n".join(m.output() for m in masters)
        lead = leading[0]
        standby = masters[1] if lead is masters[0] else masters[0]
        found = re.search(r"leads pool '([^']+)' at (tcp://\S+)", lead.output())
        assert found, lead.output()
        pool = found.group(1)
        assert "tcp://127.0.0.1:" in found.group(2)

        # Two clients, as Mooncake's integrations set them up, naming the etcd address as master.
        for _ in range(2):
            mc = MooncakeDistributedStore()
            code = mc.setup({"local_hostname": "127.0.0.1", "global_segment_size": str(SEGMENT),
                             "master_server_addr": etcd.url, "protocol": "tcp"})
            assert code == 0, f"setup returned {code}\n{lead.output()}"
            clients.append(mc)
        assert clients[0].weft_store.rank != clients[1].weft_store.rank

        # Values from both clients, one and two replicas; one removed.
        prefix = "ha-" + uuid.uuid4().hex[:8]
        written = {}
        for i, size in enumerate(sizes_for(20)):
            key, value = f"{prefix}/{i}", os.urandom(size)
            config = ReplicateConfig(replica_num=2) if i % 4 == 0 else None
            assert clients[i % 2].put(key, value, config) == 0, key
            written[key] = value
        removed = f"{prefix}/5"
        assert clients[0].remove(removed) == 0
        del written[removed]
        last = f"{prefix}/19"

        # The leader journals behind its replies (docs/store.md): wait until etcd holds exactly the
        # stored objects (the last put there, the removed key gone), since what a killed leader had
        # not yet written is lost with it.
        objects = f"/weft/{pool}/state/o/"
        assert eventually(lambda: etcd.keys(objects) == set(written)), \
            f"the leader's journal never reached etcd: {sorted(etcd.keys(objects))}"
        assert last in etcd.keys(objects) and removed not in etcd.keys(objects)

        lead.proc.send_signal(signal.SIGKILL)  # no resignation: the standby waits out the lease
        lead.proc.wait(timeout=PATIENCE)
        assert eventually(lambda: standby.says("leads pool")), f"the standby did not take over:\n{standby.output()}"
        restored = re.search(r"restored (\d+) members, \d+ allocations and (\d+) store objects", standby.output())
        assert restored, standby.output()
        assert restored.group(1) == "2", standby.output()
        assert int(restored.group(2)) == len(written), standby.output()

        # Both clients follow the new leader by themselves; until they have, their calls fail
        # with Mooncake's codes (get gives b""): retry within one bounded deadline.
        until = time.monotonic() + PATIENCE
        for n, mc in enumerate(clients):
            for key, value in written.items():
                got = read_back(mc, key, until)
                assert got, (f"client {n}: {key} never read back (get_size {mc.get_size(key)})\n"
                             f"{standby.output()}")
                assert got == value, f"client {n}: {key}: the bytes differ ({len(got)} read, {len(value)} written)"
        for mc in clients:
            assert mc.get(removed) == b"", "removed before the kill, back after it"
            assert mc.is_exist(removed) == 0
            assert mc.get_size(removed) == ERR_OBJECT_NOT_FOUND

        # The new leader goes on: new puts (two replicas, one) read back from both clients.
        later = {f"{prefix}/after-{i}": os.urandom(size) for i, size in enumerate((4096, 200 * 1024))}
        for i, (key, value) in enumerate(later.items()):
            config = ReplicateConfig(replica_num=2) if i == 0 else None
            assert clients[1 - i % 2].put(key, value, config) == 0, key
        for mc in clients:
            for key, value in later.items():
                assert mc.get(key) == value, key
            assert mc.is_exist(last) == 1
        assert eventually(lambda: set(later) <= etcd.keys(objects)), "the new leader journals nothing"
    finally:
        for mc in clients:
            mc.close()
        for m in masters:
            m.close()
