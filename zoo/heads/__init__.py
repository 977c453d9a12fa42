"""Heads for weak labels: MIL pooling layers (mil), head builders (builder), losses (losses)."""

from zoo._lazy import submodule_access


def demo_step(*args, **kwargs) -> dict:
    """The MIL demo step (zoo.heads.demo.demo_step), imported on use so `import zoo.heads` stays light."""
    from zoo.heads.demo import demo_step as step

    return step(*args, **kwargs)


__getattr__, __dir__ = submodule_access(__name__)  # zoo.heads.<submodule> imports on use
