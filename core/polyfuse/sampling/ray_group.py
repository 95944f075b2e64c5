"""One Ray instance for all ranks of a data-parallel run (``--nproc N`` with ``env.vectorization: ray``).

Every rank runs its own :class:`~polyfuse.sampling.ray_sampler.RaySampler`
(its share of the runners), all in one Ray instance. With ``env.ray.address``
null, rank 0 starts the local instance, sized for the runners of every rank,
and tells the others its GCS address and Ray's authentication mode over the
process group; they join it. The mode matters: Ray 2.60 turns token
authentication on for a local instance in the process that starts it only
(``RAY_AUTH_MODE=token``, the token in ``~/.ray/auth_token``), and a process
that connects by address without it is refused, after a minute of retries.
With an address every rank joins the cluster there itself.

At the end of a run that went well the ranks leave in order: the others
disconnect, then, after a barrier, rank 0 shuts the local instance down (a
rank still connected when the instance goes would be ended by Ray a minute
later, exit status 1). After an error no rank waits for the others.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from polyfuse.config import RayConfig
from polyfuse.errors import PolyfuseError
from polyfuse.sampling.ray_sampler import import_ray, init_ray, start_ray
from polyfuse.training.distributed import Ranks, barrier

AUTH_MODE = "RAY_AUTH_MODE"


def connect(config: RayConfig, workers: int, group: Ranks) -> Any:
    """Ray, this rank connected to the run's instance (rank 0 starting it for ``workers`` runners a rank)."""
    if config.address is not None:
        ray = import_ray()
        start_ray(ray, config, num_cpus=workers)  # every rank joins the cluster (num_cpus is unused)
        return ray
    check_one_machine(group)
    import torch.distributed as dist

    shared: list[Any] = [None]
    if group.main:
        ray = import_ray()
        try:
            start_ray(ray, config, num_cpus=workers * group.size)
            shared = [(ray.get_runtime_context().gcs_address, os.environ.get(AUTH_MODE))]
        finally:  # also on failure: the others must not wait for an address that will not come
            dist.broadcast_object_list(shared, src=0)
        return ray
    dist.broadcast_object_list(shared, src=0)
    if shared[0] is None:
        raise PolyfuseError(f"rank {group.rank}: rank 0 could not start the run's local Ray instance (rank 0's "
                            "error says why)")
    address, mode = shared[0]
    follow_auth_mode(mode)
    ray = import_ray()
    try:
        init_ray(ray, address=address)
    except ConnectionError as error:
        raise PolyfuseError(f"rank {group.rank}: could not join the local Ray instance rank 0 started at {address} "
                            f"({error})") from None
    return ray


def check_one_machine(group: Ranks) -> None:
    """Refuse ranks on several machines with a local instance: a Ray driver needs a Ray node on its own machine."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", group.size))
    if local < group.size:
        raise PolyfuseError(
            f"env.ray.address: null starts a Ray instance on rank 0's machine, and {group.size - local} of the "
            f"{group.size} ranks run on other machines, which cannot join it; start a Ray cluster over the machines "
            "(ray start --head, then ray start --address HEAD:PORT on the others) and set env.ray.address"
        )


def follow_auth_mode(mode: str | None) -> None:
    """Take rank 0's Ray authentication mode (token, once Ray started a local instance there)."""
    if mode is None or os.environ.get(AUTH_MODE) == mode:
        return
    os.environ[AUTH_MODE] = mode
    if "ray" in sys.modules:  # Ray reads its config when imported: have it read the mode again
        from ray._raylet import Config

        Config.initialize("")


def leave(ray: Any, group: Ranks) -> None:
    """Disconnect from the run's local instance in order: the other ranks first, then rank 0 shuts it down."""
    if not group.main:
        ray.shutdown()
        barrier()
        return
    try:
        barrier()
    finally:
        ray.shutdown()
