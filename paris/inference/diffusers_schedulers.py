"""paris's samplers as diffusers' schedulers: `sample.sampler` euler is FlowMatchEulerDiscreteScheduler, heun is
FlowMatchHeunDiscreteScheduler, each set to paris's time grid (paris.inference.sampler.timesteps), so that the
diffusers pipeline (paris.inference.diffusers_pipeline) steps through the times and latents of
paris.inference.sampler.integrate (tests/test_diffusers_pipeline.py).
"""

from __future__ import annotations

import logging

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from paris.errors import ParisError
from paris.flow import time_grid
from paris.inference.sampler import timesteps

log = logging.getLogger(__name__)

SCHEDULERS = {"euler": FlowMatchEulerDiscreteScheduler, "heun": FlowMatchHeunDiscreteScheduler}


def scheduler_for(sampler: str, scheduler, requested: bool):
    """The scheduler that integrates with `sampler`: `scheduler` (the pipeline's) when it is that sampler's class;
    when it is the other FlowMatch class, one of the sampler's class with its settings (num_train_timesteps and
    shift, all the two share), with a warning unless the sampler was `requested` by the call (a folder saved
    with another sampler, or a scheduler swapped in by hand). Any other scheduler is refused: paris's grid and
    velocity fit only these two."""
    wanted = SCHEDULERS[sampler]
    if isinstance(scheduler, wanted):
        return scheduler
    if not isinstance(scheduler, tuple(SCHEDULERS.values())):
        raise ParisError(f"paris samples with FlowMatchEulerDiscreteScheduler (sampler euler) or "
                         f"FlowMatchHeunDiscreteScheduler (heun), not {type(scheduler).__name__}; set "
                         f"pipe.scheduler = {wanted.__name__}.from_config(pipe.scheduler.config)")
    if not requested:
        log.warning("the pipeline's scheduler is %s but its sampler is %s: sampling with %s (pass sampler= to "
                    "choose)", type(scheduler).__name__, sampler, wanted.__name__)
    return wanted(num_train_timesteps=scheduler.config.num_train_timesteps, shift=scheduler.config.shift)


def set_paris_grid(scheduler, steps: int, device: torch.device) -> None:
    """Set `scheduler` (one of SCHEDULERS) to paris's grid of `steps` steps, time-shifted by its `shift` (which
    save_pretrained sets to sample.shift). Euler takes the grid through set_timesteps' sigmas (which it shifts
    itself); by default it would end at t = 0.001 before its last step."""
    if isinstance(scheduler, FlowMatchHeunDiscreteScheduler):
        set_heun_grid(scheduler, torch.tensor(timesteps(steps, scheduler.config.shift)), device)
    else:
        scheduler.set_timesteps(sigmas=time_grid(steps)[:-1].tolist(), device=device)


def set_heun_grid(scheduler: FlowMatchHeunDiscreteScheduler, grid: torch.Tensor, device: torch.device) -> None:
    """Lay out `grid` (steps+1 times from 1 to 0) as the Heun scheduler's own set_timesteps lays out its grid,
    which it computes itself (it takes no sigmas): every interior time twice, once as the end of a step's Euler
    predictor and once as the start of the next step. Its step() then alternates predictor and corrector, and
    the last step, to 0, is a lone Euler step: 2*steps-1 velocity evaluations, as paris's Heun."""
    scheduler.set_timesteps(len(grid) - 1, device=device)  # resets its state, and checks our layout's lengths
    sigmas = grid.to(device=device, dtype=torch.float32)
    doubled = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2)])
    assert len(doubled) == len(scheduler.timesteps) and len(doubled) + 1 == len(scheduler.sigmas)
    scheduler.timesteps = doubled * scheduler.config.num_train_timesteps
    scheduler.sigmas = torch.cat([doubled, sigmas[-1:]])
