"""The `paris` command: one sub-command per pipeline stage, each a thin wrapper over that stage's function.

\b
    paris prepare RUN            encode a data set into RUN/data (writes RUN/config.yaml)
    paris merge RUN              join shard ranges prepared on several machines
    paris partition RUN          k-means the data into K clusters
    paris export-clusters RUN    one shard set per cluster (optional)
    paris train-expert RUN -e K  train expert K on cluster K (run K of these anywhere, in any order)
    paris train-router RUN       train the router that mixes the experts
    paris train-seed RUN         a seed on all the data, the experts' shared start (optional)
    paris train-monolith RUN     the one-model baseline at matched compute (for evaluate)
    paris distill RUN            the mixture distilled into one student model (one pass per step)
    paris generate RUN -p TEXT   sample images
    paris evaluate RUN           FID, prompt adherence / CLIP score and cost per routing strategy
    paris launch RUN -b BACKEND  start every expert's job: local, slurm, ray or skypilot
    paris status RUN             where every expert and the router stand
    paris add-expert RUN --data D  new data as a new expert; the old ones stay untouched
    paris remove-expert RUN -e K   retire an expert (sampling renormalises over the others)
    paris sample-expert RUN -e K -n N  images of one expert, for `train-router --from-expert-samples N`, `distill`
    paris demo                   all of the above on Fashion-MNIST
    paris convert-release SRC OUT  the public Paris weights as a paris (and diffusers) pipeline folder
    paris serve RUN_OR_MODEL     a web page and an OpenAI-compatible images API
"""

from __future__ import annotations

import sys

import typer

from paris.cli import data, grow, train, use  # noqa: F401 (each module registers its commands on the app)
from paris.cli.common import app
from paris.errors import ParisError
from paris.report.console import show_progress

app.info.help = __doc__  # the command list above is `paris --help`


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        import torch

        typer.echo(f"paris {version('paris')} (torch {torch.__version__})")
        raise typer.Exit()


@app.callback()
def _options(_version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                           help="Print the versions of paris and torch, then exit.")) -> None:
    pass  # options of `paris` itself, before the command

def main() -> None:
    """The console script: every mistake of the user's is one line, `error: ...`, and exit code 2."""
    from typer.exceptions import TyperException

    show_progress()
    if len(sys.argv) == 1:  # a bare `paris`: the list of commands
        sys.argv.append("--help")
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except ParisError as e:
        print(f"error: {e}", file=sys.stderr)
    except TyperException as e:  # a misspelt option, a word where a number goes, Ctrl-C: click's words, one line
        message = e.format_message() if hasattr(e, "format_message") else "aborted"
        command = getattr(getattr(e, "ctx", None), "command_path", "paris")
        print(f"error: {' '.join(message.split())} (see `{command} --help`)", file=sys.stderr)
    sys.exit(2)
