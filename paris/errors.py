"""The one exception type that means "the user asked for something we can't do": the CLI prints it as one line."""


class ParisError(Exception):
    """A mistake in the user's input or environment; the message names the problem and the fix."""
