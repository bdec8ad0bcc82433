"""The one exception type that means "the user asked for something we can't do": the CLI prints it as one line."""


class ParisError(Exception):
    """A mistake in the user's input or environment; the message names the problem and the fix."""


def first_line(error: BaseException) -> str:
    """The first line of a library's exception, for a one-line error; its type when it says nothing."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
