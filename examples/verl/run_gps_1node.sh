#!/usr/bin/env bash
# GRPO with GPS choosing every step's prompts: one node, verl 0.9.1 (v1 trainer, sync mode).
#
#   python examples/verl/prepare_data.py --task arithmetic --out data/arithmetic
#   MODEL=Qwen/Qwen2.5-1.5B-Instruct NGPUS=8 bash examples/verl/run_gps_1node.sh [overrides ...]
#
# The rollwise part is ROLLWISE_OVERRIDES (rollwise_overrides.sh); everything else is plain
# verl GRPO.
# Extra Hydra overrides are appended, e.g. trainer.total_epochs=1 or
# +trainer.v1.sampler.sampler_kwargs.strategy=mopps. The sizes below are environment variables,
# so that run_gps_multinode.sh submits this same command to a Ray cluster with a cluster's sizes.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}
DATA=${DATA:-data/arithmetic}
NGPUS=${NGPUS:-8}
NNODES=${NNODES:-1}
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-128}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-512}
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-32}
PPO_MICRO_BATCH_SIZE_PER_GPU=${PPO_MICRO_BATCH_SIZE_PER_GPU:-8}
ROLLOUT_TP=${ROLLOUT_TP:-1}
LOG_PROB_MICRO_BATCH_SIZE_PER_GPU=${LOG_PROB_MICRO_BATCH_SIZE_PER_GPU:-16}
EXPERIMENT=${EXPERIMENT:-gps-grpo-1node}
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/rollwise_overrides.sh"  # the rollwise part: ROLLWISE_OVERRIDES

python3 -m verl.trainer.main_ppo \
    trainer.use_v1=True \
    algorithm.adv_estimator=grpo \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/test.parquet" \
    data.train_batch_size="$TRAIN_BATCH_SIZE" \
    data.max_prompt_length=256 \
    data.max_response_length="$MAX_RESPONSE_LENGTH" \
    reward.custom_reward_function.path="$HERE/reward.py" \
    reward.custom_reward_function.name=compute_score \
    "${ROLLWISE_OVERRIDES[@]}" \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size="$PPO_MINI_BATCH_SIZE" \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$PPO_MICRO_BATCH_SIZE_PER_GPU" \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP" \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$LOG_PROB_MICRO_BATCH_SIZE_PER_GPU" \
    trainer.n_gpus_per_node="$NGPUS" \
    trainer.nnodes="$NNODES" \
    trainer.save_freq=20 \
    trainer.test_freq=10 \
    trainer.total_epochs=3 \
    trainer.logger='["console"]' \
    trainer.project_name=rollwise \
    trainer.experiment_name="$EXPERIMENT" \
    "$@"
