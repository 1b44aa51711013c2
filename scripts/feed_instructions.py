#!/usr/bin/env python3
"""Instructions per line of Aggregator.feed, counted by callgrind: reproducible on a
noisy machine, where lines/s are not.

    .venv/bin/python scripts/feed_instructions.py [--code DIR]

For each traffic shape of scripts/bench_load.c (realistic mix, friendly), 1,000
datagrams are captured from the generator; ``feed`` runs over them once to learn the
names, then twice more; a run without the two passes is subtracted. ``--code`` points
at a checkout (built in place) to measure; given more than once, each is measured on the
same captured datagrams (the generator's values differ between captures, by ~10% in
instructions), with hash randomization off, so the figures compare side by side.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"mix": 10_000, "friendly": 2_000}  # shape -> names

CHILD = r"""
import logging, pickle, sys
sys.path.insert(0, sys.argv[1])
from collector.aggregator import Aggregator
from collector.config import CollectorConfig
from collector.stats import CollectorStats
logging.disable(logging.WARNING)
dgrams = pickle.load(open(sys.argv[2], "rb"))
agg = Aggregator(CollectorConfig(max_metrics=10**6, max_pending_buckets=10**7),
                 CollectorStats())
for d in dgrams:
    agg.feed(d, 1_800_000_000)
for _ in range(int(sys.argv[3])):
    for d in dgrams:
        agg.feed(d, 1_800_000_000)
"""


def capture(exe: Path, shape: str, count: int = 1000) -> list[bytes]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.bind(("127.0.0.1", 0))
    subprocess.run([str(exe), "udp-send", "127.0.0.1", str(rx.getsockname()[1]), "0", "0.01",
                    "0", str(SHAPES[shape]), "mix000", "1", shape], check=True,
                   capture_output=True)
    rx.setblocking(False)
    out: list[bytes] = []
    try:
        while len(out) < count:
            out.append(rx.recv(2048))
    except BlockingIOError:
        pass
    rx.close()
    return out


def instructions(code: Path, data: Path, reps: int) -> int:
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-c", CHILD, str(code), str(data), str(reps)],
        check=True, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(result.stderr[-2000:])
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, action="append",
                        help="checkout to measure (repeat to compare; default: this one)")
    args = parser.parse_args()
    codes: list[Path] = args.code or [ROOT]
    with tempfile.TemporaryDirectory(prefix="gf_instr_") as tmp:
        exe = Path(tmp) / "bench_load"
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "scripts" / "bench_load.c")],
                       check=True)
        for shape in SHAPES:
            dgrams = capture(exe, shape)
            data = Path(tmp) / f"{shape}.pkl"
            data.write_bytes(pickle.dumps(dgrams))
            lines = 2 * sum(d.count(b"\n") + (not d.endswith(b"\n")) for d in dgrams)
            for code in codes:
                extra = instructions(code, data, 2) - instructions(code, data, 0)
                label = f" [{code}]" if len(codes) > 1 else ""
                print(f"{shape}: {extra / lines:,.0f} instructions per line "
                      f"({len(dgrams)} datagrams, {lines} lines fed){label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
