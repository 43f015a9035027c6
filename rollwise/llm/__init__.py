"""The real-LLM layer: the GRPO engine behind ``rollwise train`` (TRL), tasks with verifiable
rewards, offline models, one sampling helper and sampling-based evaluation."""

from rollwise.llm.engine import TrainSettings, run, run_grpo

__all__ = ["TrainSettings", "run", "run_grpo"]
