#!/usr/bin/env python3
"""Validates the navigator's default search against the exhaustive oracle (issue 8).

For each goal: `moenav tune --exhaustive` on one database (the oracle: every point measured at
the full workload; later goals reuse those measurements), and `moenav tune` in its default mode
on a fresh database of its own (so it measures everything it uses itself). The default mode's
recommendation is then looked up among the oracle's measurements and its objective compared
with the oracle's best feasible point. Prints one JSON object.

Two gaps are reported. `gap` compares single measurements taken up to twenty minutes apart, which
on a shared machine differ by tens of percent for identical configs (the oracle's best is then
partly the luckiest draw). `gap_paired` re-measures the two configs with `moenav bench`,
alternating them (ABBA) for --rounds rounds with the tuner's workload, and takes the median of
the per-round ratios: the fair comparison of two configs under drifting machine load.

usage: scripts/validate_tune.py [--moenav build/moenav] [--model models/tiny-mixtral] [--work DIR]
                                [--rounds 4] [--goals 0,1,2,3]
"""
import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import time

GOALS = [
    ("min latency", ["ppl <= 1.05*base"]),
    ("max throughput", ["ppl <= 1.10*base"]),
    ("min tpot", ["host_mem <= 0.8*base"]),
    ("min host_mem", ["tpot <= 1.25*base", "ppl <= 1.10*base"]),
]
LOWER_IS_BETTER = {"latency": True, "tpot": True, "ttft": True, "host_mem": True, "gpu_mem": True,
                   "ppl": True, "throughput": False}


def value(point, metric):
    m = point.get("full")
    if not m:
        return None
    if metric == "ppl":
        return point.get("ppl")
    if metric == "latency":
        return m["ttft_s"] + m["gen_tokens"] * m["tpot_s"]
    if metric == "throughput":
        return m["gen_tokens"] / (m["ttft_s"] + m["gen_tokens"] * m["tpot_s"])
    if metric in ("host_mem", "gpu_mem"):
        return m["peak_rss_bytes"]
    return m[metric + "_s"]


def bench_value(args, config, metric):
    command = [args.moenav, "bench", args.model, "--config", config, "--prompt-tokens", "512",
               "--gen-tokens", "128", "--reps", "3", "--warmup", "1", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    m = json.loads(done.stdout)
    latency = m["ttft_ms"]["median"] + m["gen_tokens"] * m["tpot_ms"]["median"]
    return {"latency": latency, "throughput": m["gen_tokens"] / latency, "tpot": m["tpot_ms"]["median"],
            "ttft": m["ttft_ms"]["median"], "host_mem": m["peak_rss_bytes"],
            "gpu_mem": m["peak_rss_bytes"]}[metric]


def paired_gap(args, best_config, pick_config, metric):
    """Median over ABBA rounds of the pick's objective relative to the best's (0 = as good)."""
    ratios = []
    for round_index in range(args.rounds):
        order = [best_config, pick_config] if round_index % 2 == 0 else [pick_config, best_config]
        values = {config: bench_value(args, config, metric) for config in order}
        best, pick = values[best_config], values[pick_config]
        ratios.append(pick / best if LOWER_IS_BETTER[metric] else best / pick)
    return statistics.median(ratios) - 1.0, [round(r - 1.0, 4) for r in ratios]


def latest_run(db):
    with sqlite3.connect(db) as connection:
        row = connection.execute("SELECT result FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    return json.loads(row[0])


def tune(args, db, objective, constraints, exhaustive):
    command = [args.moenav, "tune", args.model, "--objective", objective, "--db", db, "-q",
               "-o", db + ".json", "--report", ""]
    for constraint in constraints:
        command += ["--constraint", constraint]
    if exhaustive:
        command.append("--exhaustive")
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    return latest_run(db), time.time() - start, done.returncode


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--moenav", default="build/moenav")
    parser.add_argument("--model", default="models/tiny-mixtral")
    parser.add_argument("--work", default="build/validate-tune")
    parser.add_argument("--rounds", type=int, default=4, help="ABBA rounds of the paired re-measurement")
    parser.add_argument("--goals", default=",".join(str(i) for i in range(len(GOALS))),
                        help="indices into GOALS to validate, comma-separated (the oracle is measured once either way)")
    args = parser.parse_args()
    selected = {int(i) for i in args.goals.split(",")}
    os.makedirs(args.work, exist_ok=True)
    oracle_db = os.path.join(args.work, "oracle.db")
    rows = []
    for index, (objective, constraints) in enumerate(GOALS):
        if index not in selected:
            continue
        oracle, oracle_seconds, _ = tune(args, oracle_db, objective, constraints, True)
        oracle_config = os.path.join(args.work, f"oracle{index}.json")
        if os.path.exists(oracle_db + ".json"):
            shutil.copyfile(oracle_db + ".json", oracle_config)
        default_db = os.path.join(args.work, f"default{index}.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(default_db + suffix):
                os.remove(default_db + suffix)
        chosen, default_seconds, _ = tune(args, default_db, objective, constraints, False)
        metric = oracle["goal"]["objective_metric"]
        by_key = {p["key"]: p for p in oracle["points"]}
        best = oracle["points"][oracle["recommended"]] if oracle["recommended"] is not None else None
        pick = chosen["points"][chosen["recommended"]] if chosen["recommended"] is not None else None
        row = {"goal": oracle["goal"]["text"], "objective_metric": metric,
               "space": oracle["counts"]["space"], "oracle_measured": oracle["counts"]["measured_full"],
               "default_measured": chosen["counts"]["measured"],
               "default_measured_fraction": chosen["counts"]["measured"] / chosen["counts"]["space"],
               "oracle_seconds": round(oracle_seconds, 1), "default_seconds": round(default_seconds, 1)}
        if best and pick:
            best_value = value(best, metric)
            pick_in_oracle = value(by_key[pick["key"]], metric)
            ratio = pick_in_oracle / best_value if LOWER_IS_BETTER[metric] else best_value / pick_in_oracle
            row.update({"oracle_best": best["label"], "oracle_best_value": best_value,
                        "default_pick": pick["label"], "default_pick_value_own": value(pick, metric),
                        "default_pick_value_in_oracle": pick_in_oracle,
                        "default_pick_feasible_in_oracle": by_key[pick["key"]]["feasible"],
                        "gap": ratio - 1.0})
            if metric != "ppl":
                if pick["key"] == best["key"]:
                    row.update({"gap_paired": 0.0, "paired_rounds": "same config"})
                else:
                    gap, rounds = paired_gap(args, oracle_config, default_db + ".json", metric)
                    row.update({"gap_paired": gap, "paired_rounds": rounds})
        else:
            row.update({"oracle_best": best and best["label"], "default_pick": pick and pick["label"]})
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"validate_tune": rows}, indent=1))


if __name__ == "__main__":
    main()
