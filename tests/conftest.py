"""Shared fixtures: one tiny prepared run (real Fashion-MNIST, real MiniLM) built once per session.

Every config here is tiny so the whole suite runs in a few minutes on 2 CPU cores. Tests that change a
run work on a copy (`copy_run`), never on the session runs themselves. The helpers the tests and the
benchmarks share live in testkit/, next to paris/; this file holds fixtures only.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here: a failed download would retry for 25-50 s
os.environ["PARIS_CACHE"] = tempfile.mkdtemp(prefix="paris-cache-")  # the tests never touch the user's cache
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="hf-modules-")  # where diffusers imports a pipeline.py
# torch.compile's code and paris's compile times: a run of the suite starts cold, as CI does, and leaves no trace
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")

import pytest  # noqa: E402

pytest.register_assert_rewrite("testkit")  # its asserts report values, as the tests' own do

from paris.config import PartitionConfig, RunConfig  # noqa: E402
from paris.run import RunDir  # noqa: E402
from testkit.runs import copy_run, record_writes, tiny_config  # noqa: E402


# Fixtures that train models: every test that uses one, directly or through another fixture, is slow however
# quick its own body. seeded and single are module fixtures of train/test_seed_and_baseline.py and
# train/test_distributed.py.
TRAINING_FIXTURES = {"trained", "laion_trained", "seeded", "single", "resume_reference"}


def pytest_collection_modifyitems(items):
    for item in items:
        if TRAINING_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (moto's, on 127.0.0.1), started once: testkit.s3.S3Server."""
    from testkit.s3 import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server):
    """An empty bucket on the S3 server, reached by plain s3:// URLs while the test runs: "s3://<bucket>"."""
    with s3_server.bucket() as url:
        yield url


@pytest.fixture(scope="session")
def resume_reference(tmp_path_factory) -> tuple[Path, dict]:
    """The run the kill-and-resume tests train (testkit.resume.make_run), untrained, and the state an
    uninterrupted training of its expert 0 ends in."""
    from testkit.resume import make_run, straight

    base = Path(make_run(tmp_path_factory.mktemp("resume") / "base").url)
    return base, straight(copy_run(base, tmp_path_factory.mktemp("resume") / "straight"))


@pytest.fixture(scope="session")
def config() -> RunConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, config):
    """A prepared run (data/ + config.yaml) and the order in which prepare wrote its files."""
    from paris.data.prepare import prepare

    path = tmp_path_factory.mktemp("prepared") / "run"
    run = RunDir(str(path))
    writes = record_writes(run)
    manifest = prepare(run, config)
    return {"path": path, "manifest": manifest, "writes": list(writes)}


@pytest.fixture(scope="session")
def partitioned(tmp_path_factory, prepared, config) -> Path:
    """A copy of the prepared run, partitioned into K=2 clusters."""
    from paris.clusters.partition import partition

    run = copy_run(prepared["path"], tmp_path_factory.mktemp("partitioned") / "run")
    partition(run, config.partition)
    return Path(run.url)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, partitioned, config) -> Path:
    """A copy of the partitioned run with both experts (6 steps each) and the router (10 steps) trained."""
    from paris.train.expert import train_expert
    from paris.train.router import train_router

    run = copy_run(partitioned, tmp_path_factory.mktemp("trained") / "run")
    for k in range(config.partition.num_clusters):
        train_expert(run, config, k)
    train_router(run, config)
    return Path(run.url)


@pytest.fixture(scope="session")
def text_encoder(config):
    """The real MiniLM text encoder, loaded once."""
    from paris.models.encoders import build_text_encoder

    return build_text_encoder(config.data.text_encoder, config.data.text_encoder_path, config.data.max_tokens)


@pytest.fixture(scope="session")
def models() -> dict[str, str]:
    """Tiny random VAE, CLIP text encoder, DINOv2 and whole CLIP, saved once (testkit.tiny_encoders): name -> path."""
    from testkit.tiny_encoders import tiny_models

    return tiny_models()


@pytest.fixture(scope="session")
def laion_trained(tmp_path_factory) -> dict:
    """Paris's pipeline at test size: 3 webdataset tars of 8 JPEGs -> SD-VAE latents, CLIP token ids, DINOv2
    features (tiny random models) -> K=2 -> both experts and the router trained. The run's path, its config and
    the experts' training summaries."""
    from testkit.tiny_encoders import laion_config, tiny_models, write_tar

    from paris.data.prepare import prepare
    from paris.clusters.partition import partition
    from paris.train.expert import train_expert
    from paris.train.router import train_router

    root = tmp_path_factory.mktemp("laion")
    for i in range(3):
        write_tar(root / "tars" / f"{i:05d}.tar", 8 * i, 8)
    config = dataclasses.replace(tiny_config(), data=laion_config(tiny_models(), "webdataset",
                                                                  f"{root}/tars/{{00000..00002}}.tar").data)
    run = RunDir(str(root / "run"))
    prepare(run, config)
    partition(run, PartitionConfig(num_clusters=2, seed=0))
    summaries = [train_expert(run, config, k) for k in range(2)]
    train_router(run, config)
    return {"path": root / "run", "config": config, "summaries": summaries}


@pytest.fixture(scope="session")
def three_experts(tmp_path_factory):
    """A pipeline folder holding 3 small random experts, a random router and a tiny CLIP text encoder: top2
    uses 2 of the 3 experts per sample, so a cap of 1 evicts at every step."""
    import torch

    from paris.config import DiTConfig, RouterConfig
    from paris.models.dit import DiT
    from paris.models.encoders import IdentityAutoencoder, TextEncoder
    from paris.models.router import Router
    from paris.inference.pipeline import ParisPipeline
    from paris.inference.mixture import ExpertPool, Mixture
    from testkit.runs import randomize_zero_params
    from testkit.tiny_encoders import save_tiny_clip

    root = tmp_path_factory.mktemp("three-experts")
    text_encoder = TextEncoder.load("clip", str(save_tiny_clip(root / "clip")), 77)
    expert = DiTConfig(input_size=8, in_channels=1, patch_size=2, hidden_size=32, depth=2, num_heads=2,
                       text_dim=text_encoder.dim)
    router = RouterConfig(input_size=8, in_channels=1, patch_size=2, hidden_size=32, depth=1, num_heads=2,
                          num_experts=3)
    with torch.random.fork_rng():
        experts = []
        for k in range(3):
            torch.manual_seed(k)
            experts.append(randomize_zero_params(DiT(expert), seed=k, std=0.1))
        torch.manual_seed(14)  # top2 uses all three experts for test_inference.PROMPTS, seed 0
        router = randomize_zero_params(Router(router), seed=14, std=0.5)
    mixture = Mixture(ExpertPool([lambda e=e: e for e in experts]), router, text_encoder, IdentityAutoencoder(),
                      (1, 8, 8))
    config = {"num_experts": 3, "latent_shape": [1, 8, 8], "autoencoder": "identity", "autoencoder_path": "",
              "latent_scale": 1.0, "text_encoder": "clip", "max_tokens": 77}
    ParisPipeline(mixture, config).save_pretrained(str(root / "pipeline"))
    return root / "pipeline"
