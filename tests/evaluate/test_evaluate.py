"""Evaluate: the table on the Fashion-MNIST run (monolith at matched compute, FID, adherence, CLIP score) and
on a run that is not Fashion-MNIST (held-out reference images with captions, FID and CLIP score per strategy,
no adherence); the Fréchet distance; the adherence classifier, trained once per machine."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from testkit.runs import assert_user_error, run_in_process
from testkit.tiny_encoders import caption, tiny_models, write_folder, write_tar
from paris.models.clip_score import ClipScore
from paris.data import fashion_mnist
from paris.errors import ParisError
from paris.evaluate.reference import load_reference
from paris.run import RunDir


def test_reference_skips_broken_and_uncaptioned_images(laion_trained, tmp_path):
    folder = write_folder(tmp_path / "ref", 5)
    (folder / "0000a.jpg").write_bytes(b"not a jpeg")  # sorts between 0000 and 0001
    (folder / "0000a.txt").write_text("broken")
    shutil.copy(folder / "0001.jpg", folder / "0001a.jpg")  # no caption beside it
    real = load_reference(laion_trained["config"], 4, str(folder), "folder")
    assert real.prompts == [caption(i) for i in range(4)] and real.labels is None
    assert real.images.shape == (4, 3, 64, 64) and real.images.abs().max() <= 1


def test_reference_is_read_as_the_runs_source_by_default(laion_trained, tmp_path):
    held_out = write_tar(tmp_path / "held-out" / "00000.tar", 100, 5)  # the run's source: webdataset
    real = load_reference(laion_trained["config"], 3, str(held_out))
    assert real.prompts == [caption(i) for i in range(100, 103)] and real.where == f"webdataset {held_out}"


def test_reference_mistakes_are_one_line_errors(laion_trained, tmp_path):
    config = laion_trained["config"]
    with pytest.raises(ParisError, match="gave 1 usable images"):
        load_reference(config, 4, str(write_folder(tmp_path / "one", 1)), "folder")
    with pytest.raises(ParisError, match="--reference-source folder needs --reference"):
        load_reference(config, 4, "", "folder")
    with pytest.raises(ParisError, match="unknown --reference-source 'zip'"):
        load_reference(config, 4, str(tmp_path), "zip")
    fashion = dataclasses.replace(config, data=dataclasses.replace(config.data, source="fashion-mnist",
                                                                   path="/usr/share/datasets/fashion-mnist"))
    real = load_reference(fashion, 3)  # a Fashion-MNIST run: its test split by default, asked for by class
    assert real.prompts[0] == "a photo of a ankle boot" and real.labels.tolist() == [9, 2, 1]


def test_cli_evaluate_without_reference_on_a_webdataset_run(laion_trained):
    result = run_in_process("evaluate", str(laion_trained["path"]), "--strategies", "top1", "--num-samples", "4")
    assert_user_error(result, "webdataset run", "--reference PATH_OR_URL")


def test_evaluate_a_webdataset_run_against_held_out_tars(laion_trained, tmp_path):
    """FID and CLIP score per strategy; no adherence (no classes); the reference's own CLIP score beside them."""
    run_path = tmp_path / "run"
    shutil.copytree(laion_trained["path"], run_path)
    held_out = write_folder(tmp_path / "held-out", 5)
    result = run_in_process("evaluate", str(run_path), "--strategies", "top1,full", "--num-samples", "4", "--steps", "2",
                     "--clip-model", tiny_models()["clip_model"], "--reference", str(held_out),
                     "--reference-source", "folder")
    assert result.returncode == 0, result.stderr
    report = json.loads((run_path / "eval" / "report.json").read_text())
    rows = report["strategies"]
    assert report["num_samples"] == 4 and report["reference"] == f"folder {held_out}"
    assert all(r["fid"] > 0 and 0 <= r["clip_score"] <= 100 and "prompt_adherence" not in r for r in rows.values())
    assert rows["top1"]["expert_passes_per_image_step"] == 1 and rows["full"]["expert_passes_per_image_step"] == 2
    assert "classifier_test_accuracy" not in report
    real = load_reference(laion_trained["config"], 4, str(held_out), "folder")
    assert report["reference_clip_score"] == pytest.approx(ClipScore(tiny_models()["clip_model"])(real.images, real.prompts))
    table = (run_path / "eval" / "report.md").read_text()
    assert table.strip() in result.stdout  # the command prints the table it wrote
    assert "| strategy | FID | CLIP score | held-out loss | expert passes / image / step | s / image |" in table
    assert f"| full | {rows['full']['fid']:.2f} | {rows['full']['clip_score']:.2f} |" in table
    assert (run_path / "eval" / "report.png").exists()


