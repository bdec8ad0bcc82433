"""Config loading is strict: unknown keys and wrong types are errors that name the key; presets are checked."""

from __future__ import annotations

import dataclasses

import pytest

from paris.config import RunConfig, SampleConfig, apply_overrides, dit_config, from_yaml, router_config, to_yaml
from paris.errors import ParisError


def test_yaml_round_trip_keeps_every_value():
    cfg = apply_overrides(RunConfig(), ["expert.steps=7", "data.limit=300", "router.use_text=true"])
    assert from_yaml(to_yaml(cfg)) == cfg


@pytest.mark.parametrize("text, message", [
    ("expert:\n  nope: 1\n", r"expert\.nope"),  # an unknown key, named
    ("bogus:\n  steps: 1\n", "bogus"),  # an unknown section, named
    ("expert:\n  steps: many\n", r"expert\.steps.*int"),  # a wrong type, naming the key
    ("expert:\n  steps: true\n", r"expert\.steps"),  # a bool is not an int
    ("expert: 3\n", "expert"),  # a section must be a mapping
    ("expert: [unclosed\n", "not valid YAML"),
], ids=["unknown-key", "unknown-section", "wrong-type", "bool-not-int", "section-not-mapping", "invalid-yaml"])
def test_from_yaml_errors_name_what_is_wrong(text, message):
    with pytest.raises(ParisError, match=message):
        from_yaml(text)


def test_int_is_coerced_to_float():
    cfg = from_yaml("expert:\n  lr: 1\n")
    assert cfg.expert.lr == 1.0 and type(cfg.expert.lr) is float
    cfg = apply_overrides(RunConfig(), ["sample.guidance=3"])
    assert cfg.sample.guidance == 3.0 and type(cfg.sample.guidance) is float


def test_float_is_not_truncated_to_int():
    with pytest.raises(ParisError, match=r"expert\.steps"):
        apply_overrides(RunConfig(), ["expert.steps=2.5"])


def test_overrides_apply_and_leave_the_rest_unchanged():
    base = RunConfig()
    cfg = apply_overrides(base, ["expert.steps=2000", "expert.preset=B/2", "data.path=/some/dir"])
    assert (cfg.expert.steps, cfg.expert.preset, cfg.data.path) == (2000, "B/2", "/some/dir")
    assert cfg.router == base.router and cfg.sample == base.sample and cfg.partition == base.partition
    assert base.expert.steps == 400_000  # the input config is not modified


def test_override_unknown_key_names_it():
    with pytest.raises(ParisError, match=r"expert\.nope"):
        apply_overrides(RunConfig(), ["expert.nope=1"])


def test_override_unknown_section_names_it():
    with pytest.raises(ParisError, match="bogus"):
        apply_overrides(RunConfig(), ["bogus.steps=1"])


def test_override_wrong_type_names_key():
    with pytest.raises(ParisError, match=r"router\.use_text"):
        apply_overrides(RunConfig(), ["router.use_text=maybe"])


@pytest.mark.parametrize("item", ["expertsteps=3", "expert.steps", "steps=3"])
def test_malformed_override_is_refused(item):
    with pytest.raises(ParisError, match="override"):
        apply_overrides(RunConfig(), [item])


def test_presets_and_unknown_preset():
    assert dit_config("B/2").hidden_size == 768 and dit_config("B/2").depth == 12
    assert dit_config("tiny", in_channels=3).in_channels == 3
    assert router_config("B/2", num_experts=5).num_experts == 5
    with pytest.raises(ParisError, match="'nope'"):
        dit_config("nope")
    with pytest.raises(ParisError, match="'nope'"):
        router_config("nope")


def test_preset_overrides_do_not_mutate_the_registry():
    dit_config("tiny", hidden_size=64)
    assert dit_config("tiny").hidden_size == 128
    assert dataclasses.asdict(router_config("tiny"))["num_experts"] == 8


def _choice_fields():
    """(section.key, choices) of every Literal field of the run config."""
    import typing

    for section, cls in typing.get_type_hints(RunConfig).items():
        for name, kind in typing.get_type_hints(cls).items():
            if typing.get_origin(kind) is typing.Literal:
                yield f"{section}.{name}", typing.get_args(kind)


@pytest.mark.parametrize("key, choices", list(_choice_fields()))
def test_every_choice_is_checked_when_the_config_loads(key, choices):
    for choice in choices:  # each listed choice loads
        assert getattr(getattr(apply_overrides(RunConfig(), [f"{key}={choice}"]), key.split(".")[0]),
                       key.split(".")[1]) == choice
    with pytest.raises(ParisError, match=f"config key '{key}' must be one of {', '.join(choices)}; got 'foo'"):
        apply_overrides(RunConfig(), [f"{key}=foo"])


def test_choice_fields_cover_the_choices_the_code_makes():
    """The config's vocabulary and the tables the code looks names up in agree."""
    import typing

    from paris.config import (DIT_PRESETS, ROUTER_PRESETS, DataConfig, ExpertTrainConfig, RouterTrainConfig,
                              SampleConfig, TrainConfig)
    from paris.data.sources import SOURCES
    from paris.precision import PRECISIONS

    assert set(typing.get_args(typing.get_type_hints(ExpertTrainConfig)["preset"])) == set(DIT_PRESETS)
    assert set(typing.get_args(typing.get_type_hints(RouterTrainConfig)["preset"])) == set(ROUTER_PRESETS)
    assert set(typing.get_args(typing.get_type_hints(DataConfig)["source"])) == set(SOURCES)
    for cls in (TrainConfig, SampleConfig):
        assert typing.get_args(typing.get_type_hints(cls)["precision"]) == PRECISIONS
    assert len(list(_choice_fields())) >= 15


