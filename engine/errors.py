"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""


class TansakuError(Exception):
    """A problem the user can fix: a bad path, an unknown gallery, an unwritable folder."""


class NotFoundError(TansakuError):
    """Something named by the user does not exist: a gallery, an image id, a job."""
