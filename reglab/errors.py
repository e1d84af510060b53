"""The one exception type for user mistakes.

Anything raised as :class:`UserError` is shown by the CLI as a single line (what is wrong and how to fix
it) with exit code 2 and no traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: bad config, missing data, wrong file."""
