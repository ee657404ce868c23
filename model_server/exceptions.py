"""What the model server refuses, by kind; errors.py maps each kind to its HTTP status."""

from __future__ import annotations


class ModelError(Exception):
    """A request the registry refuses; the subclass says which kind (and so which HTTP status)."""


class InvalidRequest(ModelError):
    """Bad load parameters: unsupported task, a source that is not allowed, a bad name."""


class UnknownModel(ModelError):
    """No model of that name is loaded."""


class ModelLoading(ModelError):
    """The model is being loaded; asking again shortly will work."""


class SourceNotFound(ModelError):
    """Neither a folder (or file) under the models root nor a Hugging Face id that can be found."""


class LoadFailed(ModelError):
    """The library could not load the source, or loaded something that does not do the task asked for."""


class InputMismatch(ModelError):
    """An inference request whose inputs do not fit the model's task: names, datatypes, shapes, values."""


class InvalidInput(ModelError):
    """An input the model cannot process: an image that cannot be decoded, an output JSON cannot carry."""


class ModelConflict(ModelError):
    """The name is loaded from another source or for another task: loading it again would swap it under its users."""


class TooManyModels(ModelError):
    """A load past the cap on models (or names) loaded at once."""


class OutOfModelMemory(ModelError):
    """A load whose weights do not fit in what the cap on the loaded models' memory leaves."""


class ImageTooLarge(ModelError):
    """An image, or a request's images together, with more pixels than the caps allow (read from their headers)."""
