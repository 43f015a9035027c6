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
    no_checkpoint = tmp / "logged"
    no_checkpoint.mkdir()
    (no_checkpoint / "rollwise_run.json").write_text("{}")
    damaged = tmp / "damaged" / "checkpoint-5"
    damaged.mkdir(parents=True)
    (damaged / "rollwise_selector.pt").write_bytes((tmp / "sel.pt").read_bytes()[:200])
    (damaged / "trainer_state.json").write_text('{"global_step": 5}')
    (damaged / "model.safetensors").write_bytes(b"weights")
    readme = tmp / "notes"
    readme.mkdir()
    (readme / "README.md").write_text("mine")
    results = tmp / "results"
    results.mkdir()
    (results / "results.json").write_text("{}")
    rows = json.loads(pool_file.read_text())
    files = {"repeated ids": [{**r, "id": i % 30} for i, r in enumerate(rows)],
             "a list answer": [*rows[:-1], {**rows[-1], "answer": [3, 0]}]}
    for name, content in files.items():
        (tmp / f"{name.replace(' ', '_')}.json").write_text(json.dumps(content))
    (tmp / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    bench = ["bench", "--embedder", "hashing", "--out", str(tmp / "b")]
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
        ("train: --resume without a checkpoint", ["train", "--resume", "--output-dir",
                                                  str(no_checkpoint)]),
        ("train: --resume onto a damaged selector", ["train", "--resume", "--output-dir",
                                                     str(damaged.parent)]),
        ("train: a user's README.md in --output-dir", ["train", "--output-dir", str(readme)]),
        ("bench: the same file as --pool and --heldout", [*bench, "--pool", str(pool_file),
                                                          "--heldout", str(pool_file)]),
        ("bench: --out holds earlier results", ["bench", "--embedder", "hashing", "--pool",
                                                str(pool_file), "--out", str(results)]),
        ("bench: a pool file with repeated ids", [*bench, "--pool", str(tmp / "repeated_ids.json")]),
        ("bench: a pool file with a list answer", [*bench, "--pool", str(tmp / "a_list_answer.json")]),
        ("bench: a pool file nested 100,000 deep", [*bench, "--pool", str(tmp / "deep.json")]),
        ("genselect synthesize: --out is the --task file", ["genselect", "synthesize", "--task",
                                                            str(pool_file), "--out", str(pool_file)]),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/refusal_times")
    p.add_argument("--conditions", default="a quiet machine",
                   help="how loaded the machine was, for the report")
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
                      {"rows": rows, "max_seconds": max(r["seconds"] for r in rows),
                       "conditions": args.conditions})
    table = ["| case | seconds | exit | message |", "|---|---|---|---|"]
    table += [f"| {r['case']} | {r['seconds']:.1f} | {r['exit']} | {r['message'].replace('|', '/')} |"
              for r in rows]
    atomic_write_report(out.with_suffix(".md"), "# Refusal times on the command line\n\nWritten by "
                        "`benchmarks/refusal_times.py`: wall time of the whole `rollwise` process "
                        "(interpreter start and imports included) for each bad input, on "
                        f"{args.conditions}.\n\n"
                        + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
