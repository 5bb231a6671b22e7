"""A/B of `bench/kafka_dispatch.py` children: alternate two runs on one topic and one function, pair by pair.

On a shared, noisy machine the load drifts by ±10-15% within minutes, so two figures measured minutes apart
(even two modes of one bench round) can differ by more than what separates them. Alternating A and B, and
taking the median of each pair's ratio, cancels the slow drift: the way to tell a few percent apart here.

    python bench/kafka_ab.py --a ref --b partition [--pairs 6]            # two modes, this checkout
    python bench/kafka_ab.py --a partition --b-repo ../other --pairs 6     # one mode, two checkouts
    python bench/kafka_ab.py --a partition --b-env EVENTBUS_X=1            # one mode, an environment switch

The first pair runs on a cold topic and function (about 25% slower in most sessions here): it is printed but
left out of the medians. Needs Kafka: EVENTBUS_KAFKA_BOOTSTRAP or .services.env (scripts/services up).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.kafka_dispatch import MODES, bootstrap, function_server, make_topic, run_child  # noqa: E402


def env_pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", choices=MODES, required=True, help="A's mode")
    ap.add_argument("--b", choices=MODES, help="B's mode (default: A's)")
    ap.add_argument("--a-repo", type=Path, default=REPO, help="A's checkout (default: this one)")
    ap.add_argument("--b-repo", type=Path, default=REPO, help="B's checkout (default: this one)")
    ap.add_argument("--a-env", action="append", default=[], metavar="NAME=VALUE", help="extra env for A")
    ap.add_argument("--b-env", action="append", default=[], metavar="NAME=VALUE", help="extra env for B")
    ap.add_argument("--pairs", type=int, default=6, help="pairs, the cold first one included")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = ap.parse_args()
    if args.pairs < 2:
        ap.error("--pairs must be at least 2 (the first one is the cold pair)")
    a = (args.a_repo.resolve(), args.a, env_pairs(args.a_env))
    b = (args.b_repo.resolve(), args.b or args.a, env_pairs(args.b_env))
    args.bootstrap = bootstrap()
    topic = asyncio.run(make_topic(args.bootstrap, args.partitions, args.events, hashed=False))
    with function_server() as (port, kind):
        gateway = f"http://127.0.0.1:{port}"
        print(f"function: {kind}; A = {a[1]} in {a[0]} {a[2] or ''}; B = {b[1]} in {b[0]} {b[2] or ''}",
              flush=True)
        eps: list[float] = []
        cpu: list[float] = []
        for i in range(args.pairs):
            first, second = (a, b) if i % 2 == 0 else (b, a)  # alternate who goes first
            r1 = run_child(first[1], args.loop, topic, gateway, args, repo=first[0], env=first[2])
            r2 = run_child(second[1], args.loop, topic, gateway, args, repo=second[0], env=second[2])
            ra, rb = (r1, r2) if first is a else (r2, r1)
            cold = " (cold: not counted)" if i == 0 else ""
            print(f"pair {i + 1}: A {ra['eps']:.0f} ev/s {ra['cpu_ms_per_1k']:.1f} CPU ms/1k | "
                  f"B {rb['eps']:.0f} ev/s {rb['cpu_ms_per_1k']:.1f} CPU ms/1k | "
                  f"B/A {rb['eps'] / ra['eps']:.3f}{cold}", flush=True)
            if i > 0:
                eps.append(rb["eps"] / ra["eps"])
                cpu.append(rb["cpu_ms_per_1k"] / ra["cpu_ms_per_1k"])
    print(f"B/A events/s: median {statistics.median(eps):.3f} (pairs {', '.join(f'{x:.2f}' for x in eps)})")
    print(f"B/A CPU per event: median {statistics.median(cpu):.3f}")


if __name__ == "__main__":
    main()
