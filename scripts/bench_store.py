#!/usr/bin/env python3
"""The KV-cache store from Python: weft.mooncake_store.MooncakeDistributedStore (Mooncake Store's
API on weft) against the real Mooncake Store and redis-server, on the same work, same host.

Cases (each a put and a get; the value kinds below, each plain and zero-copy):
    4 KiB, 1 MiB, 16 MiB    put / get, and put_from / get_into (a registered buffer)
    64 x 16 KiB             put_batch / get_batch, and batch_put_from / batch_get_into

Every variant is two client processes of its store on this host: a holder, which writes the
values that the get cases read (so that a get crosses from one process to the other), and a
reader, the timed one. Each timed put writes fresh keys with fresh random bytes (made before the
clock starts) and the keys are removed after the clock stops; each get reads the keys the holder
wrote. Puts go to the putting client's own memory in every store (weft's default placement; for
Mooncake ReplicateConfig.preferred_segment = the client's own segment), gets come from the
other process.

Variants:
    weft tcp       weft.mooncake_store on `weft store-master` (--weft-cli; started here) at
                   127.0.0.1:PORT: weft's tcp transport between the clients
    weft shm       the same with the master on a unix socket path: same-host shared memory
    Mooncake       the real wheel (--mooncake-python: an interpreter with
                   mooncake-transfer-engine-non-cuda) with its mooncake_master, protocol tcp,
                   MC_FORCE_TCP=1, P2PHANDSHAKE metadata
    redis unix     redis-server started here, redis-py (SET/GET, MSET/MGET; no zero-copy calls)
    redis tcp      the same server over 127.0.0.1

Each variant's reader runs in its own interpreter and is driven over a pipe, one call at a time,
timing each call itself (bench_trans.py's way). Every variant is verified once per case before
timing: fresh random bytes written by one process, read back by the other and compared (for the
put cases the reader writes and the holder reads; for the get cases the reverse). Then the
variants take turns call by call, in shuffled order, for --rounds x --seconds per case; figures
are median seconds per call. Speed-ups are time ratios (other / weft; above 1 weft is faster).

    build-py/venv/bin/python scripts/bench_store.py [--seconds 0.5] [--rounds 4]
        [--weft-cli build/weft] [--mooncake-python <venv>/bin/python --mooncake-ld-path <prefix>]
        [--redis-server redis-server] [--variants weft-tcp,weft-shm,mooncake,redis-unix,redis-tcp]
        [--json FILE]

The Mooncake wheel links libibverbs even for tcp: see docs/performance.md (the store) for the
private prefix given as --mooncake-ld-path. redis-py must be importable by --redis-python
(default: this interpreter): `pip install redis`; redis-server is Debian's `redis-server`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

KIB, MIB = 1 << 10, 1 << 20
# (label, count, size): count > 1 is a batch.
SHAPES: List[Tuple[str, int, int]] = [("4 KiB", 1, 4 * KIB), ("1 MiB", 1, MIB), ("16 MiB", 1, 16 * MIB),
                                      ("64 x 16 KiB", 64, 16 * KIB)]
SEGMENT = 512 * MIB  # each client's contribution to the store (global_segment_size / rank_size)
ARENA = 32 * MIB  # each client's registered buffer for the zero-copy calls
VARIANTS = ["weft-tcp", "weft-shm", "mooncake", "redis-unix", "redis-tcp"]
NAMES = {"weft-tcp": "weft tcp", "weft-shm": "weft shm", "mooncake": "Mooncake", "redis-unix": "redis unix",
         "redis-tcp": "redis tcp"}


def call_name(op: str, zc: bool, count: int) -> str:
    if count > 1:
        return {("put", False): "put_batch", ("get", False): "get_batch", ("put", True): "batch_put_from",
                ("get", True): "batch_get_into"}[(op, zc)]
    return {("put", False): "put", ("get", False): "get", ("put", True): "put_from", ("get", True): "get_into"}[(op, zc)]


def cases() -> List[Dict[str, Any]]:
    out = []
    for label, count, size in SHAPES:
        for op in ("put", "get"):
            for zc in (False, True):
                out.append({"name": f"{call_name(op, zc, count)} {label}", "op": op, "zc": zc, "count": count,
                            "size": size, "shape": label})
    return out


# -- the agents: one store client each, in whichever interpreter has its store ----------------


class MooncakeAPI:
    """MooncakeDistributedStore calls, from weft.mooncake_store or the real mooncake.store."""

    def __init__(self, module: str, master: str) -> None:
        if module == "mooncake.store":
            os.environ.setdefault("MC_FORCE_TCP", "1")
            from mooncake.store import MooncakeDistributedStore, ReplicateConfig
        else:
            from weft.mooncake_store import MooncakeDistributedStore, ReplicateConfig
        self.s = MooncakeDistributedStore()
        rc = self.s.setup("127.0.0.1", "P2PHANDSHAKE", SEGMENT, 64 * MIB, "tcp", "", master)
        if rc != 0:
            raise SystemExit(f"{module}: setup returned {rc}")
        self.config = ReplicateConfig()
        self.config.replica_num = 1
        # The putting client's own memory, as weft places a put by default.
        self.config.preferred_segment = self.s.get_hostname()
        self.buf = ctypes.create_string_buffer(ARENA)
        self.base = ctypes.addressof(self.buf)
        if self.s.register_buffer(self.base, ARENA) != 0:
            raise SystemExit(f"{module}: register_buffer failed")
        self.zero_copy = True

    def stage(self, values: List[bytes]) -> Tuple[List[int], List[int]]:
        ptrs, sizes, off = [], [], 0
        for v in values:
            ctypes.memmove(self.base + off, v, len(v))
            ptrs.append(self.base + off)
            sizes.append(len(v))
            off += len(v)
        return ptrs, sizes

    def slots(self, sizes: List[int]) -> List[int]:
        ptrs, off = [], 0
        for n in sizes:
            ptrs.append(self.base + off)
            off += n
        return ptrs

    def put(self, keys: List[str], values: List[bytes]) -> None:
        rc = self.s.put_batch(keys, values, self.config) if len(keys) > 1 else self.s.put(keys[0], values[0], self.config)
        if rc != 0:
            raise RuntimeError(f"put returned {rc}")

    def put_zc(self, keys: List[str], ptrs: List[int], sizes: List[int]) -> None:
        if len(keys) > 1:
            rcs = self.s.batch_put_from(keys, ptrs, sizes, self.config)
            if any(rc != 0 for rc in rcs):
                raise RuntimeError(f"batch_put_from returned {sorted(set(rcs))}")
        else:
            rc = self.s.put_from(keys[0], ptrs[0], sizes[0], self.config)
            if rc != 0:
                raise RuntimeError(f"put_from returned {rc}")

    def get(self, keys: List[str]) -> List[bytes]:
        return list(self.s.get_batch(keys)) if len(keys) > 1 else [self.s.get(keys[0])]

    def get_zc(self, keys: List[str], ptrs: List[int], sizes: List[int]) -> List[int]:
        if len(keys) > 1:
            return list(self.s.batch_get_into(keys, ptrs, sizes))
        return [self.s.get_into(keys[0], ptrs[0], sizes[0])]

    def remove(self, keys: List[str]) -> None:
        for k in keys:
            self.s.remove(k)

    def close(self) -> None:
        self.s.unregister_buffer(self.base)
        self.s.close()


class RedisAPI:
    """redis-py: SET/GET, MSET/MGET for a batch; no zero-copy calls."""

    def __init__(self, where: str) -> None:
        import redis

        if where.startswith("/"):
            self.r = redis.Redis(unix_socket_path=where)
        else:
            host, port = where.rsplit(":", 1)
            self.r = redis.Redis(host=host, port=int(port))
        self.r.ping()
        self.zero_copy = False

    def put(self, keys: List[str], values: List[bytes]) -> None:
        ok = self.r.mset(dict(zip(keys, values))) if len(keys) > 1 else self.r.set(keys[0], values[0])
        if not ok:
            raise RuntimeError("SET/MSET failed")

    def get(self, keys: List[str]) -> List[bytes]:
        return [v or b"" for v in self.r.mget(keys)] if len(keys) > 1 else [self.r.get(keys[0]) or b""]

    def remove(self, keys: List[str]) -> None:
        self.r.delete(*keys)

    def close(self) -> None:
        self.r.close()


def agent(kind: str, where: str) -> None:
    """--agent: one client, answering one JSON request per stdin line with one JSON line.
    {"op": "put"|"get", "zc": bool, "keys": [...], "sizes": [...], "file": PATH|null,
     "remove": bool}: a put writes the values in PATH (laid end to end) or fresh random bytes;
    a get compares with PATH when given. Replies {"t": seconds of the call alone} or
    {"error": why}."""
    api = RedisAPI(where) if kind == "redis" else MooncakeAPI(kind, where)
    print("ready", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "exit":
            break
        try:
            reply = serve(api, req)
        except Exception as e:  # reported to the driver, which stops with it
            reply = {"error": repr(e)}
        print(json.dumps(reply), flush=True)
    api.close()


def split(data: bytes, sizes: List[int]) -> List[bytes]:
    out, off = [], 0
    for n in sizes:
        out.append(data[off:off + n])
        off += n
    return out


def serve(api: Any, req: Dict[str, Any]) -> Dict[str, Any]:
    keys, sizes, zc = req["keys"], req["sizes"], req["zc"]
    expect = None
    if req.get("file"):
        with open(req["file"], "rb") as f:
            expect = f.read()
    if req["op"] == "put":
        data = expect if expect is not None else os.urandom(sum(sizes))
        values = split(data, sizes)
        if zc:
            ptrs, sizes = api.stage(values)
            t0 = time.perf_counter()
            api.put_zc(keys, ptrs, sizes)
        else:
            t0 = time.perf_counter()
            api.put(keys, values)
        t = time.perf_counter() - t0
        if req.get("remove"):
            api.remove(keys)
        return {"t": t}
    if req["op"] == "get":
        if zc:
            ptrs = api.slots(sizes)
            if expect is not None:
                ctypes.memset(api.base, 0xA5, sum(sizes))
            t0 = time.perf_counter()
            counts = api.get_zc(keys, ptrs, sizes)
            t = time.perf_counter() - t0
            if counts != sizes:
                raise RuntimeError(f"get_into read {counts}, wanted {sizes}")
            got = ctypes.string_at(api.base, sum(sizes)) if expect is not None else None
        else:
            t0 = time.perf_counter()
            values = api.get(keys)
            t = time.perf_counter() - t0
            if [len(v) for v in values] != sizes:
                raise RuntimeError(f"get returned sizes {[len(v) for v in values]}, wanted {sizes}")
            got = b"".join(values) if expect is not None else None
        if expect is not None and got != expect:
            raise RuntimeError("the bytes read differ from those written")
        return {"t": t}
    if req["op"] == "remove":
        api.remove(keys)
        return {"t": 0.0}
    raise ValueError(f"unknown op {req['op']}")


# -- the driver -------------------------------------------------------------------------------


class Agent:
    def __init__(self, label: str, python: str, kind: str, where: str, env: Dict[str, str],
                 log: Optional[str] = None) -> None:
        self.label = label
        self.log = log  # where its stderr goes (Mooncake's INFO lines would drown the table), else ours
        err = open(log, "w") if log else None
        self.proc = subprocess.Popen([python, os.path.abspath(__file__), "--agent", kind, where],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise SystemExit(f"{label}: the client did not start: {self.messages()}")

    def messages(self) -> str:
        if not self.log:
            return "see its messages above"
        with open(self.log) as f:
            return f.read()[-3000:]

    def ask(self, **req: Any) -> float:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.label}: the client exited: {self.messages()}")
        reply = json.loads(line)
        if "error" in reply:
            raise SystemExit(f"{self.label}: {req['op']} {'zero-copy ' if req.get('zc') else ''}"
                             f"{len(req['keys'])} x {req['sizes'][0]} B: {reply['error']}")
        return float(reply["t"])

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except Exception:
            self.proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode}) before it listened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port} within {timeout:.0f} s")


class Variant:
    """A store and its two clients (holder and reader)."""

    def __init__(self, name: str, a: argparse.Namespace, tmp: str) -> None:
        self.name = name
        self.servers: List[subprocess.Popen] = []
        self.holder: Optional[Agent] = None
        self.reader: Optional[Agent] = None
        env = dict(os.environ)
        if name.startswith("weft"):
            env.setdefault("WEFT_CLUSTER_SECRET", "bench-store-" + uuid.uuid4().hex)
            if name == "weft-tcp":
                port = free_port()
                master, where = f"tcp://127.0.0.1:{port}", f"127.0.0.1:{port}"
            else:
                master = where = os.path.join(tmp, "weft-store.sock")
            log = open(os.path.join(tmp, f"{name}-master.log"), "w")
            proc = subprocess.Popen([a.weft_cli, "store-master", "--set", f"coordinator={master}", "--set",
                                     f"rank_size={SEGMENT}"], stdout=log, stderr=subprocess.STDOUT, env=env)
            self.servers.append(proc)
            self.wait_log(proc, log.name, "listening on", "weft store-master")
            python, kind = a.weft_python, "weft.mooncake_store"
        elif name == "mooncake":
            if a.mooncake_ld_path:
                env["LD_LIBRARY_PATH"] = a.mooncake_ld_path + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
            env["MC_FORCE_TCP"] = "1"
            env["GLOG_minloglevel"] = "2"  # Mooncake's INFO lines would drown the table
            port = free_port()
            master_bin = a.mooncake_master or os.path.join(os.path.dirname(a.mooncake_python), "mooncake_master")
            log = open(os.path.join(tmp, "mooncake-master.log"), "w")
            proc = subprocess.Popen([master_bin, f"-rpc_port={port}", "-rpc_address=127.0.0.1",
                                     f"-metrics_port={free_port()}", "-enable_metric_reporting=false",
                                     "-enable_http_metadata_server=false"], stdout=log, stderr=subprocess.STDOUT,
                                    env=env)
            self.servers.append(proc)
            wait_port(port, proc, "mooncake_master")
            python, kind, where = a.mooncake_python, "mooncake.store", f"127.0.0.1:{port}"
        else:
            if not shutil.which(a.redis_server):
                raise SystemExit(f"{name}: {a.redis_server} not found: apt-get install -y redis-server "
                                 f"(or leave redis out: --variants)")
            port = free_port()
            sock = os.path.join(tmp, f"{name}.sock")
            proc = subprocess.Popen([a.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", sock,
                                     "--save", "", "--appendonly", "no", "--maxmemory", "0", "--protected-mode",
                                     "yes", "--dir", tmp, "--loglevel", "warning"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT)
            self.servers.append(proc)
            wait_port(port, proc, "redis-server")
            python, kind, where = a.redis_python, "redis", sock if name == "redis-unix" else f"127.0.0.1:{port}"
        label = NAMES[name]
        logs = [os.path.join(tmp, f"{name}-{role}.log") if name == "mooncake" else None for role in ("holder", "reader")]
        self.holder = Agent(label + " (holder)", python, kind, where, env, logs[0])
        self.reader = Agent(label + " (reader)", python, kind, where, env, logs[1])
        self.zero_copy = not name.startswith("redis")

    @staticmethod
    def wait_log(proc: subprocess.Popen, path: str, text: str, what: str, timeout: float = 30) -> None:
        end = time.time() + timeout
        while time.time() < end:
            with open(path) as f:
                if text in f.read():
                    return
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited ({proc.returncode}): {open(path).read()[-2000:]}")
            time.sleep(0.1)
        raise SystemExit(f"{what} did not start: {open(path).read()[-2000:]}")

    def close(self) -> None:
        for ag in (self.reader, self.holder):
            if ag:
                ag.close()
        for p in self.servers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()


def keys_for(prefix: str, n: int) -> List[str]:
    tag = uuid.uuid4().hex[:12]
    return [f"{prefix}/{tag}/{i}" for i in range(n)]


def verify(v: Variant, case: Dict[str, Any], tmp: str) -> None:
    """Fresh random bytes written by one client and read back by the other, compared."""
    n, size, zc = case["count"], case["size"], case["zc"]
    sizes = [size] * n
    path = os.path.join(tmp, "verify.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(n * size))
    keys = keys_for("verify", n)
    if case["op"] == "put":  # the reader writes, the holder reads
        v.reader.ask(op="put", zc=zc, keys=keys, sizes=sizes, file=path)
        v.holder.ask(op="get", zc=False, keys=keys, sizes=sizes, file=path)
    else:  # the holder writes, the reader reads
        v.holder.ask(op="put", zc=False, keys=keys, sizes=sizes, file=path)
        v.reader.ask(op="get", zc=zc, keys=keys, sizes=sizes, file=path)
    v.holder.ask(op="remove", zc=False, keys=keys, sizes=sizes)


def timed_call(v: Variant, case: Dict[str, Any], get_keys: List[str]):
    sizes = [case["size"]] * case["count"]
    if case["op"] == "put":
        return lambda: v.reader.ask(op="put", zc=case["zc"], keys=keys_for("put", case["count"]), sizes=sizes,
                                    remove=True)
    return lambda: v.reader.ask(op="get", zc=case["zc"], keys=get_keys, sizes=sizes)


def measure(fns: Dict[str, Any], seconds: float, rounds: int) -> Dict[str, Tuple[float, int]]:
    """Median seconds per call of each variant and the number of calls. The variants take turns
    call by call (the order shuffled each turn), so load from other work on this machine hits
    them alike. Each call returns its own duration (timed inside its client)."""
    for fn in fns.values():
        fn()  # warm: connections, first touches
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    order = list(fns)
    end = time.perf_counter() + seconds * rounds
    while True:
        random.shuffle(order)
        for name in order:
            samples[name].append(fns[name]())
        if time.perf_counter() >= end and min(len(s) for s in samples.values()) >= 5:
            break
    return {name: (statistics.median(s), len(s)) for name, s in samples.items()}


def fmt_us(t: Optional[float]) -> str:
    if t is None:
        return "-"
    return f"{t * 1e6:.1f}" if t < 1e-2 else f"{t * 1e6:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agent", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from " + ",".join(VARIANTS))
    ap.add_argument("--weft-cli", default="build/weft", help="the weft CLI (for `weft store-master`)")
    ap.add_argument("--weft-python", default=sys.executable, help="an interpreter that imports weft")
    ap.add_argument("--mooncake-python", help="an interpreter with the Mooncake wheel (without it: no Mooncake)")
    ap.add_argument("--mooncake-ld-path", default="", help="LD_LIBRARY_PATH for it (libibverbs, libnl)")
    ap.add_argument("--mooncake-master", help="mooncake_master (default: beside --mooncake-python)")
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--redis-python", default=sys.executable, help="an interpreter that imports redis (redis-py)")
    ap.add_argument("--cases", help="only the cases whose name contains one of these (comma-separated)")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args()
    if a.agent:
        agent(*a.agent)
        return

    wanted = [v.strip() for v in a.variants.split(",") if v.strip()]
    for v in wanted:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v}: choose from {', '.join(VARIANTS)}")
    if "mooncake" in wanted and not a.mooncake_python:
        print("bench_store: no --mooncake-python: the real Mooncake is left out", file=sys.stderr)
        wanted.remove("mooncake")
    if any(v.startswith("redis") for v in wanted):
        if not shutil.which(a.redis_server):
            raise SystemExit(f"bench_store: redis-server is missing ({a.redis_server}): apt-get install -y "
                             f"redis-server, or leave redis out with --variants")
        if subprocess.run([a.redis_python, "-c", "import redis"], capture_output=True).returncode != 0:
            raise SystemExit(f"bench_store: {a.redis_python} cannot import redis (redis-py): pip install redis")
    if any(v.startswith("weft") for v in wanted):
        if not os.access(a.weft_cli, os.X_OK):
            raise SystemExit(f"bench_store: no weft CLI at {a.weft_cli} (--weft-cli)")
        if subprocess.run([a.weft_python, "-c", "import weft.mooncake_store"], capture_output=True).returncode != 0:
            raise SystemExit(f"bench_store: {a.weft_python} cannot import weft.mooncake_store (--weft-python; "
                             f"pip install . builds it)")

    all_cases = cases()
    if a.cases:
        pats = [p.strip() for p in a.cases.split(",")]
        all_cases = [c for c in all_cases if any(p in c["name"] for p in pats)]

    tmp = tempfile.mkdtemp(prefix="bench-store-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    variants: Dict[str, Variant] = {}
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        for name in wanted:
            variants[name] = Variant(name, a, tmp)
        for case in all_cases:
            fns = {}
            held: List[Tuple[Variant, List[str]]] = []
            for name, v in variants.items():
                if case["zc"] and not v.zero_copy:
                    continue
                verify(v, case, tmp)
                keys = []
                if case["op"] == "get":  # the values the timed gets read, written by the holder
                    keys = keys_for("get", case["count"])
                    v.holder.ask(op="put", zc=False, keys=keys, sizes=[case["size"]] * case["count"])
                    held.append((v, keys))
                fns[name] = timed_call(v, case, keys)
            figures = measure(fns, a.seconds, a.rounds)
            for v, keys in held:
                v.holder.ask(op="remove", zc=False, keys=keys, sizes=[case["size"]] * len(keys))
            results[case["name"]] = {n: {"seconds": t, "calls": c} for n, (t, c) in figures.items()}
            print("  " + case["name"].ljust(28) + "  ".join(f"{NAMES[n]} {fmt_us(t)} us" for n, (t, _) in figures.items()),
                  file=sys.stderr, flush=True)
    finally:
        for v in variants.values():
            v.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nStore, two clients on this host; median time per call (us) over >= {a.rounds * a.seconds:g} s of "
          f"calls taking turns; speed-up = other's time / weft tcp's")
    cols = [n for n in VARIANTS if n in variants]
    ratio_cols = [(r, f"{NAMES[r]}/weft") for r in ("mooncake", "redis-unix", "redis-tcp") if r in variants
                  and "weft-tcp" in variants]
    if "weft-shm" in variants and "mooncake" in variants:
        ratio_cols.append(("mooncake-shm", "Mooncake/weft shm"))
    head = f"{'case':<26}" + "".join(f" | {NAMES[n]:>10}" for n in cols) + "".join(f" | {t:>18}" for _, t in ratio_cols)
    print(head)
    print("-" * len(head))
    for case in all_cases:
        row = results[case["name"]]
        t = {n: row[n]["seconds"] if n in row else None for n in cols}
        line = f"{case['name']:<26}" + "".join(f" | {fmt_us(t[n]):>10}" for n in cols)
        for r, _ in ratio_cols:
            if r == "mooncake-shm":
                num, den = t.get("mooncake"), t.get("weft-shm")
            else:
                num, den = t.get(r), t.get("weft-tcp")
            line += f" | {(f'{num / den:.2f}x' if num and den else '-'):>18}"
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"started": started, "seconds": a.seconds, "rounds": a.rounds, "segment_bytes": SEGMENT,
                       "variants": {n: NAMES[n] for n in cols}, "cases": all_cases,
                       "seconds_per_call": results, "command": sys.argv}, f, indent=1)


if __name__ == "__main__":
    main()
