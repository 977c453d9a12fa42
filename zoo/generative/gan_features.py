"""A trained GAN's networks as zoo weights: a discriminator reused as an encoder with few labels
(Radford et al. 2016's use of DCGAN features), and a generator published under a tag.

``publish_discriminator`` writes the discriminator without its real/fake top as a weight card of
its architecture; ``zoo.load(arch, pretrained=tag, num_classes=k)`` then builds the same encoder
with a fresh classifier head, ready for ``zoo.finetune`` or any engine task. The card records
the builder options the networks were built with (``builder_options``), which ``zoo.load`` takes
as its defaults, so the tag alone rebuilds the right widths.
"""

from __future__ import annotations

from zoo.errors import InvalidArgumentError

# the first layer of each discriminator's real/fake top (its input is the feature map)
TOPS = {"dcgan_discriminator": ("logit_flatten",), "patchgan": ("patch_logits",
                                                                "patch_logits_sn"),
        "pggan_discriminator": ("d4_flatten",)}
SOURCE = "medzoo zoo.generative"


def discriminator_encoder(discriminator, arch: str):
    """``discriminator`` (built with its top by ``zoo.load(arch, include_top=True)``) cut before
    its real/fake top: a features model sharing its layers."""
    import keras

    if arch not in TOPS:
        raise InvalidArgumentError(f"arch={arch!r}: a discriminator is one of {sorted(TOPS)}.")
    names = {layer.name for layer in discriminator.layers}
    top = next((n for n in TOPS[arch] if n in names), None)
    if top is None:
        raise InvalidArgumentError(
            f"{discriminator.name} has no {' or '.join(TOPS[arch])} layer: it was not built as "
            f"zoo.load({arch!r}, include_top=True); give the discriminator a GAN trained.")
    features = discriminator.get_layer(top).input
    inputs = discriminator.inputs[0] if len(discriminator.inputs) == 1 else discriminator.inputs
    return keras.Model(inputs, features, name=f"{arch}_encoder")


def _fields(options: dict, description: str, data: str, **extra) -> dict:
    kept = {k: list(v) if isinstance(v, tuple) else v for k, v in (options or {}).items()
            if v is not None}
    return {"preprocess": "none", "license": "user-provided", "source": SOURCE,
            "description": description, "data": data, "builder_options": kept, **extra}


def publish_discriminator(discriminator, arch: str, tag: str, *, options: dict | None = None,
                          data: str = "", out=None, overwrite: bool = False):
    """Card ``arch.tag`` holding the discriminator's encoder (no top); ``options``: the builder
    options it was built with. Returns the WeightCard."""
    from zoo.train.publish import publish

    if len(discriminator.inputs) != 1:
        raise InvalidArgumentError(
            "a conditional discriminator (image and label inputs) is not an image encoder; "
            "publish an unconditional one (num_labels=0).")
    encoder = discriminator_encoder(discriminator, arch)
    fields = _fields(options, f"{arch} trained as a GAN discriminator, without its real/fake "
                     "top: an encoder for few-label fine-tuning", data,
                     input_range=[-1.0, 1.0])
    return publish(encoder, arch, tag, fields, out=out, overwrite=overwrite)


def publish_generator(generator, arch: str, tag: str, *, options: dict | None = None,
                      value_range=(-1.0, 1.0), data: str = "", out=None,
                      overwrite: bool = False):
    """Card ``arch.tag`` holding a generator. A latent-input generator's card gives the image
    shape it produces as ``input_size`` (what ``zoo.load`` plans the output from); an
    image-to-image generator's card keeps its head (``include_top``, the output channels as
    ``num_classes``, ``output_activation = "tanh"``), so ``zoo.load(arch, pretrained=tag)``
    rebuilds it whole. ``value_range``: what its [-1, 1] output stands for (``output_range``)."""
    from zoo.train.publish import publish

    image = [int(s) for s in generator.output.shape[1:]]
    latent = generator.inputs[0].shape[1:] != tuple(image) and len(generator.inputs[0].shape) == 2
    fields = _fields(options, f"{arch} trained as a GAN generator", data,
                     output_range=[float(v) for v in value_range])
    if latent:
        fields["input_size"] = image
        fields["input_range"] = [-1e9, 1e9]
    else:  # image to image: the head (output channels, tanh) is part of the weights
        fields.update(input_range=[-1.0, 1.0], include_top=True, num_classes=image[-1],
                      output_activation="tanh")
    return publish(generator, arch, tag, fields, out=out, overwrite=overwrite)
