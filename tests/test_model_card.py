"""save_pretrained writes the Hub's model card, README.md: YAML front matter the Hub reads, and a body that says
what the folder holds and how to load it, from what the pipeline knows."""

from __future__ import annotations

import json

import yaml

from paris.config import SampleConfig
from paris.inference.model_card import Network, model_card
from paris.inference.pipeline import ParisPipeline
from paris.run import RunDir


def _front_matter_and_body(card: str) -> tuple[dict, str]:
    empty, front, body = card.split("---\n", 2)
    assert empty == ""  # the front matter opens the file
    return yaml.safe_load(front), body


def test_the_card_has_the_hubs_metadata_and_names_the_experts_and_the_sampling_defaults(three_experts):
    front, body = _front_matter_and_body((three_experts / "README.md").read_text())
    assert front["library_name"] == "diffusers" and front["pipeline_tag"] == "text-to-image"
    assert front["license"] == "other"  # not recorded: the body says so
    assert {"paris", "mixture-of-experts", "diffusion", "text-to-image"} <= set(front["tags"])
    assert "a Paris mixture of 3 diffusion experts" in body and "| expert_2 | 51,012 |" in body
    assert "It weighs the 3 experts from the noisy latent and the time, not the prompt" in body
    assert all(f"| {key} | {value} |" in body for key, value in vars(SampleConfig()).items())
    assert "training images" not in body  # no partition known: nothing said of the clusters
    assert f'DiffusionPipeline.from_pretrained("{three_experts.name}", trust_remote_code=True)' in body
    assert f'paris generate {three_experts.name} -p' in body and "arXiv:2510.03434" in body


def test_what_the_pipeline_knows_goes_into_the_card_and_stays_in_config_json(three_experts, tmp_path, monkeypatch):
    pipe = ParisPipeline.from_pretrained(str(three_experts))
    pipe.config.update(cluster_sizes=[1200, 800, 1000], license="apache-2.0")
    pipe.mixture.retired.add(1)
    writes = []
    real_write = RunDir.write_bytes
    monkeypatch.setattr(RunDir, "write_bytes", lambda run, rel, data: (real_write(run, rel, data), writes.append(rel)))
    pipe.save_pretrained(str(tmp_path / "copy"))
    assert writes[-2:] == ["README.md", "config.json"]  # config.json last: a folder with one is complete
    front, body = _front_matter_and_body((tmp_path / "copy" / "README.md").read_text())
    assert front["license"] == "apache-2.0" and "## License\n\napache-2.0." in body
    assert "| expert_0 | 51,012 | 1,200 |" in body and "| expert_1 | retired: not saved | 800 |" in body
    config = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert config["cluster_sizes"] == [1200, 800, 1000] and config["license"] == "apache-2.0"
    assert ParisPipeline.from_pretrained(str(tmp_path / "copy")).config["cluster_sizes"] == [1200, 800, 1000]


def test_a_single_model_has_no_router_and_no_mixture_in_its_card():
    config = {"num_experts": 1, "latent_shape": [4, 32, 32], "autoencoder": "sd-vae", "text_encoder": "clip",
              "max_tokens": 77}
    card = model_card("monolith", config, SampleConfig(strategy="top1"), {0: Network("DiT", {"depth": 28}, 675)},
                      router=None)
    front, body = _front_matter_and_body(card)
    assert front["pipeline_tag"] == "text-to-image"
    assert "# monolith: a single Paris diffusion model" in body and "## Router\n\nNone" in body
    assert "DiT (depth 28)" in body and "4x32x32 tensors in the latents of Stable Diffusion's VAE" in body
