"""Generative Best-of-N selection (GenSelect) trained with DAPO (arXiv 2602.02143).

A small model reads a problem and a window of candidate solutions and names a correct one.
Selection tasks are synthesised from problems with verified answers and sampled candidates,
keeping only windows with both correct and incorrect candidates (:func:`synthesize`); the
reward is 1 for a strictly parsed correct choice (:func:`parse_choice`); training is TRL's DAPO
with a rollwise selector choosing informative tasks (:func:`train`); inference runs one
comparison or a knockout tournament (:func:`select_best`), next to majority vote, random pick and
the oracle.
"""

from rollwise.genselect.inference import (
    GenSelectModel,
    TournamentResult,
    evaluate_best_of_n,
    groups_of,
    majority_vote,
    majority_vote_accuracy,
    oracle_accuracy,
    random_pick_accuracy,
    select_best,
    select_best_many,
)
from rollwise.genselect.reward import parse_choice, reward_function, selection_reward
from rollwise.genselect.synthesis import (
    candidate_set,
    candidate_view,
    read_jsonl,
    read_tasks,
    render_prompt,
    sample_candidates,
    selection_text,
    synthesize,
    to_dataset,
    write_jsonl,
)
from rollwise.genselect.train import GenSelectTrainSettings, train

__all__ = [
    "GenSelectModel", "GenSelectTrainSettings", "TournamentResult", "candidate_set", "candidate_view",
    "evaluate_best_of_n", "groups_of", "majority_vote", "majority_vote_accuracy", "oracle_accuracy",
    "parse_choice", "random_pick_accuracy", "read_jsonl", "read_tasks", "render_prompt",
    "reward_function", "sample_candidates", "select_best", "select_best_many", "selection_reward",
    "selection_text", "synthesize", "to_dataset", "train", "write_jsonl",
]
