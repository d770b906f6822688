"""Exceptions shared by the model wrappers, so callers catch one type per failure kind."""


class ModelNotFoundError(RuntimeError):
    """A model id or directory could not be resolved (offline, typo, missing files).

    The message names what is missing and how to get it; the CLI prints it as is and exits 2.
    """


class ImageLoadError(ValueError):
    """An image file is missing, unreadable or has a layout we cannot turn into RGB."""


class InvalidImageError(ValueError):
    """An in-memory image whose shape or dtype cannot be turned into RGB."""
