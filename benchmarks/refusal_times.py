"""How long each kind of bad input takes to be refused on the command line (wall time of the
whole ``rollwise`` process, interpreter start and imports included), and its one-line message.

Builds its inputs in a temporary folder (a GPS selector over a small prompt file, an earlier run's
folder, a task file with a null answer); no model is loaded by any case. Writes
benchmarks/results/refusal_times.{json,md}.

    python benchmarks/refusal_times.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rollwise._io import atomic_write_json, atomic_write_report

ROLLWISE = [sys.executable, "-m", "rollwise.cli"]


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """(what, argv) for every refusal measured; builds their inputs under ``tmp``."""
    import rollwise
    from rollwise.feedback.prompt_files import load_prompt_file

    pool_file = tmp / "pool.json"
    pool_file.write_text(json.dumps([{"problem": f"compute {i} + {i}", "answer": str(2 * i)}
                                     for i in range(60)]))
    ps = load_prompt_file(pool_file)
    pool = rollwise.PromptPool.from_texts(ps.texts, ids=ps.ids, embedder="hashing")
    rollwise.make_selector("gps", pool, 4, seed=0).save(tmp / "sel.pt")
    earlier = tmp / "earlier"
    (earlier / "checkpoint-5").mkdir(parents=True)
    (earlier / "rollwise_run.json").write_text("{}")
    null_task = tmp / "task.json"
    null_task.write_text(json.dumps([{"problem": "1 + 1", "answer": None},
                                     {"problem": "2 + 2", "answer": 4}]))
    (tmp / "afile").write_text("x")
    alloc = ["allocate", "--selector", str(tmp / "sel.pt"), "--pool", str(pool_file), "--prompts",
             str(pool_file), "--embedder", "hashing"]
    return [
        ("allocate: --out is an input", [*alloc, "--per-prompt", "2", "--out", str(pool_file)]),
        ("allocate: budget above the limit", [*alloc, "--budget", str(10**12),
                                              "--out", str(tmp / "a.jsonl")]),
        ("train: an earlier run's --output-dir", ["train", "--output-dir", str(earlier)]),
        ("train: --seed -1", ["train", "--seed", "-1", "--output-dir", str(tmp / "o")]),
        ("train: unknown --embedder", ["train", "--embedder", "bogus", "--output-dir", str(tmp / "o")]),
        ("train: unknown --report-to", ["train", "--report-to", "bogus", "--output-dir", str(tmp / "o")]),
        ("train: --rescue-prefix without --rescue", ["train", "--rescue-prefix", "restate",
                                                     "--output-dir", str(tmp / "o")]),
        ("train: a task file with a null answer", ["train", "--task", str(null_task),
                                                   "--output-dir", str(tmp / "o")]),
        ("bench: --out under a file", ["bench", "--embedder", "hashing", "--out", str(tmp / "afile" / "x")]),
        ("genselect synthesize: --out in a missing folder", ["genselect", "synthesize", "--out",
                                                             str(tmp / "no" / "t.jsonl")]),
        ("genselect eval: --window 1", ["genselect", "eval", "--window", "1"]),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/refusal_times")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for what, argv in cases(Path(tmp)):
            t0 = time.perf_counter()
            proc = subprocess.run([*ROLLWISE, *argv], capture_output=True, text=True, timeout=300)
            seconds = time.perf_counter() - t0
            message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            rows.append({"case": what, "seconds": round(seconds, 2), "exit": proc.returncode,
                         "lines": len(proc.stderr.strip().splitlines()),
                         "message": message.replace(tmp, "TMP")})
            print(f"{seconds:5.1f} s  exit {proc.returncode}  {what}", flush=True)
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"),
                      {"rows": rows, "max_seconds": max(r["seconds"] for r in rows)})
    table = ["| case | seconds | exit | message |", "|---|---|---|---|"]
    table += [f"| {r['case']} | {r['seconds']:.1f} | {r['exit']} | {r['message'].replace('|', '/')} |"
              for r in rows]
    atomic_write_report(out.with_suffix(".md"), "# Refusal times on the command line\n\nWritten by "
                        "`benchmarks/refusal_times.py`: wall time of the whole `rollwise` process "
                        "(interpreter start and imports included) for each bad input.\n\n"
                        + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
