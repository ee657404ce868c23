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
