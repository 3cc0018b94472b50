"""Run under torchrun (or alone): a few AdamW steps of a SigerLM backbone and tied embedding,
sharded with FSDP2 when there are several processes. Prints the losses as JSON on rank 0."""

import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from sigerlm.model.backbone import Backbone
from sigerlm.model.config import SigerConfig
from sigerlm_text.losses import linear_cross_entropy


def main() -> None:
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    config = SigerConfig.from_profile("tiny", scan=sys.argv[1] if len(sys.argv) > 1 else "fused")

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(64, config.d_model)
            self.backbone = Backbone(config)

        def forward(self, ids):
            hidden = self.backbone.forward_hidden(self.embedding(ids))
            return linear_cross_entropy(hidden[:, :-1], self.embedding.weight, ids[:, 1:])

    model = LM()
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        for layer in model.backbone.layers:
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(4):
        batch = torch.randint(0, 64, (4, 16), generator=generator)  # the global batch
        mine = batch[rank::world]
        loss = model(mine)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        value = loss.detach().clone()
        if world > 1:
            dist.all_reduce(value)
            value /= world
        losses.append(float(value))
    if rank == 0:
        print(json.dumps(losses), flush=True)
    if world > 1:
        dist.barrier()  # every rank is done before the group is torn down
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
