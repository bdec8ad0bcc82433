"""Every bad input gets one clear line, exit code 2, no traceback, and leaves the run directory as it was.

The commands run through `paris.cli.main` in this process (the console script's own entry: argument parsing,
the error contract, the exit code), which keeps a hundred cases fast; tests/test_cli.py runs a few as real processes.
"""

from __future__ import annotations

import json
import os
import socket
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testkit.damage import DAMAGES, damage
from testkit.release import write_release
from testkit.runs import FASHION_MNIST, copy_run, run_paris, snapshot
from paris.config import RunConfig, apply_overrides
from paris.errors import ParisError
from paris.roster.retired import remove_expert
from paris.run import RunDir

pytestmark = pytest.mark.slow  # the fixture trains a tiny run

RUN, NEW = "{run}", "{new}"
CASES = [  # (arguments, words the one-line error must hold[, the RUN_CHANGES done to the run first])
    # prepare
    ([NEW, "--data", "/nonexistent"], "not found"),
    ([NEW, "--limit", "0"], "'data.limit' must be at least 1, got 0"),
    ([NEW, "--limit", "-1"], "'data.limit' must be at least 1, got -1"),
    ([NEW, "--limit", "ten"], "Invalid value for '--limit'"),
    ([NEW, "--config", "/nonexistent.yaml"], "config file /nonexistent.yaml not found"),
    ([NEW, "--set", "data.source=zip"], "'data.source' must be one of fashion-mnist, folder, webdataset, hf"),
    ([NEW, "--shard-range", "5:2"], "bad --shard-range '5:2'"),
    ([NEW, "--set", "data.image_size=0"], "'data.image_size' must be at least 1"),
    ([NEW, "--set", "nope"], "bad override 'nope'"),
    ([NEW, "--set", "data.nope=1"], "unknown config key 'data.nope'"),
    ([NEW, "--set", "nope.steps=1"], "unknown config section 'nope'"),
    ([NEW, "--set", "data.latent_scale=-1"], "'data.latent_scale' must be above 0"),
    ([NEW, "--set", "data.text_encoder=t5"], "'data.text_encoder' must be one of minilm, clip"),
    ([RUN, "--set", "data.limit=10"], "prepared with another data config"),
    # merge, partition, export
    (["merge", NEW], "no prepared parts"),
    (["partition", RUN, "--clusters", "0"], "'partition.num_clusters' must be at least 1, got 0"),
    (["partition", RUN, "--clusters", "100000"], "cannot make 100000 clusters"),
    (["partition", RUN, "--method", "spectral"], "'partition.method' must be one of kmeans, random, labels"),
    (["partition", RUN, "--seed", "abc"], "Invalid value for '--seed'"),
    (["partition", RUN, "--set", "partition.iterations=0"], "'partition.iterations' must be at least 1"),
    (["partition", RUN, "--method", "labels", "--clusters", "3"], "use --clusters 10"),
    (["partition"], "Missing argument"),
    (["export-clusters", RUN, "--cluster", "9"], "cluster 9 does not exist"),
    # convert-release, serve
    (["convert-release", RUN, NEW], "is not a Paris release download"),
    (["convert-release", RUN], "give the folder to write"),
    (["convert-release", RUN, NEW, "--timestep-map", "999t"], "--timestep-map must be 1000t or round(999t)"),
    (["serve", RUN, "--host", "0.0.0.0"], "lets other machines in: set --api-key KEY"),
    (["serve", RUN, "--max-steps", "0"], "--max-steps must be at least 1, got 0"),
    (["serve", RUN, "--host", "no.such.host.invalid"], "is not an address of this machine"),
    (["serve", RUN, "--log-level", "loud"], "--log-level must be one of debug, info, warning, error, got 'loud'"),
    (["serve", RUN, "--port", "99999"], "--port must be from 1 to 65535, got 99999"),
    (["serve", RUN, "--port", "0"], "--port must be from 1 to 65535, got 0"),
    (["serve", RUN, "--port", "-80"], "--port must be from 1 to 65535, got -80"),
    (["serve", RUN, "--port", "http"], "Invalid value for '--port'"),
    (["serve", RUN, "--max-batch", "0"], "--max-batch must be at least 1, got 0"),
    (["serve", RUN, "--max-images", "0"], "--max-images must be at least 1, got 0"),
    (["serve", RUN, "--max-prompt-chars", "0"], "--max-prompt-chars must be at least 1, got 0"),
    (["serve", RUN, "--max-body-bytes", "-1"], "--max-body-bytes must be at least 1, got -1"),
    (["serve", RUN, "--max-queue", "0"], "--max-queue must be at least 1, got 0"),
    (["serve", RUN, "--quantize", "int4"], "'sample.quantize' must be one of none, int8, int8-dynamic; got 'int4'"),
    # train-expert
    (["train-expert", RUN, "--expert", "9"], "expert 9 does not exist"),
    (["train-expert", RUN, "--expert", "-1"], "expert -1 does not exist"),
    (["train-expert", RUN, "--expert", "abc"], "Invalid value for '--expert'"),
    (["train-expert", RUN], "Missing option '--expert'"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.lr=-1"], "'expert.lr' must be above 0"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.preset=nope"], "'expert.preset' must be one of"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.steps=0"], "'expert.steps' must be at least 1"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.t_distribution=foo"], "'expert.t_distribution' must be one of"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.caption_dropout=2"], "'expert.caption_dropout' must be in [0, 1]"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.batch_size=0"], "'expert.batch_size' must be at least 1"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.precision=fp8"], "'expert.precision' must be one of"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.threads=0"], "'expert.threads' must be at least 1"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.ema_decay=1.5"], "'expert.ema_decay' must be in [0, 1]"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.steps=ten"], "'expert.steps' must be int"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.micro_batch_size=7"], "micro_batch_size 7 does not divide"),
    (["train-expert", RUN, "-e", "0", "--init-from", "nowhere/final"], "nowhere/final"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.steps=2"], "past the 2 steps asked for"),
    # train-router, train-monolith, train-seed
    (["train-router", RUN, "--set", "router.val_fraction=1.0"], "'router.val_fraction' must be in [0, 1)"),
    (["train-router", RUN, "--set", "router.preset=XL/2"], "'router.preset' must be one of B/2, tiny"),
    (["train-router", RUN, "--set", "router.epochs=0"], "'router.epochs' must be above 0"),
    (["train-router", RUN, "--init-from", "nowhere/final"], "nowhere/final"),
    (["train-router", RUN, "--name", "router/../x"], "bad router name 'router/../x'"),
    (["train-monolith", RUN, "--protocol", "same-flops"], "'baseline.protocol' must be one of"),
    (["train-monolith", RUN, "--batch-size", "0"], "'baseline.batch_size' must be at least 1"),
    (["train-monolith", RUN, "--batch-size", "7"], "does not divide the experts'"),
    (["train-seed", RUN, "--steps", "0"], "--steps must be at least 1"),
    (["train-seed", RUN], "Missing option '--steps'"),
    # distill (a run without experts, a teacher missing an expert: tests/train/test_distill.py)
    (["distill", RUN, "--teacher", "top9"], "unknown strategy 'top9'"),
    (["distill", RUN, "--teacher", "sample-k:2"], "sample-k draws experts at random"),
    (["distill", RUN, "--teacher", "oracle:5"], "expert 5 does not exist (the run has 2)"),
    (["distill", RUN, "--source", "expert-samples"], "expert 0 has published no samples"),
    (["distill", RUN, "--source", "web"], "'distill.source' must be one of data, expert-samples"),
    (["distill", RUN, "--student-preset", "huge"], "'distill.preset' must be one of"),
    (["distill", RUN, "--set", "distill.guidance_range=[4, 2]"], "'distill.guidance_range' must be [low, high]"),
    (["distill", RUN, "--name", "Big"], "bad student name 'Big'"),
    (["distill", RUN, "--init-from", "nowhere/final"], "nowhere/final"),
    # generate
    (["generate", RUN], "no prompts given"),
    (["generate", RUN, "-p", "a bag", "--model", "twin"], "--model 'twin': choose monolith, student or student@NAME"),
    (["generate", RUN, "-p", "a bag", "--model", "student"], "distil it with `paris distill RUN`"),
    (["generate", RUN, "-p", "a bag", "--strategy", "top7"], "unknown strategy 'top7'"),
    (["generate", RUN, "-p", "a bag", "--strategy", "topk:9"], "needs k between 1 and the number of experts (2)"),
    (["generate", RUN, "-p", "a bag", "--strategy", "nucleus:2"], "needs a probability in (0, 1]"),
    (["generate", RUN, "-p", "a bag", "--num", "0"], "--num must be at least 1, got 0"),
    (["generate", RUN, "-p", "a bag", "--steps", "0"], "'sample.steps' must be at least 1, got 0"),
    (["generate", RUN, "-p", "a bag", "--guidance", "-1"], "'sample.guidance' must be at least 0"),
    (["generate", RUN, "-p", "a bag", "--guidance", "inf"], "'sample.guidance' must be a finite number, got inf"),
    (["generate", RUN, "-p", "a bag", "--seed", "18446744073709551616"],
     "'sample.seed' must be in [-9223372036854775808, 18446744073709551615], got 18446744073709551616"),
    (["generate", RUN, "-p", "a bag", "--shift", "0"], "'sample.shift' must be in [0.01, 100]"),
    (["generate", RUN, "-p", "a bag", "--sampler", "rk4"], "'sample.sampler' must be one of euler, heun"),
    (["generate", RUN, "-p", "a bag", "--guidance-mode", "before"], "'sample.guidance_mode' must be one of"),
    (["generate", RUN, "-p", "a bag", "--route-every", "0"], "'sample.route_every' must be at least 1"),
    (["generate", RUN, "-p", "a bag", "--precision", "fp16"], "'sample.precision' must be one of auto, bf16, fp32; got 'fp16'"),
    (["generate", RUN, "-p", "a bag", "--quantize", "int4"], "'sample.quantize' must be one of none, int8, int8-dynamic"),
    (["generate", RUN, "-p", "a bag", "--out", "samples"], "needs an image file name ending in .png"),
    (["generate", RUN, "-p", "a bag", "--out", "/"], "is a directory"),
    (["generate", RUN, "-p", "a bag", "--max-resident-experts", "0"], "--max-resident-experts must be at least 1"),
    (["generate", RUN, "-p", "a bag", "--device", "tpu9"], "unknown device 'tpu9'"),
    (["generate", "/nonexistent", "-p", "a bag"], "not a Paris pipeline folder"),
    (["generate", RUN, "-p", "a bag", "--router", "../x"], "bad router name '../x'"),
    (["generate", RUN, "-p", "a bag", "--router", "text"], "paris train-router RUN --name text"),
    (["generate", RUN, "-p", "a bag", "--lora-scale", "1:0.5"], "lora_scale '1:0.5' is not EXPERT=STRENGTH"),
    (["generate", RUN, "-p", "a bag", "--lora-scale", "1=-1"], "lora_scale '1=-1' is not EXPERT=STRENGTH"),
    (["generate", RUN, "-p", "a bag", "--lora-scale", "1=1", "--lora-scale", "1=0"], "lora_scale '1=0' is not"),
    (["generate", RUN, "-p", "a bag", "--lora-scale", "0=0.5"], "names expert 0, which is not a LoRA expert"),
    (["generate", RUN, "-p", "a bag", "--lora-scale", "5=0.5"], "names expert 5, but the model has experts 0..1"),
    # LoRA experts (a LoRA's own refusals, of a changed or missing base: tests/test_lora.py)
    (["train-expert", RUN, "-e", "1", "--init-from", "experts/0/final", "--lora", "0"],
     "'expert.lora_rank' must be at least 1, got 0"),
    (["train-expert", RUN, "-e", "1", "--lora", "4"], "adapts a base model: give it one with --init-from"),
    (["train-expert", RUN, "-e", "1", "--init-from", "experts/0/final", "--lora", "4", "--lora-targets", "attn.q,ffn"],
     "'expert.lora_targets[1]' must be one of attn.q"),
    (["train-expert", RUN, "-e", "1", "--init-from", "experts/0/final", "--lora", "4", "--set",
      "expert.init_fresh_head=true"], "would leave a random head frozen under a LoRA"),
    (["merge-lora", RUN, "-e", "0", "--out", NEW], "is not a LoRA expert"),
    # evaluate
    (["evaluate", RUN, "--strategies", ","], "--strategies is empty"),
    (["evaluate", RUN, "--strategies", "top9x"], "unknown strategy 'top9x'"),
    (["evaluate", RUN, "--num-samples", "1"], "--num-samples must be at least 2"),
    (["evaluate", RUN, "--quantize", "4bit"], "'sample.quantize' must be one of none, int8, int8-dynamic; got '4bit'"),
    (["evaluate", RUN, "--strategies", "top2@Text"], "bad router name 'Text'"),
    (["evaluate", RUN, "--strategies", "top9@text"], "unknown strategy 'top9'"),
    (["evaluate", RUN, "--strategies", "top1", "--reference-source", "folder"], "needs --reference PATH_OR_URL"),
    (["evaluate", RUN, "--strategies", "top1", "--num-samples", "4", "--steps", "0"], "'sample.steps' must be at least 1"),
    (["evaluate", RUN, "--strategies", "top1", "--num-samples", "4", "--inception", "/nonexistent.pt"], "not found"),
    (["evaluate", RUN, "--strategies", "monolith", "--num-samples", "4"], "monolith/final"),
    (["evaluate", RUN, "--strategies", "student@small", "--num-samples", "4"], "paris distill RUN --name small"),
    # damaged weights (testkit.damage) through convert-release and --init-from; outputs that overlap their input
    *[(["convert-release", f"{{release:{name}}}", NEW], words) for name, (_, words) in DAMAGES.items()],
    *[(["train-expert", RUN, "-e", "0", "--init-from", f"{{start:{name}}}"], words)
      for name, (_, words) in DAMAGES.items() if name in ("cut-in-data", "pickle", "unknown-dtype", "header-not-json")],
    (["train-router", RUN, "--init-from", "{start:absurd-header-length}"], "too few for the header it begins with"),
    (["convert-release", "{release:}", "{release:}"], "is the input"),
    (["convert-release", "{release:}", "{release:}/paris"], "is inside the input"),
    (["generate", RUN, "-p", "a bag", "--out", "{run}/x.png"], "is inside the input"),
    # launch, status, demo
    (["launch", RUN, "--backend", "kube"], "unknown backend 'kube'"),
    (["launch", RUN, "--experts", "0,7"], "experts [7] do not exist"),
    (["launch", RUN, "--experts", "0,0"], "--experts names expert 0 more than once"),
    (["launch", RUN, "--experts", "a,b"], "--experts must be comma-separated numbers"),
    (["launch", RUN, "--jobs", "0"], "--jobs must be at least 1"),
    (["launch", RUN, "--backend", "skypilot"], "must be a bucket URL"),
    (["status", "/nonexistent"], "missing /nonexistent/config.yaml"),
    (["demo", "--out", NEW, "--full", "--num-samples", "1"], "--num-samples must be at least 2"),
    # a run whose files were damaged or changed (RUN_CHANGES: done to a copy of the run first)
    (["train-expert", RUN, "-e", "0", "--set", "expert.steps=7"], "000000.safetensors is damaged: its latents",
     "latents altered"),
    (["train-router", RUN, "--name", "again"], "000000.safetensors is damaged: its latents", "latents altered"),
    (["train-expert", RUN, "-e", "0", "--set", "expert.steps=7"], "000000.safetensors is damaged: its text_ids",
     "text ids altered"),
    (["train-router", RUN, "--name", "again"], "000000.safetensors is damaged: its labels", "labels altered"),
    (["partition", RUN], "000000.safetensors is damaged: its features", "features altered"),
    (["export-clusters", RUN], "000000.safetensors does not match data/manifest.json", "latents altered"),
    (["train-router", RUN, "--name", "again"], "000000.safetensors is damaged: its captions metadata", "caption altered"),
    (["generate", RUN, "-p", "a bag", "--strategy", "oracle:1"], "oracle:1: expert 1 is retired or unavailable",
     "expert 1 retired"),
    (["evaluate", RUN, "--strategies", "oracle:1", "--num-samples", "4"], "oracle:1: expert 1 is retired or unavailable",
     "expert 1 retired"),
    (["status", RUN], "retired.json is damaged", "retired.json damaged"),
    (["generate", RUN, "-p", "a bag"], "config.yaml is empty", "config.yaml empty"),
    (["generate", RUN, "-p", "a bag"], "config.yaml is empty", "config.yaml only a comment"),
    (["status", RUN], "config.yaml is empty", "config.yaml empty"),
    (["train-expert", RUN, "-e", "0"], "config.yaml is empty", "config.yaml empty"),
    (["add-expert", RUN, "--data", "{fashion_copy}"], "holds the run's own images (prepared from "
     "/usr/share/datasets/fashion-mnist)"),
]


