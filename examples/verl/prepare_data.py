"""Write verl parquet files (train + test) for GRPO with rollwise.

    python examples/verl/prepare_data.py --task arithmetic --out data/arithmetic
    python examples/verl/prepare_data.py --task problems.jsonl --out data/problems

``--task arithmetic`` generates graded integer sums with reasoning-gym (``pip install
'rollwise[sim]'``); any other value is a JSON/JSONL/parquet file of problems with ``question``
(or ``prompt``/``problem``) and ``answer`` fields, and optionally ``id``.

Columns, as verl's ``RLHFDataset`` and reward loop read them::

    data_source   "rollwise/arithmetic" or "rollwise/math" (picks the verifier in reward.py)
    prompt        chat messages [{"role": "user", "content": question + instruction}]
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": answer}
    extra_info    {"index": row number, "prompt_id": stable id, "split", "question", "answer",
                   "level"}

``extra_info.prompt_id`` is the stable prompt id rollwise maps rewards by (the launch scripts set
``id_column=extra_info.prompt_id``): it names the problem, not its row, so it survives
regenerating or reordering the file.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def to_verl_rows(rows: Iterable[dict[str, Any]], split: str, data_source: str) -> list[dict[str, Any]]:
    """rollwise task rows (``id``, ``prompt``, ``question``, ``answer``, ``level``) -> verl rows."""
    out = []
    for i, row in enumerate(rows):
        out.append({
            "data_source": data_source,
            "prompt": [{"role": m["role"], "content": m["content"]} for m in row["prompt"]],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(row["answer"])},
            "extra_info": {"index": i, "prompt_id": str(row["id"]), "split": split,
                           "question": str(row["question"]), "answer": str(row["answer"]),
                           "level": float(row.get("level", 0.0))},
        })
    return out


def write_parquet(rows: list[dict[str, Any]], path: str | Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def prepare(task: str, out: str | Path, **task_kwargs: Any) -> tuple[Path, Path]:
    """Write ``train.parquet`` and ``test.parquet`` for ``task`` under ``out``."""
    from rollwise.llm.tasks import get_task

    t = get_task(task, **task_kwargs)
    source = "rollwise/arithmetic" if t.name == "arithmetic" else "rollwise/math"
    out = Path(out)
    return (write_parquet(to_verl_rows(t.train, "train", source), out / "train.parquet"),
            write_parquet(to_verl_rows(t.heldout, "test", source), out / "test.parquet"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="arithmetic", help="'arithmetic' or a problem file")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--per-level", type=int, default=400, help="arithmetic: train prompts per level")
    ap.add_argument("--heldout-per-level", type=int, default=40, help="arithmetic: test prompts per level")
    ap.add_argument("--heldout-fraction", type=float, default=0.1, help="problem file: test share")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.task == "arithmetic":
        kw = dict(per_level=args.per_level, heldout_per_level=args.heldout_per_level, seed=args.seed)
    else:
        kw = dict(heldout_fraction=args.heldout_fraction, seed=args.seed)
    train, test = prepare(args.task, args.out, **kw)
    print(f"wrote {train} and {test}")


if __name__ == "__main__":
    main()
