#!/usr/bin/env bash
# GRPO on several SLURM nodes: one `accelerate launch` per node (srun, one task per node), each starting one
# training process per GPU through accelerate_configs/multi_node.yaml. Not run here (no cluster, no GPU): the
# same launcher path was rehearsed on one CPU box by scripts/rehearse_multinode.sh (docs/SCALING.md).
#
#   sbatch scripts/slurm_multinode.sh --config recipes/grpo_rookworld_124m_gpu.yaml --output_dir /shared/runs/x
#   sbatch --nodes 4 scripts/slurm_multinode.sh ...          # node count from SLURM; GPUS_PER_NODE=4 sbatch ...
#
# Every argument goes to the stage (python -m rookworld_trl.stages.grpo). output_dir must be on a filesystem all nodes
# mount: the run checks it at start and stops with one line if a node cannot see it. Re-submitting the same
# command resumes (the GPU recipes set resume_from_checkpoint: auto).
#SBATCH --job-name=rookworld-grpo
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --output=slurm-%j.out
# --signal: SIGTERM 5 minutes before the time limit; each training process finishes its step, saves a
# checkpoint and exits 143 (rookworld_trl/training/checkpoints.py SaveOnInterrupt). torchrun SIGKILLs its
# workers TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds after a signal (torch's default 30 s): 240 s here.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"

export GPUS_PER_NODE=${GPUS_PER_NODE:-8}
export MAIN_IP=${MAIN_IP:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}  # the first node
export MAIN_PORT=${MAIN_PORT:-29500}
export ACCELERATE=${ACCELERATE:-.venv/bin/accelerate}
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-240}
echo "rookworld: $SLURM_NNODES nodes x $GPUS_PER_NODE GPUs, main process on $MAIN_IP:$MAIN_PORT"

# single quotes: SLURM_NODEID differs per node, so it is read inside each srun task, not here
# shellcheck disable=SC2016
srun --kill-on-bad-exit=1 bash -c '
  exec "$ACCELERATE" launch --config_file accelerate_configs/multi_node.yaml \
    --num_machines "$SLURM_NNODES" --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
    --machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_IP" --main_process_port "$MAIN_PORT" \
    -m rookworld_trl.stages.grpo "$@"' rookworld "$@"
