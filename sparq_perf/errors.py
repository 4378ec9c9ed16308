"""Errors a user can cause. The CLI prints their message on one line and exits 2."""


class UserError(ValueError):
    """Bad input: an unknown name, an impossible setting, a malformed file."""


def closest(name: str, known) -> str:
    """' (did you mean X?)' for the nearest known name, or ''."""
    import difflib

    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean {match[0]}?)" if match else ""
