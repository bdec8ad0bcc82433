"""The compute comparison: a shared seed (`train-seed`, `--init-from`) and the two ways of matching the
monolith's compute to the experts' (split-batch, DDM's; equal-batch)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from testkit.runs import copy_run, run_in_process, with_expert

from paris.config import apply_overrides
from paris.errors import ParisError
from paris.models.dit import DiT
from paris.models.io import load_pretrained
from paris.train.expert import baseline_schedule, train_expert, train_monolith, train_seed
from paris.train.init_from import load_initial_weights


def with_baseline(cfg, **changes):
    return dataclasses.replace(cfg, baseline=dataclasses.replace(cfg.baseline, **changes))


def same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: tuple = ()) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith(skip))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, partitioned, config):
    """A copy of the partitioned run with a 4-step seed."""
    run = copy_run(partitioned, tmp_path_factory.mktemp("seeded") / "run")
    summary = train_seed(run, config, steps=4)
    return run, summary


def test_split_batch_gives_the_monolith_the_experts_steps_and_equal_batch_k_times_them(config):
    k, e = 4, config.expert  # experts: e.steps steps of e.batch_size
    assert baseline_schedule(config, k) == (e.steps, k * e.batch_size)  # split-batch, the default (DDM)
    assert baseline_schedule(with_baseline(config, protocol="equal-batch"), k) == (k * e.steps, e.batch_size)
    # A tuned baseline keeps the samples and trades steps for batch.
    assert baseline_schedule(with_baseline(config, batch_size=4), k) == (k * e.steps * e.batch_size // 4, 4)
    with pytest.raises(ParisError, match="does not divide the experts' 192 training samples"):
        baseline_schedule(with_baseline(config, batch_size=5), k)


@pytest.mark.parametrize("item, pattern", [
    ("baseline.protocol=same-flops", "'baseline.protocol' must be one of split-batch, equal-batch; got 'same-flops'"),
    ("baseline.batch_size=0", "'baseline.batch_size' must be at least 1, got 0")])
def test_a_bad_baseline_is_refused_when_the_config_is_loaded(config, item, pattern):
    with pytest.raises(ParisError, match=pattern):
        apply_overrides(config, [item])


def test_the_monolith_trains_as_the_protocol_says(trained, tmp_path, config):
    run = copy_run(trained, tmp_path / "run")
    summary = train_monolith(run, config)
    assert (summary["steps"], summary["batch_size"]) == (config.expert.steps, 2 * config.expert.batch_size)
    assert summary["protocol"] == "split-batch" and summary["cluster_size"] == 300
    run.remove("monolith")
    summary = train_monolith(run, with_baseline(config, protocol="equal-batch"))
    assert (summary["steps"], summary["batch_size"]) == (2 * config.expert.steps, config.expert.batch_size)
    assert summary["samples_seen"] == 2 * config.expert.steps * config.expert.batch_size  # the experts' total


def test_the_seed_is_trained_on_all_the_data_at_the_monolith_batch(seeded, config):
    run, summary = seeded
    assert summary["steps"] == 4 and summary["batch_size"] == 2 * config.expert.batch_size
    assert summary["cluster_size"] == 300 and run.exists("seed/final/diffusion_pytorch_model.safetensors")


def test_an_expert_started_from_the_seed_starts_from_exactly_its_weights(seeded, tmp_path, config):
    """With no training steps, the expert's final EMA is its starting point: the seed, tensor for tensor."""
    run = copy_run(seeded[0].url, tmp_path / "run")
    summary = train_expert(run, with_expert(config, steps=0, init_from="seed/final"), 1)
    assert same_weights(load_pretrained(run, "experts/1/final"), load_pretrained(run, "seed/final"))
    assert summary["init_from"] == f"{run.url}/seed/final" and summary["init_samples"] == 4 * 16


def test_a_fresh_head_keeps_the_new_models_text_projection_and_output_layer(seeded, config):
    run, _ = seeded
    seed = load_pretrained(run, "seed/final")
    torch.manual_seed(7)
    model = DiT(seed.architecture)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    load_initial_weights(run, model, "seed/final", fresh_head=True)
    head = ("text_proj.", "final_layer.")
    assert same_weights(model, seed, skip=head)
    assert all(torch.equal(v, fresh[k]) for k, v in model.state_dict().items() if k.startswith(head))