@pytest.mark.parametrize("item, message", [
    ("partition.num_clusters=0", "'partition.num_clusters' must be at least 1, got 0"),
    ("expert.caption_dropout=1.5", r"'expert.caption_dropout' must be in \[0, 1\], got 1.5"),
    ("router.val_fraction=1.0", r"'router.val_fraction' must be in \[0, 1\), got 1.0"),
    ("expert.lr=-1", "'expert.lr' must be above 0, got -1"),
    ("expert.ema_decay=-0.5", r"'expert.ema_decay' must be in \[0, 1\], got -0.5"),
    ("sample.shift=0", r"'sample.shift' must be in \[0.01, 100\], got 0"),
    ("sample.route_every=0", "'sample.route_every' must be at least 1, got 0"),
    ("expert.threads=0", "'expert.threads' must be at least 1, got 0"),  # 0 is never a disguised default
    ("data.limit=-1", "'data.limit' must be at least 1, got -1"),
    ("expert.steps=0", "'expert.steps' must be at least 1, got 0"),
    ("sample.strategy=top7", "config key 'sample.strategy': unknown strategy 'top7'"),
    ("sample.guidance=.inf", "'sample.guidance' must be a finite number, got inf"),  # no setting means infinity
    ("sample.guidance=.nan", "'sample.guidance' must be a finite number, got nan"),
    ("expert.lr=.inf", "'expert.lr' must be a finite number, got inf"),
    ("sample.seed=18446744073709551616", r"'sample.seed' must be in \[-9223372036854775808, 18446744073709551615\]"),
    ("sample.seed=-9223372036854775809", r"'sample.seed' must be in \[-9223372036854775808, 18446744073709551615\]"),
])
def test_numbers_and_strategies_are_checked_when_the_config_loads(item, message):
    with pytest.raises(ParisError, match=message) as error:
        apply_overrides(RunConfig(), [item])
    assert error.value.key == item.partition("=")[0]  # the HTTP API names it as OpenAI's `param`


def test_a_value_too_large_to_show_is_refused_in_a_short_message():
    with pytest.raises(ParisError, match=r"'sample.guidance' must be a finite number, got 1000000\d+\.\.\.$"):
        SampleConfig().updated(guidance=10**400)
    with pytest.raises(ParisError, match="'sample.seed' must be in .*, got a value too large to show$"):
        SampleConfig().updated(seed=10**5000)


def test_unset_is_null():
    cfg = apply_overrides(RunConfig(), ["expert.threads=4", "router.steps=10", "data.limit=300"])
    assert (cfg.expert.threads, cfg.router.steps, cfg.data.limit) == (4, 10, 300)
    cfg = apply_overrides(cfg, ["expert.threads=null", "router.steps=null", "data.limit=null"])
    assert (cfg.expert.threads, cfg.router.steps, cfg.data.limit) == (None, None, None)
    assert from_yaml(to_yaml(cfg)) == cfg


def test_a_config_written_by_an_earlier_paris_still_loads():
    """Version 1 wrote 0 or "" for unset; those read as null, and any other value is kept."""
    old = "data:\n  limit: 0\n  text_encoder_path: ''\nexpert:\n  threads: 0\n  steps: 7\nrouter:\n  steps: 0\n"
    cfg = from_yaml(old)
    assert (cfg.data.limit, cfg.data.text_encoder_path, cfg.expert.threads, cfg.router.steps) == (None, None, None, None)
    assert cfg.expert.steps == 7 and from_yaml(to_yaml(cfg)) == cfg and to_yaml(cfg).startswith("version: 3")
    with pytest.raises(ParisError, match="'data.limit' must be at least 1, got 0"):  # not in a current config
        from_yaml("version: 2\ndata:\n  limit: 0\n")


ROUTER_KEYS_NOTHING_READ = {"caption_dropout": 0.5, "preview_every": 10, "preview_prompts": ["a"], "steps_by_size": True}


@pytest.mark.parametrize("key, value", ROUTER_KEYS_NOTHING_READ.items())
def test_the_router_has_no_keys_only_an_expert_reads(key, value):
    """Only an expert's job drops captions, previews and scales its steps by cluster size: the router refuses
    those keys, and a config written before version 3, which listed them for the router too, loads without them."""
    assert getattr(apply_overrides(RunConfig(), [f"expert.{key}={value}"]).expert, key) == value
    with pytest.raises(ParisError, match=f"unknown config key 'router.{key}'"):
        apply_overrides(RunConfig(), [f"router.{key}={value}"])
    old = f"version: 2\nrouter:\n  {key}: {value}\n  epochs: 3.0\n"
    assert from_yaml(old).router == dataclasses.replace(RunConfig().router, epochs=3.0)
    with pytest.raises(ParisError, match=f"unknown config key 'router.{key}'"):
        from_yaml(old.replace("version: 2", "version: 3"))
