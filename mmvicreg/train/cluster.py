"""The edges of a run on several processes or nodes: the rendezvous, and torchrun's restarts.

* ``train.dist_timeout`` (seconds) is how long a process waits for the others — to meet at the rendezvous and in
  every collective afterwards (Accelerate's ``InitProcessGroupKwargs(timeout=...)``; null: torch's default).
* A rendezvous that cannot be reached (``MASTER_ADDR:MASTER_PORT`` wrong, the main node not up, a firewall) is one
  line naming the address, the rank and the cause (:func:`rendezvous_errors`), not torch's traceback. (Under
  ``torchrun --rdzv-backend c10d`` the launcher itself meets the other nodes before any of our code runs; its
  rendezvous errors are torchrun's.)
* torchrun's c10d rendezvous shares one key-value store across restarts of the group, and the keys with which a
  process group's members find each other are the same in every attempt: a restarted member can read the address
  of a member of the previous attempt (gloo: "Connection refused", the restart lost). Launching torchrun with
  ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` gives each attempt a fresh store; :func:`elastic_note` says so when a
  run allows restarts without it.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any, Iterator

from mmvicreg.config import TrainConfig


def process_group_kwargs(train: TrainConfig) -> list[Any]:
    """Accelerate's ``kwargs_handlers`` for ``train.dist_timeout`` (none when it is null)."""
    if train.dist_timeout is None:
        return []
    from accelerate.utils import InitProcessGroupKwargs

    return [InitProcessGroupKwargs(timeout=timedelta(seconds=train.dist_timeout))]


@contextlib.contextmanager
def rendezvous_errors() -> Iterator[None]:
    """Turn torch's failure to meet the other processes into one ``RuntimeError`` line naming the rendezvous."""
    import torch.distributed as dist

    try:
        yield
    except dist.DistError as e:
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        rank, world = os.environ.get("RANK", "?"), os.environ.get("WORLD_SIZE", "?")
        cause = " ".join(str(e).split())[:240]
        raise RuntimeError(
            f"could not reach the rendezvous at {where} as rank {rank} of {world} ({type(e).__name__}: {cause}); "
            f"check that the main node (rank 0) is up and that MASTER_ADDR/MASTER_PORT name it and are reachable "
            f"(train.dist_timeout sets how long to wait)"
        ) from None


def elastic_note() -> str | None:
    """A line when torchrun may restart the group (``--max-restarts``) over a store shared across attempts."""
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    if restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return (f"note: torchrun --max-restarts {restarts} with its rendezvous store shared across restarts: a "
                f"restarted group may find the previous attempt's addresses there and fail; launch torchrun with "
                f"TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (README, 'On a cluster')")
    return None
