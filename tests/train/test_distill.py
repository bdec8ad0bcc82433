"""Distillation (`paris distill`): the target is the mixture's velocity for the chosen rule, the job resumes
bitwise, a student reads only what the experts published when asked to, and the student is an ordinary one-model
folder that samples with one pass per step (two with unfused guidance)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from paris.errors import ParisError
from paris.inference.pipeline import ParisPipeline
from paris.inference.velocity import conditioning, velocity_field
from paris.randomness import BatchRandom
from paris.flow import noisy_sample
from paris.data.store import load_store
from paris.clusters.partition import load_partition
from paris.run import RunDir
from paris.train import expert_samples
from paris.train.distill import distill
from paris.train.teacher import Teacher
from testkit.runs import copy_run, run_paris

PROMPTS = ["a photo of a bag", "a photo of a sneaker"]


def with_distill(config, **changes):
    distill_cfg = dataclasses.replace(config.distill, steps=4, batch_size=8, lr=5e-4, checkpoint_every=1000,
                                      log_every=1, threads=1)
    return dataclasses.replace(config, distill=dataclasses.replace(distill_cfg, **changes))


@pytest.fixture(scope="module")
def fixed_batch(trained, config):
    """Eight samples of the run: x_t at one t per sample, their captions (two dropped), per-sample scales."""
    run = RunDir(str(trained))
    store = load_store(run)
    batch = store.batch(torch.arange(8) * 30)
    x_t, t, _ = noisy_sample(batch.latents.float(), "uniform", BatchRandom(8, torch.Generator().manual_seed(3)))
    drop = torch.tensor([False, True] + [False] * 5 + [True])
    text, mask = store.text(batch, drop=drop)
    negative, negative_mask = store.text(batch, drop=torch.ones(8, dtype=torch.bool))
    clusters = load_partition(run).assignments[batch.rows]
    return run, x_t, t, (text, mask, negative, negative_mask), clusters


@pytest.mark.parametrize("rule", ["oracle", "top2", "full"])
@pytest.mark.parametrize("guided", [False, True])
def test_the_target_is_the_mixtures_velocity_for_the_rule(fixed_batch, config, rule, guided):
    """The teacher's batched target (one t and one scale per sample) equals, row by row, the velocity sampling
    computes at that (x_t, t, caption, scale); the oracle's equals its own expert called directly."""
    run, x_t, t, texts, clusters = fixed_batch
    scale = torch.linspace(1, 6, 8) if guided else None
    cond = conditioning(*texts, "cpu", scale)
    sample = dataclasses.replace(config.sample, guidance=1.0)
    target = Teacher(run, rule, sample, 2)(x_t, t, cond, clusters)
    mixture = ParisPipeline.from_run(run.url).mixture
    for i in range(8):
        row = cond.rows(torch.tensor([i]))
        if rule == "oracle":
            expert = mixture.experts[int(clusters[i])]
            v_text = expert(x_t[i : i + 1], t[i : i + 1], row.text, row.mask)
            v_neg = expert(x_t[i : i + 1], t[i : i + 1], row.negative, row.negative_mask)
            expected = v_neg + float(scale[i]) * (v_text - v_neg) if guided else v_text
        else:
            settings = sample.updated(strategy=rule, guidance=float(scale[i]) if guided else 1.0)
            row.scale = None
            expected = velocity_field(mixture, row, settings)(x_t[i : i + 1], float(t[i]))
        torch.testing.assert_close(target[i : i + 1], expected, rtol=1e-4, atol=1e-5)
    assert target.abs().sum() > 0


def test_resume_is_bitwise_identical(trained, tmp_path, config):
    """8 steps in one go == 4 steps, stop, then resume to 8: model, EMA, optimiser and the final student."""
    straight = copy_run(trained, tmp_path / "a")
    distill(straight, with_distill(config, steps=8, teacher="top2"))
    resumed = copy_run(trained, tmp_path / "b")
    distill(resumed, with_distill(config, steps=4, teacher="top2"))
    assert resumed.read_json("student/LATEST")["step"] == 4
    distill(resumed, with_distill(config, steps=8, teacher="top2"))
    for rel in ("ckpt/00000008/model.safetensors", "ckpt/00000008/ema.safetensors",
                "ckpt/00000008/optimizer.safetensors", "final/diffusion_pytorch_model.safetensors"):
        a, b = (r.load_tensors(f"student/{rel}") for r in (straight, resumed))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel
    half = resumed.load_tensors("student/ckpt/00000004/model.safetensors")
    end = resumed.load_tensors("student/ckpt/00000008/model.safetensors")
    assert any(not torch.equal(half[k], end[k]) for k in half)  # the second half trained
    with pytest.raises(ParisError, match="refusing to resume.*teacher"):  # another teacher is another job
        distill(resumed, with_distill(config, steps=9, teacher="full"))


@pytest.fixture(scope="module")
def students(trained, tmp_path_factory, config) -> RunDir:
    """The trained run with a student (top2 teacher) and a guidance-distilled one (student-guided/)."""
    run = copy_run(trained, tmp_path_factory.mktemp("students") / "run")
    summary = distill(run, with_distill(config, teacher="top2"))
    assert summary["samples_seen"] == 32 and summary["teacher"] == "top2" and summary["experts_samples_seen"] == 96
    distill(run, with_distill(config, guidance_distill=True, guidance_range=[1.0, 6.0]), name="guided")
    return run


