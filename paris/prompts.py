"""The one check of prompts, shared by every front end: Python (ParisPipeline.generate), the command line (paris
generate, through it) and the HTTP API (paris.serve's engine)."""

from __future__ import annotations

from paris.errors import ParisError, shown


def prompt_list(prompt, max_chars: int | None = None, blank: bool = True) -> list[str]:
    """`prompt`, one string or a list of them, as a list of prompts. A missing prompt, a number, an object, an empty
    list, or a list holding anything but strings is a ParisError. `blank`: whether an empty prompt may be sampled
    (the unconditional image: Python and the command line allow it, the server does not); `max_chars`: the longest
    prompt taken (the server's limit; a text encoder reads only its first tokens anyway)."""
    if prompt is None:
        raise ParisError('prompt is missing: give one, e.g. "a photo of a bag"', "prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ParisError(f"prompt must be a string or a non-empty list of strings, got {shown(prompt)}", "prompt")
    for text in prompts:
        if not isinstance(text, str):
            raise ParisError(f"prompt must be a string or a list of strings; the list holds {shown(text)}", "prompt")
        if not blank and not text.strip():
            raise ParisError(f"prompt must be a non-empty string, got {shown(text)}", "prompt")
        if max_chars is not None and len(text) > max_chars:
            raise ParisError(f"prompt is {len(text):,} characters long; at most {max_chars:,} are taken here",
                             "prompt")
    return list(prompts)
