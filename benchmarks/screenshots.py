"""The README's screenshots of `paris serve`'s page, drawn from the current code: docs/serve.png (a desktop
window) and docs/serve_400px.png (a phone's width).

Starts `paris serve MODEL` on 127.0.0.1, opens its page in Chromium through Playwright (Debian's chromium:
`make browser`), generates the prompts twice (the first request loads the experts: the captions show a warm
server's seconds), and screenshots the page at both widths. tests/test_screenshots.py
runs it on the tests' tiny pipeline, so it keeps working as the page changes.

    PYTHONPATH=. .venv/bin/python benchmarks/screenshots.py runs/demo          # after `make demo`
    PYTHONPATH=. .venv/bin/python benchmarks/screenshots.py runs/demo --out /tmp/shots --steps 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

from testkit.serve import launch_chromium, serving

PROMPTS = ["a photo of a sneaker", "a photo of a bag", "a photo of a dress", "a photo of a coat"]
SHOTS = {"serve.png": (1040, 900), "serve_400px.png": (400, 900)}  # file: the browser window's (width, height)
SAMPLING_TIMEOUT_MS = 600_000  # a big model on a CPU takes minutes


def take(model: str | Path, out: Path, prompts: list[str] = PROMPTS, steps: int | None = None,
         strategy: str = "top2", seed: int = 3) -> list[Path]:
    """Serve `model`, generate `prompts` on its page (steps: the model's own by default), and write SHOTS under
    `out`; returns their paths."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with serving(model) as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport=dict(zip(("width", "height"), SHOTS["serve.png"])))
            fill_form(page, server.url, prompts, steps, strategy, seed)
            for _ in range(2):
                generate(page, len(prompts))
            written = []
            for name, (width, height) in SHOTS.items():
                page.set_viewport_size({"width": width, "height": height})
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(out / name))
                written.append(out / name)
        finally:
            browser.close()
    return written


def fill_form(page, url: str, prompts: list[str], steps: int | None, strategy: str, seed: int) -> None:
    """Open the page and fill its form as a person would."""
    page.goto(url)
    page.wait_for_function("document.getElementById('about').textContent.includes('experts')")
    page.fill("#prompt", "\n".join(prompts))
    if steps is not None:
        page.fill("#steps", str(steps))
    page.fill("#seed", str(seed))
    page.select_option("#strategy", strategy)


def generate(page, images: int) -> None:
    """Press Generate and wait until the request is done (the button is enabled again) and every image shown."""
    page.click("#go")  # disables the button at once, until the request ends
    page.wait_for_function(f"!document.getElementById('go').disabled && [...document.querySelectorAll('#results img')]"
                           f".filter(i => i.complete && i.naturalWidth > 0).length == {images}",
                           timeout=SAMPLING_TIMEOUT_MS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="runs/demo", help="a run or a pipeline folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    args = parser.parse_args()
    for path in take(args.model, args.out, steps=args.steps):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