def _counted(pipe: ParisPipeline) -> list[int]:
    """Rows through the student's network, counted by a hook on it (not by paris's own statistics)."""
    rows = []
    pipe.mixture.experts[0].register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    return rows


@pytest.mark.parametrize("name, passes", [("student", 2), ("student-guided", 1)])
def test_a_student_samples_with_one_pass_per_step(students, name, passes):
    pipe = ParisPipeline.from_run(students.url, model=name)
    assert pipe.mixture.router is None and len(pipe.mixture.experts) == 1
    rows = _counted(pipe)
    images, stats = pipe.generate(PROMPTS, steps=3, guidance=4.0)
    assert images.shape[0] == 2 and images.isfinite().all()
    assert sum(rows) == passes * 2 * 3 and len(rows) == 3  # one batched call per step
    assert stats["forward_passes_per_image"] == passes and stats["expert_passes_per_image"] == 1


def test_a_guided_student_refuses_what_it_was_not_trained_for(students):
    pipe = ParisPipeline.from_run(students.url, model="student-guided")
    with pytest.raises(ParisError, match=r"distilled for guidance scales in \[1, 6\]"):
        pipe.generate(PROMPTS, steps=2, guidance=7.5)
    with pytest.raises(ParisError, match="cannot take a negative prompt"):
        pipe.generate(PROMPTS, steps=2, guidance=4.0, negative_prompts=["blurry"])


def test_a_student_folder_loads_in_paris_and_in_diffusers_and_draws_the_same(students, tmp_path):
    from diffusers import DiffusionPipeline

    ours = ParisPipeline.from_run(students.url, model="student-guided")
    ours.save_pretrained(str(tmp_path / "guided"))
    again = ParisPipeline.from_pretrained(str(tmp_path / "guided"))
    theirs = DiffusionPipeline.from_pretrained(str(tmp_path / "guided"), trust_remote_code=True)
    rows = []
    theirs.expert_0.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    expected, _ = ours.generate(PROMPTS, steps=3, guidance=4.0, seed=5)
    loaded, _ = again.generate(PROMPTS, steps=3, guidance=4.0, seed=5)
    drawn = theirs(PROMPTS, num_inference_steps=3, guidance_scale=4.0, seed=5, output_type="pt").images
    assert torch.equal(expected, loaded)
    torch.testing.assert_close(drawn * 2 - 1, expected, rtol=0, atol=1e-5)
    assert rows == [2, 2, 2]  # one pass per step for both images


def test_the_cli_samples_a_student(students, tmp_path):
    code, out, err = run_paris("generate", students.url, "-p", "a photo of a bag", "--model", "student@guided",
                               "--steps", "2", "--guidance", "3", "--out", str(tmp_path / "x.png"))
    assert code == 0, err
    assert "1.00 expert passes per image and step" in out and (tmp_path / "x.png").exists()


def test_a_guided_student_starts_from_an_unguided_model(trained, tmp_path, config):
    """--init-from an expert: the student's guidance input starts without effect, so step 0 draws as it."""
    from paris.models.dit import DiT
    from paris.config import dit_config
    from paris.models.io import load_pretrained
    from paris.train.init_from import load_initial_weights

    run = RunDir(str(trained))
    expert = load_pretrained(run, "experts/0/final")
    student = DiT(dit_config("tiny", guidance_range=[1.0, 8.0]))
    assert load_initial_weights(run, student, "experts/0/final")["init_samples"] == 48
    x, t, text = torch.randn(2, 1, 32, 32), torch.tensor([0.3, 0.8]), torch.randn(2, 4, 384)
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(x, t, text, guidance=torch.tensor([2.0, 7.0])), expert(x, t, text))


def test_from_expert_samples_never_reads_the_data(trained, tmp_path, config, monkeypatch):
    run = copy_run(trained, tmp_path / "run")
    monkeypatch.setattr(expert_samples, "SHARD", 5)
    with pytest.raises(ParisError, match="expert 0 has published no samples"):
        distill(run, with_distill(config, source="expert-samples"))
    for k in range(2):
        expert_samples.sample_expert(run, config, k, 12, batch_size=6)
    (Path(run.url) / "data").rename(tmp_path / "hidden")  # nothing under data/ can be read
    summary = distill(run, with_distill(config, source="expert-samples", teacher="oracle"))
    sizes = run.read_json("partition/meta.json")["sizes"]
    counts = summary["expert_samples"]
    assert max(counts) == 12 and counts == [int(12 * s / max(sizes)) for s in sizes]  # the clusters' proportions
    assert summary["cluster_size"] == sum(counts)


def test_bad_teachers_are_one_line(trained, partitioned, tmp_path):
    no_experts = copy_run(partitioned, tmp_path / "bare")
    code, _, err = run_paris("distill", no_experts.url, "--steps", "1")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: ") and "no trained expert" in err
    missing = copy_run(trained, tmp_path / "missing")
    shutil.rmtree(Path(missing.url) / "experts/1/final")
    code, _, err = run_paris("distill", missing.url, "--teacher", "top2", "--steps", "1")
    assert code == 2 and "--teacher top2 needs expert 1" in err and "paris train-expert RUN --expert 1" in err
    assert not (Path(missing.url) / "student").exists()
