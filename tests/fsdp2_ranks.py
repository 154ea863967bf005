"""The step guard's snapshots under FSDP2 on CPU (torch's fully_shard over gloo; accelerate applies its FSDP plugin
to GPU processes only, docs/SCALING.md): each rank snapshots its shards, trains a step, restores, and trains the
same step again, which must give the same weights as the first time (so weights and optimizer state came back).
Prints one line per rank: "rank R: restored OK" or what differed.

    torchrun --nproc_per_node 2 tests/fsdp2_ranks.py
"""

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import GPT2Config, GPT2LMHeadModel

from rookworld_trl.grpo.guard import Snapshot


def sharded_model():
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0  # no dropout: a step repeats exactly
    model = GPT2LMHeadModel(config)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for block in model.transformer.h:  # as fsdp2.yaml's TRANSFORMER_BASED_WRAP on GPT2Block
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def full_weights(model) -> dict:
    return {n: p.full_tensor().clone() for n, p in model.named_parameters()}


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = sharded_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(rank))

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    snapshot, before = Snapshot(model, optimizer, 1), full_weights(model)
    step()
    first = full_weights(model)
    snapshot.restore(model, optimizer)
    restored = full_weights(model)
    step()  # the optimizer state must be DTensors again, and the step the same as the first time
    again = full_weights(model)
    bad = [n for n in before if not torch.equal(before[n], restored[n])]
    bad += [f"{n} (step after restore)" for n in first if not torch.equal(first[n], again[n])]
    moved = any(not torch.equal(before[n], first[n]) for n in before)
    print(
        f"rank {rank}: " + ("restored OK" if moved and not bad else f"differs: {bad[:3]} moved={moved}"),
        flush=True,
    )
    dist.barrier()  # no rank tears gloo down while another still talks to it (an abort at exit, 1 run in 3)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