def test_evaluate_writes_the_table(trained, tmp_path, config):
    """A tiny end-to-end evaluate: monolith at matched compute, then FID, adherence, CLIP score and cost per strategy."""
    import shutil

    from testkit.tiny_encoders import tiny_models

    from paris.config import EvalConfig
    from paris.evaluate.table import evaluate_run
    from paris.train.expert import train_monolith
    from paris.train.router import train_router

    run_path = tmp_path / "run"
    shutil.copytree(trained, run_path)
    run = RunDir(str(run_path))
    summary = train_monolith(run, config)
    e = config.expert  # matched compute (split-batch: the experts' steps at twice their batch), all data
    assert summary["samples_seen"] == 2 * e.steps * e.batch_size and summary["cluster_size"] == 300
    # A second router of the same experts, which reads the prompt: its rows are RULE@text.
    train_router(run, dataclasses.replace(config, router=dataclasses.replace(config.router, use_text=True)),
                 name="text")
    evaluation = EvalConfig("monolith,top1,full,full@text", num_samples=6, classifier_images=600,
                            clip_model=tiny_models()["clip_model"])  # grey images, an RGB CLIP
    report = evaluate_run(str(run_path), evaluation, steps=2, route_every=2)
    rows = report["strategies"]
    assert list(rows) == ["monolith", "top1", "full", "full@text"]
    assert rows["full@text"]["held_out_loss"] != rows["full"]["held_out_loss"]  # another router's weights
    assert rows["monolith"]["expert_passes_per_image_step"] == 1 and rows["full"]["expert_passes_per_image_step"] == 2
    assert all(r["fid"] > 0 and 0 <= r["prompt_adherence"] <= 1 and 0 <= r["clip_score"] <= 100 for r in rows.values())
    assert 0 <= report["classifier_test_accuracy"] <= 1 and 0 <= report["reference_clip_score"] <= 100
    # Per class, over the classes of the prompts (the first 6 test images): the overall figure is their mean by count.
    labels = fashion_mnist.load(config.data.path, "test", 6)[1]
    counts = {fashion_mnist.CLASSES[c]: n for c, n in enumerate(torch.bincount(labels).tolist()) if n}
    for by_class, overall in [(report["classifier_test_accuracy_by_class"], report["classifier_test_accuracy"]),
                              *((r["prompt_adherence_by_class"], r["prompt_adherence"]) for r in rows.values())]:
        assert list(by_class) == list(counts)
        assert sum(by_class[c] * n for c, n in counts.items()) / 6 == pytest.approx(overall)
    table = run.read_text("eval/report.md")
    assert "| prompt adherence by class | " + " | ".join(counts) + " |" in table
    assert f"| top1 | {report['strategies']['top1']['prompt_adherence_by_class'][next(iter(counts))]:.0%} |" in table
    assert all(r["held_out_loss"] == pytest.approx(sum(r["held_out_loss_by_t"].values()) / 10) for r in rows.values())
    assert rows["top1"]["held_out_loss"] != rows["monolith"]["held_out_loss"]
    assert ("| strategy | FID | prompt adherence | CLIP score | near-copies | held-out loss | expert passes / image / step "
            "| s / image |" in table)
    assert report["copy_threshold"] > 0 and f"(L2 {report['copy_threshold']:.2f})" in table
    for r in rows.values():  # per expert: over the images whose nearest training image is in its cluster
        assert 0 <= r["memorised_share"] <= 1 and set(r["memorised_share_by_expert"]) <= {"0", "1"}
    assert "| top1 |" in table
    assert report["route_every"] == 2 and "router every 2 steps" in table
    assert report["baseline"] == {"protocol": "split-batch", "steps": e.steps, "batch_size": 2 * e.batch_size,
                                  "samples_seen": 2 * e.steps * e.batch_size}
    assert f"monolith: {e.steps:,} steps of {2 * e.batch_size} ({2 * e.steps * e.batch_size:,} samples, split-batch protocol)" in table


