"""This process's place among several (`torchrun`, `accelerate launch`): rank, world size,
its device. Shared by the stages that split work over processes (generation, training)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dasd.errors import DasdError


@dataclass(frozen=True)
class ShardPlan:
    """This process's place among the generation processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ShardPlan:
        """Read RANK / WORLD_SIZE / LOCAL_RANK, as torchrun and accelerate launch set them."""
        env = os.environ if env is None else env
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError as err:
            raise DasdError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({err}); launch with "
                            "torchrun or accelerate launch, or unset them") from err
        if world < 1 or not 0 <= rank < world:
            raise DasdError(f"RANK={rank} must be in [0, WORLD_SIZE={world}); fix the launcher "
                            "environment")
        return cls(rank, world, local)

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> str:
        """`auto` on a multi-GPU launch means this process's own GPU, cuda:<LOCAL_RANK>."""
        import torch

        if device == "auto" and self.sharded and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return device

    def share(self, examples: Sequence[Any]) -> list[Any]:
        return list(examples[self.rank::self.world_size])
