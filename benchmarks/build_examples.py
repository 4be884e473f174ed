"""Example building to sharded TFRecords: in-memory builder, streaming writer, Beam DirectRunner.

On the synthetic "large" preset (200,000 users, 1,000,000 videos, about 10M watches, searches
and demographics), each builder runs in its own subprocess (so each peak RSS is its own,
including generating the log) and writes the examples directory of DESIGN.md section 4:

- `in_memory`: `write_examples(build_examples(log))`, the reference;
- `streaming`: `build_examples_to_records(log)`, chunk of users by chunk (bounded memory);
- `beam`: `build_examples_beam(log)` on the DirectRunner (`--beam-watches` can run it on a
  smaller log, and the table then says so).

A child that exceeds `--memory-limit` (RLIMIT_AS) or `--timeout` is reported as such, not
hidden. `--watches` scales the log down (fewer users, same catalogue) for a quick check.

Usage: python benchmarks/build_examples.py [--preset large] [--watches N] [--shards 16]
    [--beam-watches N] [--memory-limit 20] [--beam-memory-limit G] [--limit in_memory]
    [--timeout 3600] [--variants in_memory streaming beam]
Prints wall time, peak RSS and examples per variant, with ratios against `in_memory`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VARIANTS = ("in_memory", "streaming", "beam")


def _log(preset: str, watches: int | None, seed: int):
    from tfrs_youtube.data import SyntheticConfig, generate_synthetic_log

    config = SyntheticConfig.preset(preset)
    overrides = {}
    if watches:
        expected = config.num_users * config.mean_watches_per_user
        overrides["num_users"] = max(2, round(config.num_users * watches / expected))
    return generate_synthetic_log(config, seed=seed, **overrides).log


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    cap = _memory_limit(args, variant)
    if cap and variant in args.limit:
        limit = int(cap * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import tfrs_youtube  # noqa: F401
    from tfrs_youtube.data import (
        build_examples,
        build_examples_to_records,
        read_manifest,
        write_examples,
    )

    watches = args.beam_watches if variant == "beam" and args.beam_watches else args.watches
    start = time.perf_counter()
    log = _log(args.preset, watches, args.seed)
    log_seconds = time.perf_counter() - start
    output = os.path.join(args.workdir, variant)
    build = dict(max_history=args.max_history, examples_per_user=args.examples_per_user)
    start = time.perf_counter()
    if variant == "in_memory":
        write_examples(build_examples(log, **build), output, shards=args.shards, **build)
    elif variant == "streaming":
        build_examples_to_records(log, output, shards=args.shards, **build)
    else:
        from tfrs_youtube.data.beam_pipeline import build_examples_beam

        flags = ["--runner=DirectRunner", f"--direct_num_workers={args.beam_workers}",
                 f"--direct_running_mode={args.beam_mode}"]  # fmt: skip
        build_examples_beam(log, output, shards=args.shards, pipeline_options=flags, **build)
    seconds = time.perf_counter() - start
    manifest = read_manifest(output)
    return {
        "watches": len(log),
        "log_seconds": log_seconds,
        "build_seconds": seconds,
        "train_examples": manifest["splits"]["train"]["num_examples"],
        "holdout_examples": manifest["splits"]["holdout"]["num_examples"],
        "catalogue": manifest["num_catalogue"],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _memory_limit(args: argparse.Namespace, variant: str) -> float | None:
    if variant == "beam" and args.beam_memory_limit:
        return args.beam_memory_limit
    return args.memory_limit


def _child(args: argparse.Namespace, variant: str) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--workdir", args.workdir]
    for name in ("preset", "watches", "beam_watches", "shards", "max_history",
                 "examples_per_user", "memory_limit", "beam_memory_limit", "seed",
                 "beam_workers", "beam_mode"):
        value = getattr(args, name)
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]  # fmt: skip
    command += ["--limit", *args.limit]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {args.timeout:.0f} s"}
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        memory = "MemoryError" in done.stderr or "bad_alloc" in done.stderr
        reason = (f"out of memory (limit {_memory_limit(args, variant)} GiB)" if memory
                  else tail[:120])
        return {"failed": f"exit {done.returncode}: {reason}", "wall_seconds": wall}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = wall
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="large")
    parser.add_argument("--watches", type=int, default=None, help="scale the log to about N")
    parser.add_argument("--beam-watches", type=int, default=None,
                        help="a smaller log for the Beam DirectRunner (reported as such)")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--max-history", type=int, default=50)
    parser.add_argument("--examples-per-user", type=int, default=None)
    parser.add_argument("--memory-limit", type=float, default=20.0,
                        help="GiB of address space (RLIMIT_AS) per child of --limit")
    parser.add_argument("--beam-memory-limit", type=float, default=None,
                        help="GiB of RLIMIT_AS for the beam child (default: --memory-limit)")
    parser.add_argument("--limit", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="the variants the memory limit applies to")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per child")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--beam-workers", type=int, default=1)
    parser.add_argument("--beam-mode", default="in_memory",
                        choices=["in_memory", "multi_threading", "multi_processing"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return 0

    print(f"Example building: preset {args.preset}, watches {args.watches or 'preset'}, "
          f"shards {args.shards}, max_history {args.max_history}, examples_per_user "
          f"{args.examples_per_user}, memory limit {args.memory_limit} GiB (RLIMIT_AS; beam "
          f"{_memory_limit(args, 'beam')} GiB) for {' '.join(args.limit)}",
          flush=True)  # fmt: skip
    results = {}
    args.workdir = tempfile.mkdtemp(prefix="build_examples_bench.")
    try:
        for variant in args.variants:
            print(f"  running {variant} ...", flush=True)
            results[variant] = _child(args, variant)
            shutil.rmtree(os.path.join(args.workdir, variant), ignore_errors=True)
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)

    reference = results.get("in_memory", {})
    print()
    print("| variant | watches | train examples | build s | wall s (incl. log) | peak RSS (GiB) "
          "| build time vs in_memory | peak RSS vs in_memory |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if "failed" in r:
            wall = f"{r['wall_seconds']:.1f}" if "wall_seconds" in r else "-"
            print(f"| {name} | - | - | - | {wall} | - | {r['failed']} | |")
            continue
        same_log = reference and "failed" not in reference and reference["watches"] == r["watches"]
        ratio_t = f"{r['build_seconds'] / reference['build_seconds']:.2f}x" if same_log else "n/a"
        ratio_m = f"{r['peak_rss_gib'] / reference['peak_rss_gib']:.2f}x" if same_log else "n/a"
        print(f"| {name} | {r['watches']:,} | {r['train_examples']:,} | {r['build_seconds']:.1f} "
              f"| {r['wall_seconds']:.1f} | {r['peak_rss_gib']:.2f} | {ratio_t} | {ratio_m} |")
    ran = [r for r in results.values() if "failed" not in r]
    largest = max((r["watches"] for r in ran), default=0)
    if "failed" in reference:
        print("note: in_memory (the reference) failed: no ratios.")
    for name, r in results.items():
        if "failed" not in r and r["watches"] < largest:
            print(f"note: {name} ran on a smaller log ({r['watches']:,} watches than "
                  f"{largest:,}; --beam-watches), no ratio.")
    if "streaming" in results and "failed" not in results["streaming"]:
        peak = results["streaming"]["peak_rss_gib"]
        print(f"streaming writer peak RSS {peak:.2f} GiB (target <= 4 GB incl. the log)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