def test_held_out_loss_is_the_training_objective_on_the_reference_images(trained, config):
    """One expert alone: per t of the grid, the mean of |v(x_t, t, caption) - (noise - x0)|^2 over the images,
    with batch i's noise drawn from seed + i; the same figures on a second call, others with another seed."""
    from paris.evaluate.heldout import TIMES, held_out_loss
    from paris.inference.pipeline import ParisPipeline

    pipe = ParisPipeline.from_run(str(trained), expert=0)
    real = load_reference(config, 6)
    got = held_out_loss(pipe.mixture, "top1", real.images, real.prompts, seed=3, batch_size=4)
    model, (text, mask) = pipe.mixture.experts[0], pipe.mixture.text_encoder.encode(real.prompts)
    noise = torch.cat([torch.randn(n, *real.images.shape[1:], generator=torch.Generator().manual_seed(3 + i))
                       for i, n in [(0, 4), (4, 2)]])
    with torch.no_grad():
        expected = {}
        for t in TIMES:
            x_t = (1 - t) * real.images + t * noise
            v = model(x_t, torch.full((6,), t), text, None if mask.all() else mask)
            expected[f"{t:g}"] = (v - (noise - real.images)).pow(2).mean().item()
    assert list(got["held_out_loss_by_t"]) == [f"{t:g}" for t in TIMES] == list(expected)
    assert got["held_out_loss_by_t"] == pytest.approx(expected, rel=1e-5)
    assert got["held_out_loss"] == pytest.approx(sum(expected.values()) / len(TIMES), rel=1e-5)
    assert held_out_loss(pipe.mixture, "top1", real.images, real.prompts, seed=3, batch_size=4) == got
    other = held_out_loss(pipe.mixture, "top1", real.images, real.prompts, seed=4, batch_size=4)
    assert all(other["held_out_loss_by_t"][t] != loss for t, loss in got["held_out_loss_by_t"].items())


def test_adherence_by_class_counts_each_class_apart():
    from paris.evaluate.adherence import accuracy_by_class

    labels = torch.tensor([0, 0, 0, 0, 5, 5, 9])
    predicted = torch.tensor([0, 0, 0, 6, 7, 5, 9])  # a T-shirt seen as a shirt, a sandal as a sneaker
    assert accuracy_by_class(predicted, labels) == {"T-shirt": 0.75, "sandal": 0.5, "ankle boot": 1.0}


def test_frechet_distance_matches_the_closed_form():
    """Gaussians with known means and covariances: FID = |mu_a - mu_b|^2 + Tr(Sa + Sb - 2 (Sa Sb)^1/2)."""
    import numpy as np

    from paris.evaluate.fid import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 3))
    b = rng.normal(1, 2, (20000, 3))  # mean 1, covariance 4 I
    assert frechet_distance(a, b) == pytest.approx(3 * 1 + 3 * (1 + 4 - 2 * 2), rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_with_fewer_samples_than_features():
    """Zero features change nothing: 5 and 7 samples in 3 dimensions (covariances of full rank) give the same FID
    padded to 10 dimensions, where the covariances are singular and the small-sample formula is used."""
    import numpy as np

    from paris.evaluate.fid import frechet_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (5, 3)), rng.normal(1, 2, (7, 3))
    padded = [np.pad(x, ((0, 0), (0, 7))) for x in (a, b)]
    assert frechet_distance(*padded) == pytest.approx(frechet_distance(a, b), rel=1e-9)


