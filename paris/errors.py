"""The one exception type that means "the user asked for something we can't do": the CLI prints it as one line."""


class ParisError(Exception):
    """A mistake in the user's input or environment; the message names the problem and the fix. `key`: the setting
    that was wrong, where one was (the HTTP API names it in its error as OpenAI's `param`)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def shown(value, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: a message quotes the value it refuses, never a megabyte of it."""
    try:
        return cut(repr(value), limit)
    except (ValueError, RecursionError):  # an int of more than 4,300 digits, a list nested too deep
        return "a value too large to show"


def cut(text: str, limit: int = 60) -> str:
    """`text`, cut to `limit` characters."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def first_line(error: BaseException) -> str:
    """The first line of a library's exception, for a one-line error; its type when it says nothing."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