def _placed(arg: str, run_path: Path, tmp_path: Path, fashion_copy: Path) -> str:
    """An argument with its placeholders made: {run}, {new}, {fashion_copy}, {release:DAMAGE} (a release whose
    expert_1 weights have that damage; none: intact) and {start:DAMAGE} (a copy of expert 0's final model, damaged)."""
    places = {RUN: str(run_path), NEW: str(tmp_path / "new"), "{fashion_copy}": str(fashion_copy)}
    for placeholder, value in places.items():
        arg = arg.replace(placeholder, value)
    if not arg.startswith(("{release:", "{start:")):
        return arg
    kind, _, name = arg[1 : arg.index("}")].partition(":")
    folder = tmp_path / kind
    if not folder.exists():
        write_release(folder) if kind == "release" else shutil.copytree(run_path / "experts/0/final", folder)
    if name:
        damage(folder / ("expert_1" if kind == "release" else "") / "diffusion_pytorch_model.safetensors", name)
    return str(folder) + arg[arg.index("}") + 1 :]


def _alter(run: Path, column: str) -> None:
    """Flip the first byte of every row of `column` in data/ shard 0 (whichever rows a job reads): the file keeps
    its size and its header."""
    path = run / "data/shards/000000.safetensors"
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    info = json.loads(data[8 : 8 + size])[column]
    first, end = (8 + size + offset for offset in info["data_offsets"])
    for at in range(first, end, (end - first) // info["shape"][0]):
        data[at] ^= 1
    path.write_bytes(bytes(data))


def _alter_caption(run: Path) -> None:
    path = run / "data/shards/000000.safetensors"
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    caption = json.loads(json.loads(data[8 : 8 + size])["__metadata__"]["captions"])[0]
    path.write_bytes(data.replace(caption.encode(), caption.swapcase().encode(), 1))  # the same length


RUN_CHANGES = {
    "latents altered": lambda run: _alter(run, "latents"),
    "text ids altered": lambda run: _alter(run, "text_ids"),
    "labels altered": lambda run: _alter(run, "labels"),
    "features altered": lambda run: _alter(run, "features"),
    "caption altered": _alter_caption,
    "expert 1 retired": lambda run: remove_expert(RunDir(str(run)), 1),
    "retired.json damaged": lambda run: (run / "retired.json").write_text('{"experts": ["one"]}'),
    "config.yaml empty": lambda run: (run / "config.yaml").write_text(""),
    "config.yaml only a comment": lambda run: (run / "config.yaml").write_text("# the config was here\n"),
}


def _id(case) -> str:
    args, _, *change = case
    return " ".join(a.strip("{}") for a in args)[:60] + "".join(f" ({c})" for c in change)


@pytest.fixture(scope="module")
def fashion_copy(tmp_path_factory) -> Path:
    """Fashion-MNIST's files copied to another folder: the run's own images under another path."""
    return Path(shutil.copytree(FASHION_MNIST, tmp_path_factory.mktemp("copied") / "fashion-mnist"))


@pytest.fixture(scope="module")
def run_path(trained, tmp_path_factory) -> Path:
    return Path(copy_run(trained, tmp_path_factory.mktemp("bad-inputs") / "run").url)


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, run_path, tmp_path, monkeypatch, fashion_copy):
    args, needle, *change = case
    if change:  # a copy of the run, damaged or changed: what the command must leave as it found it
        run_path = Path(copy_run(run_path, tmp_path / "damaged").url)
        RUN_CHANGES[change[0]](run_path)
    command = args if args[0] not in (RUN, NEW) else ["prepare", *args]
    args = [_placed(a, run_path, tmp_path, fashion_copy) for a in command]
    monkeypatch.chdir(tmp_path)  # anything written by mistake lands here, not in the repository
    before = snapshot(run_path)
    code, out, err = run_paris(*args)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]  # after progress lines, if any
    assert code == 2 and len(errors) == 1 and err.strip().endswith(errors[0]), (code, out, err)
    assert "Traceback" not in err + out and needle in errors[0], errors[0]
    assert snapshot(run_path) == before, "the run directory changed"
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").rglob("*.safetensors"))


