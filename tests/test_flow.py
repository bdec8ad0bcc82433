"""Flow matching math: x_t = (1-t) x0 + t noise, target noise - x0, t-sampling, Euler integration."""

from __future__ import annotations

import pytest
import torch

from paris.errors import ParisError
from paris.flow import euler_step, flow_matching_loss, interpolate, noisy_sample, sample_t, time_grid
from paris.randomness import BatchRandom, SampleRandom


def draws(n: int, seed: int) -> BatchRandom:
    return BatchRandom(n, torch.Generator().manual_seed(seed))


def _data(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=g), torch.randn(n, 1, 4, 4, generator=g)


def test_interpolate_endpoints_and_midpoint():
    x0, noise = _data()
    n = len(x0)
    assert torch.equal(interpolate(x0, noise, torch.zeros(n)), x0)
    assert torch.equal(interpolate(x0, noise, torch.ones(n)), noise)
    assert torch.allclose(interpolate(x0, noise, torch.full((n,), 0.25)), 0.75 * x0 + 0.25 * noise)


def test_interpolate_uses_each_samples_own_t():
    x0, noise = _data(n=2)
    x_t = interpolate(x0, noise, torch.tensor([0.0, 1.0]))
    assert torch.equal(x_t[0], x0[0]) and torch.equal(x_t[1], noise[1])


class ExactVelocity(torch.nn.Module):
    """Knows x0, so recovers the true velocity from x_t and t: (x_t - x0) / t = noise - x0."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x_t, t):
        return (x_t - self.x0) / t.view(-1, 1, 1, 1)


@pytest.mark.parametrize("distribution", ["logit-normal", "uniform"])
def test_loss_target_is_noise_minus_x0(distribution):
    x0, _ = _data(n=64)
    loss = flow_matching_loss(ExactVelocity(x0), x0, distribution, draws(64, 1))
    assert loss.item() < 1e-8
    # Opposite sign (x0 - noise) must be heavily penalised: the loss really compares against noise - x0.
    flipped = flow_matching_loss(lambda x_t, t: -ExactVelocity(x0)(x_t, t), x0, distribution, draws(64, 1))
    assert flipped.item() > 1.0


def test_loss_of_zero_model_is_mean_square_of_target():
    """Reproduce the draws (t first, then noise, from the same generator) and check the exact value."""
    x0, _ = _data(n=16)
    loss = flow_matching_loss(lambda x_t, t: torch.zeros_like(x_t), x0, "uniform", draws(16, 3))
    g = torch.Generator().manual_seed(3)
    torch.rand(16, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    assert torch.allclose(loss, ((noise - x0) ** 2).mean())


def test_noisy_sample_is_consistent():
    x0, _ = _data(n=8)
    x_t, t, noise = noisy_sample(x0, "logit-normal", draws(8, 0))
    assert torch.allclose(x_t, interpolate(x0, noise, t))
    assert t.shape == (8,) and noise.shape == x0.shape


@pytest.mark.parametrize("distribution", ["logit-normal", "uniform"])
def test_sample_t_in_open_unit_interval(distribution):
    t = sample_t(distribution, draws(20_000, 0))
    assert t.shape == (20_000,)
    assert (t > 0).all() and (t < 1).all()
    assert abs(t.mean().item() - 0.5) < 0.02  # both are symmetric around 1/2


def test_logit_normal_concentrates_in_the_middle():
    middle = lambda t: ((t > 0.25) & (t < 0.75)).float().mean().item()  # noqa: E731
    assert middle(sample_t("logit-normal", draws(20_000, 0))) > middle(sample_t("uniform", draws(20_000, 0))) + 0.1


def test_sample_t_is_reproducible_from_the_generator():
    assert torch.equal(sample_t("logit-normal", draws(10, 5)), sample_t("logit-normal", draws(10, 5)))


def test_sample_draws_do_not_depend_on_how_the_batch_is_split():
    """Sample p of step s gets the same t and noise alone, in a micro-batch, or on another process."""
    whole = SampleRandom(seed=7, step=3, positions=torch.arange(8))
    t_whole, noise_whole = sample_t("logit-normal", whole), whole.normal(1, 4, 4)
    halves = [SampleRandom(7, 3, torch.arange(0, 4)), SampleRandom(7, 3, torch.arange(4, 8))]
    t_halves = torch.cat([sample_t("logit-normal", h) for h in halves])
    assert torch.equal(t_whole, t_halves)
    assert torch.equal(noise_whole, torch.cat([h.normal(1, 4, 4) for h in halves]))
    assert not torch.equal(noise_whole[0], noise_whole[1])  # positions differ
    assert not torch.equal(SampleRandom(7, 4, torch.arange(8)).normal(1, 4, 4), noise_whole)  # steps differ


def test_unknown_t_distribution():
    with pytest.raises(ParisError, match="'cosine'"):
        sample_t("cosine", draws(4, 0))


def test_time_grid():
    grid = time_grid(50)
    assert grid.shape == (51,)
    assert grid[0].item() == 1.0 and grid[-1].item() == 0.0
    assert (grid[1:] < grid[:-1]).all()
    assert torch.allclose(grid[:-1] - grid[1:], torch.full((50,), 0.02), atol=1e-6)
    with pytest.raises(ParisError):
        time_grid(0)


def test_euler_on_constant_velocity_is_exact():
    """dx/dt = c from t=1 to t=0 gives x(0) = x(1) - c for any number of steps."""
    x1, c = _data()
    for steps in (1, 7, 50):
        x = x1
        times = time_grid(steps).tolist()
        for t, t_next in zip(times[:-1], times[1:]):
            x = euler_step(x, c, t, t_next)
        assert torch.allclose(x, x1 - c, atol=1e-5)


def test_euler_step_direction():
    x = torch.zeros(2)
    v = torch.ones(2)
    assert torch.allclose(euler_step(x, v, 1.0, 0.75), torch.full((2,), -0.25))
