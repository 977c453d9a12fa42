"""Where weights come from: weight cards and verified fetching. Never builds models."""

from zoo._lazy import submodule_access

__getattr__, __dir__ = submodule_access(__name__)  # zoo.hub.<submodule> imports on use
