"""Throughput against concurrency, one panel per operation: the pool, the raw `cryptography`
ceiling and PyKMIP's server, drawn with matplotlib's Agg backend into a PNG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from benchmarks.report import CEILING, KMIP, POOL, Measurement

STYLE = {
    POOL: ("OpenMHSM pool", "tab:blue", "o-"),
    CEILING: ("raw cryptography", "tab:gray", "s--"),
    KMIP: ("PyKMIP server", "tab:red", "^:"),
}


def _minor_label(y: float, _: object) -> str:
    """Label 2 and 5 times a power of ten between the decades, nothing else (no crowding)."""
    return f"{y:g}" if f"{y:g}"[0] in "25" else ""


def draw(
    results: Sequence[Measurement], labels: dict[str, str], path: Path, title: str
) -> Path | None:
    """Write the chart to `path`; None (and nothing written) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return None
    ops = [op for op in labels if any(m.operation == op for m in results)]
    cols = min(4, len(ops)) or 1
    rows = math.ceil(len(ops) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, op in zip(axes.flat, ops, strict=False):
        for source, (name, color, fmt) in STYLE.items():
            points = sorted(
                (m.concurrency, m.rate) for m in results if m.operation == op and m.source == source
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, fmt, color=color, label=name, markersize=4)
        ax.set_title(labels[op], fontsize=10)
        ax.set_xscale("log", base=2)
        levels = sorted({m.concurrency for m in results if m.operation == op})
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(_minor_label))
        ax.set_xlabel("concurrency", fontsize=8)
        ax.set_ylabel("operations/s", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(ops) :]:
        ax.axis("off")
    legend: dict[str, object] = {}
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower right", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
