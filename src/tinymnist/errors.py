"""The one exception type that means "the user asked for something we cannot do".

Library code raises :class:`TinyMnistError` with a message that names the cause and the file or option at
fault. The CLI catches it once and prints it as a single line (no traceback) with a non-zero exit code.
"""


class TinyMnistError(Exception):
    """A user-facing error: bad data, bad option, missing file. The message is shown as-is."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The gist of a library's exception, for a one-line message: its first line, cut at the first sentence when
    long (torch goes on about possible causes), at most `limit` characters. SQLAlchemy wraps the driver's error
    in `.orig`, whose text is the useful one."""
    text = str(getattr(e, "orig", None) or e).strip()
    if not text:
        return type(e).__name__
    line = text.splitlines()[0]
    if len(line) > limit and ". " in line:
        line = line[:line.index(". ")]
    return line if len(line) <= limit else line[:limit - 1] + "…"
