"""The one exception type that means "the user asked for something we cannot do".

Library code raises :class:`TinyMnistError` with a message that names the cause and the file or option at
fault. The CLI catches it once and prints it as a single line (no traceback) with a non-zero exit code.
"""


class TinyMnistError(Exception):
    """A user-facing error: bad data, bad option, missing file. The message is shown as-is."""
