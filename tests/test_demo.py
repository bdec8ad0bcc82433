"""The demo's sampling on a trained run: a grid per strategy, the router's weights over t, how far each strategy's
images are from top-1's, and its prompts (held-out phrasings of test images' captions, one class per row)."""

from __future__ import annotations

import dataclasses

import torch

from testkit.runs import copy_run
from paris import layout
from paris.data import fashion_mnist
from paris.demo import DEMO_STRATEGIES, demo_config, demo_prompts, paper_table_config, sample_strategies
from paris.evaluate.adherence import train_classifier


def test_demo_samples_every_strategy_and_traces_the_routers_weights(trained, tmp_path, config):
    run = copy_run(trained, tmp_path / "run")
    images, labels = fashion_mnist.load(config.data.path, "train", 300)
    classifier = train_classifier(images, labels, epochs=1)
    result = sample_strategies(run, config, classifier, per_class=1)
    rows = result["strategies"]
    assert list(rows) == list(DEMO_STRATEGIES) and result["images_per_strategy"] == 10
    for strategy in DEMO_STRATEGIES:
        assert run.exists(layout.demo_samples(strategy))
    weights = torch.tensor(result["router_weights"]["weights"])  # [class, step, expert], over `full`'s steps
    assert weights.shape == (10, config.sample.steps, 2) and result["router_weights"]["t"][0] == 1.0
    assert torch.allclose(weights.sum(-1), torch.ones(10, config.sample.steps))
    # The run's router sees no text: it is unsure, so mixing every expert draws other pixels than the best one.
    assert rows["top1"]["difference_from_top1"] == 0 and rows["full"]["difference_from_top1"] > 0
    assert all(0 <= row["prompt_adherence"] <= 1 for row in rows.values())
    assert "attribute_adherence" not in rows["top1"]  # the tests' run has the class captions


def test_the_demos_prompts_describe_test_images_class_by_class():
    config = demo_config()
    prompts, labels = demo_prompts(config, 2)
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]
    test_labels = fashion_mnist.load(config.data.path, "test")[1]
    first_two = torch.cat([(test_labels == c).nonzero()[:2, 0] for c in range(10)])
    assert torch.equal(test_labels[first_two], labels)
    assert all(p.startswith(("an image showing", "a catalogue shot of")) for p in prompts)  # held-out templates
    class_captions = dataclasses.replace(config, data=dataclasses.replace(config.data, captions="class"))
    assert demo_prompts(class_captions, 1)[0][9] == fashion_mnist.class_prompt(9)


def test_the_full_demo_scores_both_routers():
    strategies = paper_table_config(1000).strategy_list
    assert strategies == ["monolith", "top1", "top2", "full", "top1@text", "top2@text", "full@text"]
