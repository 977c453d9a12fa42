"""What every checkpoint-format loader provides (zoo.weights registers one instance per format)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileFacts:
    """What a weights file says about itself, read without building a model.

    ``in_chans``: input channels of its first kernel (None when the file does not say);
    ``arrays``: how many weight arrays it holds (None when not counted).
    """

    format: str
    in_chans: int | None = None
    arrays: int | None = None


class WeightsFormat:
    """One checkpoint format. Subclasses set nothing but override ``inspect`` and ``load_into``.

    ``load_into(model, path, card, build=...)`` fills ``model``, which the caller built at the
    file's own shape (channels, classifier top); adapting to other shapes is the caller's
    ``copy_by_name``. ``build(arch, in_chans)`` builds another architecture without weights, for
    formats that need one (an inflated 2D file is first read into its 2D network).
    """

    name = ""
    converted = False  # True: the file is not Keras' own format (a converter maps it by layer name)

    def inspect(self, path: Path) -> FileFacts:
        return FileFacts(self.name)

    def before_fetch(self, card) -> None:
        """Checks worth making before downloading the card's file (a missing converter, say)."""

    def load_into(self, model, path: Path, card=None, *, build=None) -> None:
        raise NotImplementedError