def test_serving_on_a_port_in_use_is_one_line(run_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:  # listening, as another server would
        port = taken.getsockname()[1]
        code, _, err = run_paris("serve", str(run_path), "--port", str(port))
    assert code == 2 and err.strip() == (f"error: cannot listen on 127.0.0.1:{port}: another program listens there; "
                                         "stop it or choose another --port"), err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may listen on any port")
def test_serving_on_a_port_that_needs_root_is_one_line(run_path):
    code, _, err = run_paris("serve", str(run_path), "--port", "80")
    assert code == 2 and err.strip() == ("error: cannot listen on 127.0.0.1:80: permission denied (ports below 1024 "
                                         "need root); choose --port 1024 or above"), err


SECTIONS = {name: sorted(vars(section)) for name, section in vars(RunConfig()).items()}
VALUES = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12), st.booleans(),
                   st.just("null"), st.just("[1, 2]"), st.just("{a: 1}"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(SECTIONS)), st.data()), min_size=1, max_size=4), st.data())
def test_any_override_loads_or_is_a_paris_error(pairs, data):
    """Nothing a user can type after --set makes loading the config raise anything but ParisError."""
    overrides = []
    for section, _ in pairs:
        key = data.draw(st.one_of(st.sampled_from(SECTIONS[section]), st.text(max_size=8)))
        overrides.append(f"{section}.{key}={data.draw(VALUES)}")
    try:
        apply_overrides(RunConfig(), overrides)
    except ParisError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.fixed_dictionaries({}, optional={
    "steps": st.integers(-3, 3), "guidance": st.one_of(st.floats(-5, 20), st.just(float("nan"))), "shift": st.floats(-1, 4),
    "route_every": st.integers(-2, 3), "sampler": st.sampled_from(["euler", "heun", "rk4", ""]),
    "guidance_mode": st.sampled_from(["per-expert", "after", "x"]),
    "precision": st.sampled_from(["auto", "bf16", "fp32", "fp16"]),
    "strategy": st.sampled_from(["top1", "top2", "full", "topk:3", "nucleus:0.5", "nucleus:0", "oracle:1", "oops"]),
    "seed": st.integers(-5, 5)}))
def test_any_sampling_option_samples_or_is_a_paris_error(pipe, options):
    try:
        images, _ = pipe.generate(["a photo of a bag"], **options)
    except ParisError:
        return
    assert images.shape[0] == 1 and images.isfinite().all()


@pytest.fixture(scope="module")
def pipe(run_path):
    from paris.inference.pipeline import ParisPipeline

    return ParisPipeline.from_run(str(run_path))
