"""Domain adaptation: models that survive a new scanner.

- ``attach_discriminator(model, layers)``: a domain discriminator on one or several named feature
  maps of any zoo model (2D or 3D) behind a gradient-reversal layer (``zoo.layers``);
- ``zoo.domain.adversarial``: DANN as an engine task (``DomainAdversarial``), its batches
  (``DomainBatches``: labelled source, unlabelled target) and lambda schedule;
- ``zoo.domain.harmonise``: intensity harmonisation baselines (histogram matching, per-image
  standardisation in a foreground mask), numpy only;
- ``zoo domain ...``: the command line (``zoo.domain.cli``).

Importing this package is light; TensorFlow is imported when a model is built or trained.
"""

from __future__ import annotations

from zoo._lazy import submodule_access

__getattr__, __dir__ = submodule_access(__name__, {
    "attach_discriminator": "discriminator",
    "task_model": "discriminator",
    "fit_adversarial": "adversarial",
    "match_histograms": "harmonise",
    "standardise": "harmonise",
})
