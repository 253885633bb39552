"""The error a user can cause while converting: printed as one line by the CLI."""


class ConvertError(Exception):
    """Bad input to the converter; the message names the thing and what to do."""
