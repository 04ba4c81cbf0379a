class TnervError(Exception):
    """A problem with the user's input or files, reported as one line without a traceback."""


def short_repr(value: object, limit: int = 60) -> str:
    """A value as an error message quotes it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
