"""``mooncake_master`` on weft: Mooncake's master command line, run as ``weft store-master``.

Mooncake's flags (gflags style: ``--flag=value``, ``--flag value``, ``--flag`` / ``--noflag`` for
booleans) are translated into ``weft store-master --set key=value`` overrides:

- ``--rpc_port`` / ``--port`` (50051) and ``--rpc_address`` (0.0.0.0):
  ``coordinator=tcp://<rpc_address>:<port>``, always given, so that clients' ``ip:port`` finds it;
- ``--default_kv_lease_ttl`` (ms): ``store_lease_ttl_ms``;
- ``--eviction_high_watermark_ratio`` (0..1): ``store_high_watermark_pct`` (integer percent);
- ``--eviction_ratio`` (0..1): ``store_eviction_pct`` (integer percent);
- ``--client_ttl`` (s): ``peer_timeout_ms`` (a client silent that long is dropped);
- ``--enable_http_metadata_server`` with ``--http_metadata_server_port`` (8080): ``--directory
  <rpc_address>:<port>``, weft's directory, which serves Mooncake's HTTP metadata protocol;
- ``--enable_ha`` with ``--ha_backend_connstring etcd://h1:2379;h2:2379`` (or ``--etcd_endpoints``;
  endpoints without a scheme are etcd's): ``--ha etcd://...``, one of several masters elected
  leader through etcd; the others stand by (docs/store.md, "High availability"). Clients name the
  same ``etcd://`` address as their master. With the default (wildcard) ``--rpc_address`` the
  coordinator is published as this host's name (``coordinator=tcp://<hostname>:<port>``) and
  binds the wildcard (``coordinator_listen``): peers on other machines cannot dial 0.0.0.0.
  Only etcd backends; ``--enable_ha`` without a connstring, or a redis/k8s one, is refused. The
  leader's lease and the time a new leader holds ranks for returning clients keep weft's defaults
  (5 s and 15 s); to tune them run ``weft store-master --ha ... --ha-lease-ms N --ha-rejoin-ms N``.

Only flags given are translated; the rest keep weft's defaults, which equal Mooncake's.
``--metrics_port`` has no weft equivalent yet: a note says so and it is ignored. Other flags are
warned about and ignored. weft's own overrides pass through as ``--set key=value`` (e.g. ``--set rank_size=1GiB``, which must match the clients'
global_segment_size). The ``weft`` executable is ``$WEFT_BIN`` or ``weft`` on PATH.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["translate", "main"]

# Flags that take a value, with the weft override each becomes (None: handled specially).
_VALUE_FLAGS = ("rpc_port", "port", "rpc_address", "default_kv_lease_ttl", "eviction_high_watermark_ratio",
                "eviction_ratio", "client_ttl", "ha_backend_connstring", "etcd_endpoints", "http_metadata_server_port",
                "metrics_port")
_BOOL_FLAGS = ("enable_ha", "enable_http_metadata_server")
_NOT_YET = {
    "metrics_port": "the Prometheus/admin HTTP endpoint",
}
DEFAULT_PORT = 50051
DEFAULT_HTTP_METADATA_PORT = 8080
DEFAULT_ADDRESS = "0.0.0.0"
_WILDCARDS = ("0.0.0.0", "::", "[::]")
_TRUE = ("", "1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _percent(flag: str, text: str) -> str:
    ratio = float(text)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"--{flag}={text}: a ratio in 0..1 is expected")
    return str(int(round(ratio * 100)))


def _non_negative_int(flag: str, text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"--{flag}={text}: a non-negative integer is expected")
    return value


def _split_flag(arg: str) -> Tuple[str, Optional[str]]:
    name, eq, value = arg.lstrip("-").partition("=")
    return name, (value if eq else None)


def _parse(argv: List[str], warn: Callable[[str], None]) -> Tuple[Dict[str, str], List[str]]:
    """Mooncake's flags as {name: text}, and weft's own ``--set key=value`` overrides."""
    flags: Dict[str, str] = {}
    passthrough: List[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--set" and i < len(argv):
            passthrough.append(argv[i])
            i += 1
            continue
        if not arg.startswith("-"):
            warn(f"ignoring the argument {arg!r}")
            continue
        name, value = _split_flag(arg)
        if name in _BOOL_FLAGS or (name.startswith("no") and name[2:] in _BOOL_FLAGS):
            negated = name not in _BOOL_FLAGS
            text = (value or "").lower()
            if text not in _TRUE + _FALSE:
                raise ValueError(f"--{name}={value}: true or false is expected")
            flags[name[2:] if negated else name] = "false" if negated or text in _FALSE else "true"
        elif name in _VALUE_FLAGS:
            if value is None:
                if i >= len(argv):
                    raise ValueError(f"--{name} needs a value")
                value = argv[i]
                i += 1
            flags[name] = value
        else:
            # An unknown flag's value may follow it; a lone token that is no flag is taken as it.
            if value is None and i < len(argv) and not argv[i].startswith("-"):
                i += 1
            warn(f"ignoring --{name}: weft's store master has no such setting")
    return flags, passthrough


def translate(argv: List[str], warn: Callable[[str], None] = lambda message: None,
              note: Callable[[str], None] = lambda message: None) -> List[str]:
    """The arguments of ``weft store-master`` for Mooncake's ``mooncake_master`` flags (without
    the executable). ValueError for a flag whose value cannot be read."""
    flags, passthrough = _parse(argv, warn)
    port = flags.get("rpc_port", flags.get("port", str(DEFAULT_PORT)))
    if "rpc_port" in flags and "port" in flags and flags["rpc_port"] != flags["port"]:
        warn(f"--port={flags['port']} is ignored: --rpc_port={flags['rpc_port']} wins")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port {port!r} is not in 1..65535")
    address = flags.get("rpc_address", DEFAULT_ADDRESS)
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    ha = _ha(flags, warn)
    sets = [f"coordinator=tcp://{host}:{port}"]
    if ha and address in _WILDCARDS:
        # The elected master publishes its coordinator's address for clients on other machines.
        published = socket.gethostname()
        note(f"--enable_ha: the coordinator is published as tcp://{published}:{port} and binds {host}:{port}")
        sets = [f"coordinator=tcp://{published}:{port}", f"coordinator_listen={host}:{port}"]
    if "default_kv_lease_ttl" in flags:
        sets.append(f"store_lease_ttl_ms={_non_negative_int('default_kv_lease_ttl', flags['default_kv_lease_ttl'])}")
    if "eviction_high_watermark_ratio" in flags:
        sets.append("store_high_watermark_pct=" + _percent("eviction_high_watermark_ratio",
                                                           flags["eviction_high_watermark_ratio"]))
    if "eviction_ratio" in flags:
        sets.append("store_eviction_pct=" + _percent("eviction_ratio", flags["eviction_ratio"]))
    if "client_ttl" in flags:
        sets.append(f"peer_timeout_ms={_non_negative_int('client_ttl', flags['client_ttl']) * 1000}")
    for name, what in _NOT_YET.items():
        if name in flags and flags[name] != "false":
            note(f"--{name}: {what} is not supported by weft yet; ignored")
    sets.extend(passthrough)
    args = ["store-master"]
    for item in sets:
        args += ["--set", item]
    return args + (["--ha", ha] if ha else []) + _directory(flags, host, warn)


def _ha(flags: Dict[str, str], warn: Callable[[str], None]) -> str:
    """The etcd connstring of HA masters, or "" without --enable_ha. ValueError for an HA
    setting weft cannot serve."""
    connstring = flags.get("ha_backend_connstring", flags.get("etcd_endpoints", ""))
    if flags.get("enable_ha") != "true":
        if connstring:
            warn("--ha_backend_connstring / --etcd_endpoints are ignored without --enable_ha")
        return ""
    if not connstring:
        raise ValueError("--enable_ha needs --ha_backend_connstring etcd://host:port[;host:port]")
    if "://" not in connstring:
        connstring = "etcd://" + connstring  # Mooncake's etcd endpoints are written without a scheme
    if not connstring.startswith("etcd://"):
        raise ValueError(f"--ha_backend_connstring={connstring}: weft elects masters through etcd only "
                         "(etcd://host:port[;host:port])")
    return connstring


def _directory(flags: Dict[str, str], host: str, warn: Callable[[str], None]) -> List[str]:
    """Mooncake's embedded HTTP metadata server as weft's directory (same protocol), on the
    master's address."""
    port = flags.get("http_metadata_server_port", str(DEFAULT_HTTP_METADATA_PORT))
    if flags.get("enable_http_metadata_server") != "true":
        if "http_metadata_server_port" in flags:
            warn("--http_metadata_server_port is ignored without --enable_http_metadata_server")
        return []
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--http_metadata_server_port={port}: not in 1..65535")
    return ["--directory", f"{host}:{port}"]


def weft_executable() -> Optional[str]:
    return os.environ.get("WEFT_BIN") or shutil.which("weft")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help", "-help", "--helpfull"):
        print(__doc__)
        return 0
    say = lambda prefix: (lambda message: print(f"mooncake_master ({prefix}): {message}", file=sys.stderr))  # noqa: E731
    try:
        args = translate(argv, warn=say("warning"), note=say("note"))
    except ValueError as e:
        print(f"mooncake_master: {e}", file=sys.stderr)
        return 2
    weft = weft_executable()
    if weft is None:
        print("mooncake_master: the `weft` executable is not on PATH (or set WEFT_BIN); it runs the master as "
              f"`weft {' '.join(args)}`", file=sys.stderr)
        return 127
    print(f"mooncake_master: exec {weft} {' '.join(args)}", file=sys.stderr, flush=True)
    os.execv(weft, [weft] + args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
