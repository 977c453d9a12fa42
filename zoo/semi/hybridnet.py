"""HybridNet (Robert, Thome and Cord 2018, arXiv:1807.11407): classification and reconstruction
branches that cooperate.

Two branches read the same image:

- the **discriminative** branch is the classifier itself: its encoder ``E_c`` (up to the last
  spatial feature map) feeds the head and a decoder ``D_c``;
- the **unsupervised** branch is an encoder ``E_u`` of the same architecture with its own
  weights, and a decoder ``D_u``.

Branch cooperation: the image is reconstructed by the *sum* of the two branches,
``x_hat = D_c(E_c(x)) + D_u(E_u(x))``, so ``E_c`` may drop what the classes do not need and the
unsupervised branch restores it. The loss of a step:

    lambda_c * L_c + unlabelled_weight * (lambda_rec * R + lambda_stab * S)

``L_c``: the labelled cross-entropy (as the "supervised" method's); ``R``: the mean squared error
of ``x_hat`` against the clean image as the network sees it (``preprocess`` output), the branches
reading a noisy copy; ``S``, the stability loss: ``sum_k (p1_k - p2_k)^2`` per image, averaged,
between the class probabilities of two differently transformed copies of each image: each a
weak augmentation (zoo.semi.augment: flip and shift; the paper's stability loss compares two
random transformations of an image) plus Gaussian noise of ``noise`` times the batch's pixel
standard deviation. The first copy is the one reconstructed. ``R`` and ``S`` run on the
labelled and the unlabelled images. The paper's intermediate (per-layer) reconstruction
terms are left out. With ``unlabelled_weight = 0`` only the supervised step runs.
"""

from __future__ import annotations

from zoo.semi import augment
from zoo.semi.methods import SemiTask, check_weight, labelled_part, register_method
from zoo.semi.reconstruction import (
    build_decoder,
    check_lambda,
    feature_map,
    image_target,
    model_input,
    reconstruction_error,
    supervised_step,
)
from zoo.train.engine import StepOutput


def stability_loss(p1, p2):
    """``sum_k (p1_k - p2_k)^2`` per example (N,): 0 exactly when the predictions agree."""
    from keras import ops

    diff = ops.cast(p1, "float32") - ops.cast(p2, "float32")
    return ops.sum(ops.reshape(ops.square(diff), (ops.shape(diff)[0], -1)), axis=1)


