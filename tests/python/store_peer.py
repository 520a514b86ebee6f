"""The second peer of tests/python/test_store.py, run as its own process:

    python store_peer.py MASTER SEGMENT_SIZE

Sets up a MooncakeDistributedStore on the master the test hosts (a unix socket path), registers
a zero-copy arena, prints "ready", then answers one JSON request per stdin line with one JSON
line on stdout, until "exit". Values travel between the processes as files the test wrote (for
this peer to put) or expects (for this peer to read and compare), never through the pipe, so
that the store is the only path the bytes take.

Requests:
  {"op": "write", "api": "mc"|"weft", "call": NAME, "keys": [...], "files": [...]}
      -> {"result": ...}: the Mooncake call's int / list of ints, or for weft the error names
         (None per stored key)
  {"op": "describe", "keys": [...]}
      -> {"result": {key: [[transport_endpoint, buffer_address, size], ...]}}: batch_get_replica_desc's
         memory replicas of the keys it found
  {"op": "check", "keys": [...], "files": [...]}
      -> {"result": [...]}: per key "ok" when get, get_into, batch_get_into and weft's get all
         gave every byte of its file, else what differed
  {"op": "exit"}
"""

import json
import os
import sys

import numpy as np

from weft.mooncake_store import MooncakeDistributedStore

ARENA_BYTES = 16 << 20
POISON = 0xC3


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Peer:
    def __init__(self, master, segment):
        self.mc = MooncakeDistributedStore()
        code = self.mc.setup({"local_hostname": "127.0.0.1", "global_segment_size": segment,
                              "master_server_addr": master, "protocol": "tcp"})
        if code != 0:
            raise SystemExit(f"setup failed: {code}")
        self.weft = self.mc.weft_store
        self.arena = np.full(ARENA_BYTES, POISON, dtype=np.uint8)
        self.base = self.arena.ctypes.data
        if self.mc.register_buffer(self.base, ARENA_BYTES) != 0:
            raise SystemExit("register_buffer failed")

    # -- writes -------------------------------------------------------------------------------

    def stage(self, values):
        """The values copied into the arena, end to end: their addresses and sizes."""
        ptrs, sizes, offset = [], [], 0
        for value in values:
            self.arena[offset:offset + len(value)] = np.frombuffer(value, dtype=np.uint8)
            ptrs.append(self.base + offset)
            sizes.append(len(value))
            offset += len(value)
        return ptrs, sizes

    def write_mc(self, call, keys, values):
        mc = self.mc
        if call in ("put", "upsert"):
            return [getattr(mc, call)(k, v) for k, v in zip(keys, values)]
        if call in ("put_parts", "upsert_parts"):  # each value in three parts
            return [getattr(mc, call)(k, v[: len(v) // 3], v[len(v) // 3: len(v) // 2], v[len(v) // 2:])
                    for k, v in zip(keys, values)]
        if call in ("put_batch", "upsert_batch"):
            return getattr(mc, call)(keys, values)
        ptrs, sizes = self.stage(values)
        if call in ("put_from", "upsert_from"):
            return [getattr(mc, call)(k, p, n) for k, p, n in zip(keys, ptrs, sizes)]
        if call in ("batch_put_from", "batch_upsert_from"):
            return getattr(mc, call)(keys, ptrs, sizes)
        if call == "put_from_with_metadata":  # the first third of each value as its metadata
            return [mc.put_from_with_metadata(k, p + n // 3, p, n - n // 3, n // 3) for k, p, n in zip(keys, ptrs, sizes)]
        raise ValueError(f"unknown call {call}")

    def write_weft(self, call, keys, values):
        store = self.weft
        name = lambda err: None if err is None else err.name  # noqa: E731
        if call in ("put", "upsert", "put_parts"):
            out = []
            for k, v in zip(keys, values):
                try:
                    if call == "put_parts":
                        store.put_parts(k, [v[:1], memoryview(v)[1:]])
                    else:
                        getattr(store, call)(k, bytearray(v))
                    out.append(None)
                except Exception as e:  # the test compares the names
                    out.append(getattr(e, "name", repr(e)))
            return out
        if call == "put_batch":
            return [name(e) for e in store.put_batch(keys, values)]
        if call == "batch_put_from":
            self.stage(values)
            views, offset = [], 0
            for v in values:
                views.append(self.arena[offset:offset + len(v)])
                offset += len(v)
            return [name(e) for e in store.batch_put_from(keys, views)]
        raise ValueError(f"unknown call {call}")

    # -- reads --------------------------------------------------------------------------------

    def check(self, keys, files):
        expected = [read(f) for f in files]
        verdicts = []
        got_batch = self.mc.get_batch(keys)
        self.arena[:] = POISON
        ptrs, offset = [], 0
        for value in expected:
            ptrs.append(self.base + offset)
            offset += len(value) + 64
        counts = self.mc.batch_get_into(keys, ptrs, [len(v) for v in expected])
        for i, (key, value) in enumerate(zip(keys, expected)):
            start = ptrs[i] - self.base
            problems = []
            if self.mc.get(key) != value:
                problems.append("get")
            if got_batch[i] != value:
                problems.append("get_batch")
            if counts[i] != len(value) or self.arena[start:start + len(value)].tobytes() != value:
                problems.append(f"batch_get_into ({counts[i]})")
            if self.arena[start + len(value):start + len(value) + 64].tobytes() != bytes([POISON]) * 64:
                problems.append("batch_get_into wrote past the value")
            one = bytearray(b"\x5a" * len(value))
            self.weft.register_buffer(one)
            n = self.mc.get_into(key, one, len(one))
            self.weft.unregister_buffer(one)
            if n != len(value) or bytes(one) != value:
                problems.append(f"get_into ({n})")
            if self.weft.get(key) != value:
                problems.append("weft get")
            if self.mc.get_size(key) != len(value) or self.mc.is_exist(key) != 1:
                problems.append("get_size/is_exist")
            verdicts.append("ok" if not problems else ", ".join(problems))
        return verdicts

    def serve(self, request):
        op = request["op"]
        if op == "write":
            values = [read(f) for f in request["files"]]
            if request["api"] == "mc":
                return self.write_mc(request["call"], request["keys"], values)
            return self.write_weft(request["call"], request["keys"], values)
        if op == "check":
            return self.check(request["keys"], request["files"])
        if op == "describe":
            found = self.mc.batch_get_replica_desc(request["keys"])
            return {key: [[d.get_memory_descriptor().buffer_descriptor.transport_endpoint,
                           d.get_memory_descriptor().buffer_descriptor.buffer_address,
                           d.get_memory_descriptor().buffer_descriptor.size] for d in descs if d.is_memory_replica()]
                    for key, descs in found.items()}
        raise ValueError(f"unknown op {op}")


def main():
    peer = Peer(sys.argv[1], sys.argv[2])
    print(f"ready {peer.weft.rank}", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "exit":
            break
        try:
            reply = {"result": peer.serve(request)}
        except Exception as e:  # reported to the test, which fails with it
            reply = {"error": repr(e)}
        print(json.dumps(reply), flush=True)
    print(json.dumps({"closed": peer.mc.close()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
