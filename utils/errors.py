"""The one exception type for input the user can fix."""


class UserError(Exception):
    """Bad input (config, files, datasets): the stage scripts print it as one line and exit 2."""


def one_line(exc):
    """The user-facing line of a UserError.

    A UserError raised in a DataLoader worker comes back re-wrapped with the worker's
    traceback in its message; its last line is the original message.
    """
    line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return line.split('UserError: ', 1)[-1]
