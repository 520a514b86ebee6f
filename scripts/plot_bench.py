#!/usr/bin/env python3
"""Plot `weft bench --json` results: bandwidth against block size.

    python3 scripts/plot_bench.py bench.json bench.png

One panel per (threads, batch) combination; in each, one line per direction (weft) and a
dashed line for the memcpy baseline of the same run (the mean over the directions' baseline
rows, which all copy the same bytes between two local buffers). The x axis is log2.

Exit status: 0 plot written, 2 bad arguments or unreadable JSON, 3 matplotlib missing
(`make deps` installs it). `weft bench --png` relies on these codes.
"""
import json
import sys


def human(nbytes):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or nbytes % 1024:
            return f"{nbytes:g}{unit}"
        nbytes //= 1024
    return f"{nbytes:g}PiB"


def main(argv):
    if len(argv) != 3:
        print("usage: plot_bench.py BENCH.json OUT.png", file=sys.stderr)
        return 2
    json_path, png_path = argv[1], argv[2]
    try:
        with open(json_path) as f:
            doc = json.load(f)
        rows = doc["rows"]
    except (OSError, ValueError, KeyError) as e:
        print(f"plot_bench: cannot read {json_path}: {e}", file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, FuncFormatter
    except ImportError as e:
        print(f"plot_bench: matplotlib is missing ({e}); install it with `make deps` "
              "or `python3 -m pip install matplotlib`", file=sys.stderr)
        return 3

    combos = sorted({(r["threads"], r["batch"]) for r in rows})
    if not combos:
        print(f"plot_bench: {json_path} has no rows", file=sys.stderr)
        return 2
    fig, axes = plt.subplots(len(combos), 1, figsize=(9, 4.8 * len(combos)), squeeze=False)
    blocks_all = sorted({r["block"] for r in rows})
    for ax, (threads, batch) in zip(axes[:, 0], combos):
        sel = [r for r in rows if r["threads"] == threads and r["batch"] == batch]
        directions = []
        for r in sel:
            if r["label"] not in directions:
                directions.append(r["label"])
        for label in directions:
            pts = sorted((r["block"], r["weft_gbps"], r["path"]) for r in sel if r["label"] == label)
            path = pts[0][2] if pts else ""
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"weft {label} ({path})")
        base = {}
        for r in sel:
            base.setdefault(r["block"], []).append(r["memcpy_gbps"])
        xs = sorted(base)
        ax.plot(xs, [sum(base[x]) / len(base[x]) for x in xs], "k--", marker="s",
                label=f"memcpy baseline ({threads} threads)")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(blocks_all))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human(int(round(v)))))
        ax.xaxis.set_minor_locator(FixedLocator([]))
        ax.set_xlabel("block size")
        ax.set_ylabel("GB/s (1e9 B/s)")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_title(f"copy_threads={threads}, batch={batch}")
        ax.legend(fontsize=8)
    m = doc.get("machine", {})
    fig.suptitle(f"weft bench {doc.get('weft_version', '')}: {m.get('cpu_model', '?')}, "
                 f"{m.get('nproc', '?')} CPUs, {doc.get('settings', {}).get('statistic', '').split(',')[0]}",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    try:
        fig.savefig(png_path, dpi=110)
    except OSError as e:
        print(f"plot_bench: cannot write {png_path}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