@pytest.mark.slow  # loads Inception-v3 and runs it at 299x299: about 2.5 s
def test_inception_features_are_the_networks_on_the_standard_input():
    """The channels-last input changes only the memory layout: the features are the network's on the plain
    tensor, quantised to 8 bits, resized to 299 and scaled to its input range."""
    import torch.nn.functional as F

    from paris.evaluate.fid import InceptionFeatures

    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = InceptionFeatures()
    x = F.interpolate(((images + 1) * 127.5).round(), size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = features.net((x.expand(-1, 3, -1, -1) - 128) / 128).double().numpy()
    got = features(images)
    assert got.shape == (2, 2048)
    assert abs(got - expected).max() <= 1e-4 * abs(expected).max()


@pytest.mark.slow  # trains the classifier: 5.7 s alone on 2 threads (2.6 s on one)
def test_the_adherence_classifier_is_trained_once_then_read_from_the_cache(monkeypatch, config):
    import paris.evaluate.adherence as evaluate

    first = evaluate.fashion_classifier(config.data.path, limit=256, seed=3)
    monkeypatch.setattr(evaluate, "train_classifier", lambda *a, **k: pytest.fail("trained again"))
    again = evaluate.fashion_classifier(config.data.path, limit=256, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not again.training  # dropout and batch statistics frozen for scoring


def test_the_adherence_classifier_does_not_change_with_the_sampling_seed(trained, monkeypatch):
    """--seed draws the samples; the classifier that scores them is the machine's one (seed 0), so a guidance
    search at seed 1 measures with the same instrument and trains no second one."""
    import paris.evaluate.table as table
    from paris.config import EvalConfig

    asked = []

    class Measured(Exception):
        pass

    def classifier(*args, **kwargs):
        asked.append((args, kwargs))
        raise Measured  # the rest of the evaluation is tested above

    monkeypatch.setattr(table, "fashion_classifier", classifier)
    with pytest.raises(Measured):
        table.evaluate_run(str(trained), EvalConfig("top1", num_samples=4, seed=7))
    (path, limit), kwargs = asked[0]
    assert limit is None and kwargs.get("seed", 0) == 0


def test_the_reference_of_a_described_run_asks_for_what_its_images_show(config):
    """With data.captions described, a reference prompt is a held-out phrasing of its image's caption, so the
    real images earn every attribute word their prompts ask for (the measure's ceiling)."""
    from paris.data.fashion_captions import (HELD_OUT_TEMPLATES, asked_words, attribute_adherence, attribute_words,
                                             measure)

    described = dataclasses.replace(config, data=dataclasses.replace(config.data, captions="described"))
    real = load_reference(described, 200)
    assert all(p.startswith(tuple(t.split("{}")[0] for t in HELD_OUT_TEMPLATES)) for p in real.prompts)
    asked = [asked_words(p) for p in real.prompts]
    assert sum(map(len, asked)) > 200  # about 2 of 3 attributes said per prompt
    overall, by_attribute = attribute_adherence(asked, attribute_words(measure(real.images), real.labels))
    assert overall == 1.0 and by_attribute == {"tone": 1.0, "size": 1.0, "texture": 1.0}
    assert load_reference(config, 3).prompts == [fashion_mnist.class_prompt(int(y)) for y in real.labels[:3]]


def test_attribute_adherence_scores_the_generated_images_batch_by_batch(trained, config):
    """sample_and_score's figure equals the measure applied to all its images at once (batches and labels aligned)."""
    from paris.data.fashion_captions import asked_words, attribute_adherence, attribute_words, measure
    from paris.evaluate.table import Measures, sample_and_score
    from paris.inference.pipeline import ParisPipeline

    described = dataclasses.replace(config, data=dataclasses.replace(config.data, captions="described"))
    real = load_reference(described, 7)
    row = sample_and_score(ParisPipeline.from_run(str(trained)), "top1", real.prompts, real.labels,
                           dataclasses.replace(config.sample, steps=2), 0, 3, Measures(attributes=True),
                           keep_images=True)
    expected = attribute_adherence([asked_words(p) for p in real.prompts],
                                   attribute_words(measure(row["images"]), real.labels))
    assert (row["attribute_adherence"], row["attribute_adherence_by_attribute"]) == expected


def test_nearest_training_distances_are_exact_on_a_tiny_set(monkeypatch):
    """Chunked (3 training images at a time, so the best moves between chunks), against every pair measured: the
    same nearest image and its distance."""
    from paris.evaluate import memorisation

    monkeypatch.setattr(memorisation, "CHUNK", 3)
    generator = torch.Generator().manual_seed(0)
    training, queries = torch.randn(10, 1, 4, 4, generator=generator), torch.randn(5, 1, 4, 4, generator=generator)
    clusters = torch.arange(10)  # one per image: the cluster reported names the nearest image
    distances, nearest_clusters = memorisation.NearestTraining(training, clusters)(queries)
    pairs = torch.cdist(queries.flatten(1), training.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")
    assert torch.equal(nearest_clusters, clusters[pairs.argmin(1)])  # the nearest itself, not an approximation
    torch.testing.assert_close(distances, pairs.min(1).values, rtol=1e-6, atol=0)  # to float rounding


def test_copies_of_training_images_are_counted_and_held_out_images_are_not(config):
    """The threshold leaves exactly 2 of 200 held-out images below it (1%); slightly perturbed copies of training
    images all fall below, each counted for the cluster of the image it copies."""
    from paris.evaluate.memorisation import NearestTraining, copy_threshold, memorised_shares

    images = fashion_mnist.load(config.data.path, "train", limit=400)[0]
    held_out = fashion_mnist.load(config.data.path, "test", limit=200)[0]
    nearest = NearestTraining(images, torch.arange(400) % 4)
    threshold = copy_threshold(nearest(held_out)[0])
    assert memorised_shares(*nearest(held_out), threshold)[0] == pytest.approx(0.01)
    copies = images[[5, 6, 7, 8, 9]] + 0.001 * torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    distances, clusters = nearest(copies)
    assert clusters.tolist() == [1, 2, 3, 0, 1] and (distances < 0.1).all()
    assert memorised_shares(distances, clusters, threshold) == (1.0, {"0": 1.0, "1": 1.0, "2": 1.0, "3": 1.0})
