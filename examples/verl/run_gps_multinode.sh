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
# rollwise adds no process of its own: the selector lives in verl's driver, so the command is
# the one-node script's (rollwise_overrides.sh included); only the cluster size, batch sizes and
# parallelism change.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
DATA=${DATA:-/nfs/data/arithmetic}
NNODES=${NNODES:-2}
NGPUS=${NGPUS:-8}
RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
HERE=$(cd "$(dirname "$0")" && pwd)

# the one-node command with a cluster's sizes; extra overrides go last
ray job submit --address="$RAY_ADDRESS" --no-wait -- \
env MODEL="$MODEL" DATA="$DATA" NNODES="$NNODES" NGPUS="$NGPUS" TRAIN_BATCH_SIZE=512 \
    MAX_RESPONSE_LENGTH=1024 PPO_MINI_BATCH_SIZE=128 PPO_MICRO_BATCH_SIZE_PER_GPU=4 ROLLOUT_TP=2 \
    LOG_PROB_MICRO_BATCH_SIZE_PER_GPU=8 EXPERIMENT=gps-grpo-multinode \
bash "$HERE/run_gps_1node.sh" \
    actor_rollout_ref.actor.fsdp_config.param_offload=False \
    transfer_queue.backend.SimpleStorage.num_data_storage_units=$((2 * NNODES)) \
    "$@"
