"""The `paris` command on bad input: exit code 2, exactly one `error: ...` line on stderr, no traceback,
and nothing that was already in the run directory is damaged."""

from __future__ import annotations

import pytest

from testkit.runs import NUM_IMAGES, assert_user_error, copy_run, run_cli, run_in_process, snapshot

# The first test runs the console script in a subprocess, as a user does; the others call its entry point in this
# process (the same main(), without 1.5 s of imports each).


@pytest.fixture
def run(partitioned, tmp_path):
    """A prepared and partitioned run (K=2) without any trained model."""
    return copy_run(partitioned, tmp_path / "run")


def test_prepare_missing_data_dir(tmp_path):
    result = run_cli("prepare", str(tmp_path / "run"), "--data", "/nonexistent", "--limit", "10")
    assert_user_error(result, "/nonexistent", "dataset-fashion-mnist")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*"))  # nothing written


def test_partition_k_larger_than_data_leaves_partition_intact(run, tmp_path):
    before = snapshot(tmp_path / "run")
    result = run_in_process("partition", run.url, "--clusters", str(NUM_IMAGES + 1))
    assert_user_error(result, str(NUM_IMAGES + 1), str(NUM_IMAGES))
    assert snapshot(tmp_path / "run") == before  # meta.json, assignments and config.yaml (K=2) untouched


def test_train_expert_unknown_preset(run, tmp_path):
    before = snapshot(tmp_path / "run")
    result = run_in_process("train-expert", run.url, "--expert", "0", "--set", "expert.preset=nope")
    assert_user_error(result, "'nope'", "preset")
    assert snapshot(tmp_path / "run") == before


def test_unknown_config_key_via_set(run):
    result = run_in_process("train-expert", run.url, "--expert", "0", "--set", "expert.nope=3")
    assert_user_error(result, "expert.nope")
    assert not run.exists("experts")


def test_generate_unknown_strategy(run):
    result = run_in_process("generate", run.url, "--prompt", "a photo of a bag", "--strategy", "top7")
    assert_user_error(result, "'top7'", "top1, top2, topk:K, full")


def test_evaluate_empty_strategies(run):
    assert_user_error(run_in_process("evaluate", run.url, "--strategies", ","), "--strategies is empty")


def test_generate_without_prompt(run):
    assert_user_error(run_in_process("generate", run.url), "--prompt")


def test_generate_missing_expert_checkpoint(run, tmp_path):
    result = run_in_process("generate", run.url, "--prompt", "a photo of a bag", "--out", str(tmp_path / "out.png"))
    assert_user_error(result, "experts/0/final", "paris train-expert")
    assert not (tmp_path / "out.png").exists()


def test_command_on_a_run_that_was_never_prepared(tmp_path):
    assert_user_error(run_in_process("train-router", str(tmp_path / "nothing")), "config.yaml", "paris prepare")


@pytest.mark.parametrize("out, message", [("samples", "needs an image file name ending in .png"),
                                          (".", "is a directory"), ("/proc/x/samples.png", "cannot create the folder")])
def test_generate_checks_its_output_before_sampling(run, out, message):
    assert_user_error(run_in_process("generate", run.url, "--prompt", "a bag", "--out", out), message)


@pytest.mark.parametrize("args, message", [
    (["generate", "--prompt", "a bag", "--max-resident-experts", "0"], "--max-resident-experts must be at least 1, got 0"),
    (["generate", "--prompt", "a bag", "--num", "-1"], "--num must be at least 1, got -1"),
    (["generate", "--prompt", "a bag", "--device", "tpu9"], "unknown device 'tpu9'"),
    (["launch", "--jobs", "0"], "--jobs must be at least 1, got 0"),
    (["launch", "--experts", "0,1,0"], "--experts names expert 0 more than once"),
    (["launch", "--nodes", "0", "--backend", "slurm"], "--nodes must be at least 1, got 0"),
])
def test_options_out_of_range_are_refused_with_their_name(run, args, message):
    assert_user_error(run_in_process(args[0], run.url, *args[1:]), message)
