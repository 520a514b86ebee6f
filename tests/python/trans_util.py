"""Helpers for the transfer-engine tests: a peer process (trans_peer.py) driven over its stdin and
stdout, and a metadata server process."""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from typing import Dict, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PEER = os.path.join(HERE, "trans_peer.py")
SHIM = os.path.join(REPO, "python", "shim")
REPLY_TIMEOUT = 120.0  # seconds for one answer of a peer: a broken peer fails the test, never hangs it


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_without_secret(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WEFT_CLUSTER_SECRET", "WEFT_PROTOCOL_FALLBACK",
                                                            "MC_FORCE_TCP", "MC_TRANSFER_TIMEOUT")}
    env.update(extra or {})
    return env


class Process:
    """A child process whose stdout lines are read by a thread, so reads can time out."""

    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.err: list = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err.append), daemon=True).start()

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line.rstrip("\n"))
        put(None)

    def readline(self, timeout: float = REPLY_TIMEOUT) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer from the child within {timeout} s; stderr: {self.stderr()}")
        if line is None:
            raise AssertionError(f"the child exited ({self.proc.poll()}); stderr: {self.stderr()}")
        return line

    def stderr(self) -> str:
        return "\n".join(x for x in self.err if x)[-4000:]

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)

    def exit(self) -> None:
        """Asks the child to exit ("exit" on its stdin), then kills it if it has not."""
        if self.proc.poll() is None:
            try:
                self.send("exit")
                self.proc.wait(timeout=30)
            except Exception:
                pass
        self.kill()

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


class Peer(Process):
    """trans_peer.py: a Mooncake-API engine with one registered buffer."""

    def __init__(self, hostname: str = "127.0.0.1", metadata: str = "P2PHANDSHAKE", size: int = 8 << 20,
                 module: str = "weft.mooncake", env: Optional[Dict[str, str]] = None, protocol: str = "tcp"):
        super().__init__([sys.executable, PEER, "--hostname", hostname, "--metadata", metadata, "--size", str(size),
                          "--module", module, "--protocol", protocol], env=env if env is not None else env_without_secret())
        line = self.readline()
        assert line.startswith("ready "), f"the peer did not start: {line!r} {self.stderr()}"
        _, self.name, addr, n = line.split()
        self.addr, self.size = int(addr), int(n)

    def ask(self, text: str) -> str:
        self.send(text)
        return self.readline()

    def sha(self, offset: int, length: int) -> str:
        answer = self.ask(f"sha {offset} {length}")
        assert answer.startswith("sha "), answer
        return answer.split()[1]

    def fill(self, offset: int, length: int, byte: int) -> None:
        assert self.ask(f"fill {offset} {length} {byte}") == "ok"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.resume()
                self.send("exit")
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                pass
        self.kill()


class MetadataProcess(Process):
    """A weft.MetadataServer (Mooncake's HTTP metadata protocol) in its own process."""

    def __init__(self):
        code = ("import sys, weft; s = weft.MetadataServer('127.0.0.1:0', allow_unauthenticated=True); print(s.port, flush=True); "
                "sys.stdin.read(); s.stop()")
        super().__init__([sys.executable, "-c", code], env=env_without_secret())
        self.port = int(self.readline())
        self.url = f"http://127.0.0.1:{self.port}/metadata"

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def require_gpu(test: str):
    """torch, for a module of GPU tests; skips the module, with the reason, where torch, a GPU or a
    CUDA build of weft is missing."""
    import pytest
    from weft import trans

    torch = pytest.importorskip("torch", reason=f"{test} needs torch with CUDA (pip install torch)")
    if not torch.cuda.is_available():
        pytest.skip(f"{test} needs a CUDA GPU: torch.cuda.is_available() is False", allow_module_level=True)
    usable, why_not = trans.device_status()
    if not usable:
        pytest.skip(f"{test} needs a CUDA build of weft: {why_not}", allow_module_level=True)
    return torch