def test_a_fresh_head_accepts_another_text_encoders_projection(seeded, config):
    """HDDM's case: a start whose text projection has another width loads once the head is fresh."""
    run, _ = seeded
    model = DiT(dataclasses.replace(load_pretrained(run, "seed/final").architecture, text_dim=768))
    with pytest.raises(ParisError, match=r"text_proj.weight has shape \(128, 384\), expected \(128, 768\)"):
        load_initial_weights(run, model, "seed/final")
    load_initial_weights(run, model, "seed/final", fresh_head=True)


def test_a_start_of_another_shape_is_one_clear_error_through_the_cli(seeded, tmp_path):
    run = copy_run(seeded[0].url, tmp_path / "run")
    result = run_in_process("train-expert", run.url, "-e", "0", "--init-from", "seed/final", "--set", "expert.steps=1",
                     "--set", "expert.preset=B/2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: weights in --init-from") and "x_embedder.proj.weight has shape" in error
    missing = run_in_process("train-expert", run.url, "-e", "0", "--init-from", "nowhere/final", "--set", "expert.steps=1")
    assert missing.returncode == 2 and "has no diffusion_pytorch_model.safetensors" in missing.stderr


def test_resuming_a_seeded_expert_is_bitwise_identical(seeded, tmp_path, config):
    """The checkpoint, not the start, decides where a resumed job stands: 3 + 3 steps = 6 steps straight."""
    straight = copy_run(seeded[0].url, tmp_path / "straight")
    halves = copy_run(seeded[0].url, tmp_path / "halves")
    cfg = with_expert(config, init_from="seed/final", steps=6)
    train_expert(straight, cfg, 0)
    train_expert(halves, with_expert(cfg, steps=3), 0)
    train_expert(halves, cfg, 0)
    assert same_weights(load_pretrained(straight, "experts/0/final"), load_pretrained(halves, "experts/0/final"))
    assert not same_weights(load_pretrained(straight, "experts/0/final"), load_pretrained(straight, "seed/final"))


def test_resume_refuses_a_changed_start(seeded, tmp_path, config):
    run = copy_run(seeded[0].url, tmp_path / "run")
    train_expert(run, with_expert(config, steps=2, checkpoint_every=1), 0)
    run.remove("experts/0/final")
    with pytest.raises(ParisError, match="made for a different job .*init_from"):
        train_expert(run, with_expert(config, steps=4, init_from="seed/final"), 0)


def test_the_monolith_starts_where_the_experts_start(seeded, tmp_path, config):
    run = copy_run(seeded[0].url, tmp_path / "run")
    cfg = with_baseline(with_expert(config, steps=0, init_from="seed/final"), batch_size=1)
    train_monolith(run, cfg)
    assert same_weights(load_pretrained(run, "monolith/final"), load_pretrained(run, "seed/final"))


def test_steps_by_size_share_the_experts_steps_by_cluster_size(config):
    from paris.train.expert import expert_steps

    meta = {"sizes": [300, 100, 400, 200]}  # shares 0.3, 0.1, 0.4, 0.2 of K x 10 = 40 steps
    by_size = apply_overrides(config, ["expert.steps=10", "expert.steps_by_size=true"])
    assert [expert_steps(by_size, meta, k) for k in range(4)] == [12, 4, 16, 8]
    assert [expert_steps(with_expert(config, steps=10), meta, k) for k in range(4)] == [10] * 4


def test_an_expert_trains_its_share_of_the_steps(partitioned, tmp_path, config):
    run = copy_run(partitioned, tmp_path / "run")
    sizes = run.read_json("partition/meta.json")["sizes"]
    big = max(range(2), key=lambda k: sizes[k])
    summary = train_expert(run, with_expert(config, steps=10, steps_by_size=True), big)
    assert summary["steps"] == round(10 * 2 * sizes[big] / sum(sizes)) > 10, sizes