class HybridNet(SemiTask):
    """HybridNet's two branches and loss (module docstring)."""

    unlabelled_metrics = ("reconstruction", "stability")  # every step reports them (0 / 0 without)

    def __init__(self, classifier, *, num_classes: int, unlabelled_weight: float = 1.0,
                 seed: int = 0, lambda_c: float = 1.0, lambda_rec: float = 1.0,
                 lambda_stab: float = 1.0, noise: float = 0.15):
        import keras

        super().__init__(classifier, num_classes=num_classes,
                         unlabelled_weight=unlabelled_weight, seed=seed)
        self.lambda_c = check_lambda(lambda_c, "lambda_c")
        self.lambda_rec = check_lambda(lambda_rec, "lambda_rec")
        self.lambda_stab = check_lambda(lambda_stab, "lambda_stab")
        self.noise = check_lambda(noise, "noise")
        features, target = feature_map(classifier), image_target(classifier)
        inputs = model_input(classifier)
        self.joint = keras.Model(inputs, [classifier.outputs[0], features], name="hybrid_c")
        self.target = keras.Model(inputs, target, name="hybrid_target")
        self.encoder_u = keras.models.clone_model(  # the same architecture, its own weights
            keras.Model(inputs, features, name="hybrid_encoder_u"))
        self.decoder_c = build_decoder(features.shape[1:], target.shape[1:], "decoder_c")
        self.decoder_u = build_decoder(features.shape[1:], target.shape[1:], "decoder_u")

    def models(self) -> dict:
        return {"classifier": self.classifier, "encoder_u": self.encoder_u,
                "decoder_c": self.decoder_c, "decoder_u": self.decoder_u}

    def trainable(self, name: str) -> list:
        """Every branch's variables; the classifier's only when the unlabelled weight is 0."""
        if not self.unlabelled_weight:
            return self.classifier.trainable_variables
        return [v for m in self.models().values() for v in m.trainable_variables]

    def regularized(self, name: str) -> list:
        return list(self.models().values())

    def noisy(self, x, purpose: int):
        """``x`` plus Gaussian noise of ``noise`` x the batch's pixel standard deviation."""
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        eps = tf.random.stateless_normal(tf.shape(x), self.step_seed(purpose))
        return x + self.noise * tf.math.reduce_std(x) * eps

    def reconstruct(self, x_noisy, training: bool):
        """(probabilities, x_hat): both branches on one noisy copy, their reconstructions summed."""
        probs, h_c = self.joint(x_noisy, training=training)
        h_u = self.encoder_u(x_noisy, training=training)
        x_hat = self.decoder_c(h_c, training=training) + self.decoder_u(h_u, training=training)
        return probs, x_hat

    def unlabelled_terms(self, x, training: bool):
        """(R, S) per image of ``x``: two weakly augmented, noisy views of each image; the first
        is reconstructed (its clean version the target), the two predictions must agree."""
        from keras import ops

        view1, view2 = augment.weak(x, self.step_seed(3)), augment.weak(x, self.step_seed(4))
        probs1, x_hat = self.reconstruct(self.noisy(view1, 1), training)
        probs2 = self.classifier(self.noisy(view2, 2), training=training)
        rec = reconstruction_error(ops.stop_gradient(self.target(view1, training=False)), x_hat)
        stab = stability_loss(probs1, probs2)
        return rec, stab

    def step(self, batch, training: bool) -> StepOutput:
        from keras import ops

        inputs, y, w = batch
        if not (training and self.unlabelled_weight > 0 and isinstance(inputs, dict)):
            return supervised_step(self, batch, training, self.lambda_c)
        self.iterations.assign_add(1)
        w = ops.cast(w, "float32")
        probs, _ = self.joint(labelled_part(inputs), training=training)
        probs = ops.cast(probs, "float32")
        l_c = self.supervised.per_example(y, probs) * w
        both = ops.concatenate([ops.cast(labelled_part(inputs), "float32"),
                                ops.cast(inputs["unlabelled"], "float32")], 0)
        rec, stab = self.unlabelled_terms(both, training)
        n = ops.cast(ops.shape(rec)[0], "float32")
        metrics = self.supervised.metrics(y, probs, w)
        metrics.update({"reconstruction": (ops.sum(rec), n), "stability": (ops.sum(stab), n)})
        extra = self.lambda_rec * ops.mean(rec) + self.lambda_stab * ops.mean(stab)
        return StepOutput({"main": self.lambda_c * l_c + self.unlabelled_weight * extra}, metrics)


@register_method("hybridnet", family="reconstruction",
                 summary="HybridNet: discriminative + unsupervised branches whose summed decoders "
                         "reconstruct the image, with a stability loss",
                 backbones="any zoo CNN classifier (2D/3D) whose input size is its feature map's "
                           "times a power of two")
def make_hybridnet(model, *, num_classes: int, unlabelled_weight: float, seed: int,
                   lambda_c: float = 1.0, lambda_rec: float = 1.0, lambda_stab: float = 1.0,
                   noise: float = 0.15) -> SemiTask:
    """HybridNet's task (options in the module docstring)."""
    check_weight(unlabelled_weight)
    return HybridNet(model, num_classes=num_classes, unlabelled_weight=unlabelled_weight,
                     seed=seed, lambda_c=lambda_c, lambda_rec=lambda_rec,
                     lambda_stab=lambda_stab, noise=noise)
