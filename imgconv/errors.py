"""The exceptions imgconv raises for problems a user can fix.

Every message is one line that names the culprit (a file, a catalog entry, a
parameter); the CLI prints it as is.
"""


class ImgconvError(Exception):
    """Base class of every error imgconv reports to its users."""


class CatalogError(ImgconvError, ValueError):
    """A kernel catalog, an entry in it, or a parameter given to one is invalid."""


class ImageError(ImgconvError):
    """An image cannot be read, interpreted or written."""


class BackendError(ImgconvError):
    """The requested compute backend is not available."""


class ImgconvWarning(UserWarning):
    """Something was done differently from what was asked, and the user should know.

    For example an ICC profile dropped because the output's colour mode cannot use it.
    """


class KernelFileError(ImgconvError, ValueError):
    """A kernel file (ImageMagick text, libvips .mat, CSV or .npy) cannot be read or parsed."""


def shorten(text: str, limit: int = 60) -> str:
    """``text`` for a message: at most about ``limit`` characters, its start and end kept.

    >>> shorten("[" + "1 " * 100 + "]", 20)
    '[1 1 1 1 1 ... 1 1 ]'
    """
    text = str(text)
    if len(text) <= limit:
        return text
    head = (limit - 5) * 2 // 3
    return text[:head] + " ... " + text[-(limit - 5 - head):]
