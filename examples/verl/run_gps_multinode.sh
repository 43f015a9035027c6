#!/usr/bin/env bash
# GRPO with GPS on several nodes of a Ray cluster: verl 0.9.1 (v1 trainer, sync mode).
#
# Every node needs the same Python environment (verl 0.9.1, rollwise[verl,embed]) and sees the
# same paths for this checkout and the data (shared filesystem), because verl's driver actor,
# which runs the selector and reads the parquet files, may be placed on any node.
#
#   head:     ray start --head --port=6379 --dashboard-host=0.0.0.0
#   workers:  ray start --address=<head-ip>:6379
#   head:     NNODES=4 MODEL=Qwen/Qwen2.5-7B-Instruct DATA=/nfs/data/arithmetic \
#             bash examples/verl/run_gps_multinode.sh [overrides ...]
#
# rollwise adds no process of its own: the selector lives in verl's driver, so the rollwise block
# is the same as on one node. Only the cluster size, batch sizes and parallelism change.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
DATA=${DATA:-/nfs/data/arithmetic}
NNODES=${NNODES:-2}
NGPUS=${NGPUS:-8}
RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
HERE=$(cd "$(dirname "$0")" && pwd)

ray job submit --address="$RAY_ADDRESS" --no-wait -- \
python3 -m verl.trainer.main_ppo \
    trainer.use_v1=True \
    algorithm.adv_estimator=grpo \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/test.parquet" \
    data.train_batch_size=512 \
    data.max_prompt_length=256 \
    data.max_response_length=1024 \
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
    actor_rollout_ref.actor.ppo_mini_batch_size=128 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.actor.fsdp_config.param_offload=False \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
    transfer_queue.backend.SimpleStorage.num_data_storage_units=$((2 * NNODES)) \
    trainer.n_gpus_per_node="$NGPUS" \
    trainer.nnodes="$NNODES" \
    trainer.save_freq=20 \
    trainer.test_freq=10 \
    trainer.total_epochs=3 \
    trainer.logger='["console"]' \
    trainer.project_name=rollwise \
    trainer.experiment_name=gps-grpo-multinode \
    "$@"
