"""Slow and lossy links made with what every kernel we run on has built in: `htb`, `bfifo`,
`pfifo` and `cls_bpf`. Some kernels (this project's CI among them) have no `sch_netem`.

The tree on one device:
- root `htb`, default class 1:1, rate-limited to `rate_kbit` (or the line rate). Its leaf is a
  `bfifo` that holds `queue_ms` of traffic at that rate and drops what does not fit (tail drop);
- class 1:2 with a `pfifo limit 0` leaf, which drops every packet sent to it;
- a classic-BPF classifier (`tc ... bpf bytecode`) sends a random `loss_percent` % of packets to
  1:2. Classic BPF reads a fresh random number per packet (`ld rand`).

`commands` says what `tc` must run; the caller runs it, in a namespace or not. Deleting the root
qdisc removes the whole tree, classifier included.
"""

from __future__ import annotations

from dataclasses import dataclass

LINE_RATE = "10gbit"
MTU_FRAME = 1514  # one full Ethernet frame; a queue or a quantum smaller than this passes none
_LD_RANDOM = 0xFFFFF038  # `ld rand`: BPF_LD|BPF_W|BPF_ABS at SKF_AD_OFF + SKF_AD_RANDOM
_DROP_CLASSID = 0x10002  # 1:2


@dataclass(frozen=True)
class Shape:
    """What a link does to the packets a device sends."""

    rate_kbit: int | None = None  # None: the line rate
    queue_ms: int = 0  # with a rate: how long traffic may wait before it is dropped
    loss_percent: float = 0.0  # packets dropped at random

    def __post_init__(self) -> None:
        if self.rate_kbit is not None and self.rate_kbit <= 0:
            raise ValueError("rate_kbit must be positive")
        if not 0.0 <= self.loss_percent <= 100.0:
            raise ValueError("loss_percent must be between 0 and 100")

    def describe(self) -> str:
        parts = []
        if self.rate_kbit is not None:
            parts.append(f"{self.rate_kbit} kbit/s, {self.queue_ms} ms queue")
        if self.loss_percent:
            parts.append(f"{self.loss_percent:g} % random loss")
        return ", ".join(parts) or "unshaped"


def random_drop_bytecode(percent: float) -> str:
    """Classic BPF for `tc ... bpf bytecode`: a random `percent` % of packets get the drop
    class (1:2); the others match nothing and take the default class."""
    threshold = min(round(percent / 100 * 2**32), 2**32 - 1)
    program = [
        (0x20, 0, 0, _LD_RANDOM),  # A = random u32
        (0x35, 1, 0, threshold),  # if A >= threshold: skip to "no match"
        (0x06, 0, 0, _DROP_CLASSID),  # return the drop class
        (0x06, 0, 0, 0),  # return 0: no match
    ]
    return ",".join([str(len(program)), *(" ".join(map(str, op)) for op in program)])


def commands(dev: str, shape: Shape) -> list[list[str]]:
    """The `tc` argument lists that give `dev` this shape, replacing what it had."""
    rate = f"{shape.rate_kbit}kbit" if shape.rate_kbit is not None else LINE_RATE
    htb_class = ["htb", "rate", rate, "ceil", rate, "quantum", str(MTU_FRAME)]
    steps = [
        ["qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1"],
        ["class", "add", "dev", dev, "parent", "1:", "classid", "1:1", *htb_class],
    ]
    if shape.rate_kbit is not None:
        queued = shape.rate_kbit * 1000 // 8 * shape.queue_ms // 1000
        limit = max(2 * MTU_FRAME, queued + MTU_FRAME)
        steps.append(["qdisc", "add", "dev", dev, "parent", "1:1", "bfifo", "limit", str(limit)])
    if shape.loss_percent:
        drop_class = ["htb", "rate", LINE_RATE, "quantum", str(MTU_FRAME)]
        steps += [
            ["class", "add", "dev", dev, "parent", "1:", "classid", "1:2", *drop_class],
            ["qdisc", "add", "dev", dev, "parent", "1:2", "pfifo", "limit", "0"],
            ["filter", "add", "dev", dev, "parent", "1:", "protocol", "all", "prio", "1",
             "bpf", "bytecode", random_drop_bytecode(shape.loss_percent)],
        ]  # fmt: skip
    return steps


def parse_stats(text: str) -> tuple[int, int]:
    """(packets, dropped) of the first qdisc in `tc -s qdisc show` output ("Sent B bytes P pkt
    (dropped D, ..."): the root, which counts its children's drops too."""
    words = text.replace(",", " ").split()
    if "Sent" not in words:
        return 0, 0
    at = words.index("Sent")
    return int(words[at + 3]), int(words[at + 6])
