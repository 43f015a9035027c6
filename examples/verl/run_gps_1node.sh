#!/usr/bin/env bash
# GRPO with GPS choosing every step's prompts: one node, verl 0.9.1 (v1 trainer, sync mode).
#
#   python examples/verl/prepare_data.py --task arithmetic --out data/arithmetic
#   MODEL=Qwen/Qwen2.5-1.5B-Instruct NGPUS=8 bash examples/verl/run_gps_1node.sh [overrides ...]
#
# The rollwise part is the block between the two marks; everything else is plain verl GRPO.
# Extra Hydra overrides are appended, e.g. trainer.total_epochs=1 or
# +trainer.v1.sampler.sampler_kwargs.strategy=mopps.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}
DATA=${DATA:-data/arithmetic}
NGPUS=${NGPUS:-8}
HERE=$(cd "$(dirname "$0")" && pwd)

python3 -m verl.trainer.main_ppo \
    trainer.use_v1=True \
    algorithm.adv_estimator=grpo \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/test.parquet" \
    data.train_batch_size=128 \
    data.max_prompt_length=256 \
    data.max_response_length=512 \
    reward.custom_reward_function.path="$HERE/reward.py" \
    reward.custom_reward_function.name=compute_score \
    `# ---- rollwise: GPS chooses the prompts, the replay buffer reports the rewards ----` \
    data.dataloader_num_workers=0 \
    data.custom_cls.path=pkg://rollwise.integrations.verl \
    data.custom_cls.name=RollwiseDataset \
    trainer.v1.sampler.custom_sampler.path=pkg://rollwise.integrations.verl \
    trainer.v1.sampler.custom_sampler.name=RollwiseReplayBuffer \
    +trainer.v1.sampler.sampler_kwargs.strategy=gps \
    +trainer.v1.sampler.sampler_kwargs.seed=0 \
    +trainer.v1.sampler.sampler_kwargs.embedder=wordllama \
    +trainer.v1.sampler.sampler_kwargs.id_column=extra_info.prompt_id \
    +trainer.v1.sampler.sampler_kwargs.hyper.target=0.5 \
    +trainer.v1.sampler.sampler_kwargs.hyper.diversity=0.1 \
    '+trainer.v1.sampler.sampler_kwargs.train_batch_size=${data.train_batch_size}' \
    '+trainer.v1.sampler.sampler_kwargs.filter_groups=${algorithm.filter_groups}' \
    '+trainer.v1.sampler.sampler_kwargs.sync_refill_failed_groups=${trainer.v1.sampler.sync_refill_failed_groups}' \
    `# ---- end of rollwise ----` \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
    trainer.n_gpus_per_node="$NGPUS" \
    trainer.nnodes=1 \
    trainer.save_freq=20 \
    trainer.test_freq=10 \
    trainer.total_epochs=3 \
    trainer.logger='["console"]' \
    trainer.project_name=rollwise \
    trainer.experiment_name=gps-grpo-1node \
    "$@"
