"""The one exception a user can cause. Its message names the key, the bad value and what is
allowed, so the CLI prints it as one line and the UI shows it as a message, never a traceback."""


class SpecError(ValueError):
    pass
