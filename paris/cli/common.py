"""What every command shares: the Typer app, the common arguments and the checks of command-line values."""

from __future__ import annotations

from pathlib import Path

import typer

from paris import layout
from paris.errors import ParisError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None)

RUN = typer.Argument(..., help="Run directory: a local path or an fsspec URL (s3://bucket/run, memory://run).")
SET = typer.Option([], "--set", help="Override a config value for this command, e.g. --set expert.steps=2000 (repeatable).")
INIT_FROM = typer.Option(None, "--init-from", help="Start from this finished model (a final/ folder such as seed/final, "
                         "or a release's expert_<i>/); a relative path is inside RUN.")


LORA_SCALE = typer.Option([], "--lora-scale", help="The strength of LoRA expert K's adapter, K=S (0: its base "
                          "alone, 1: as trained; repeatable; default: sample.lora_scale, every LoRA expert at 1).")


def lora_scale(given: list[str]) -> str | None:
    """Repeated --lora-scale K=S options as sample.lora_scale ("K=S,K=S"); None when none is given."""
    return ",".join(given) if given else None


def init_override(section: str, init_from: str | None, overrides: list[str]) -> list[str]:
    return [*overrides, f"{section}.init_from={init_from}"] if init_from is not None else list(overrides)


def run_and_config(run_url: str, overrides: list[str]):
    """The run and its config with this command's --set overrides applied."""
    from paris.config import apply_overrides
    from paris.run import RunDir

    run = RunDir(run_url)
    return run, apply_overrides(run.read_config(), overrides)


def expert_list(text: str | None, num_experts: int) -> list[int]:
    if text is None:
        return list(range(num_experts))
    try:
        chosen = [int(x) for x in text.split(",")]
    except ValueError:
        raise ParisError(f"--experts must be comma-separated numbers, got {text!r}") from None
    twice = sorted({k for k in chosen if chosen.count(k) > 1})
    if twice:
        raise ParisError(f"--experts names expert {twice[0]} more than once; each expert is one job")
    wrong = [k for k in chosen if not 0 <= k < num_experts]
    if wrong:
        raise ParisError(f"experts {wrong} do not exist: the partition has experts 0..{num_experts - 1}")
    return chosen


def at_least(option: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise ParisError(f"{option} must be at least {minimum}, got {value}")


def check_image_path(out: Path, source: str) -> None:
    """Refuse, before minutes of sampling, an output path that cannot take an image or that is the `source` read."""
    import os

    from paris.images import FORMATS
    from paris.outputs import check_apart

    if out.is_dir():
        raise ParisError(f"--out {out} is a directory; give a file name such as {out / 'samples.png'}")
    check_apart(str(out), [source], "--out")
    if out.suffix.lower() not in FORMATS:
        raise ParisError(f"--out {out} needs an image file name ending in .png, .jpg or .webp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ParisError(f"cannot create the folder of --out {out}: {e.strerror}") from None
    if not os.access(out.parent, os.W_OK):
        raise ParisError(f"cannot write --out {out}: {out.parent} is not writable")


def write_loss_chart(run, folder: str, name: str) -> None:
    """<folder>/loss.png: the job's training loss against step."""
    from paris.report.charts import plot_loss_curves

    plot_loss_curves(run, {f"{name}: training loss": [folder]}, layout.loss_chart(folder))
