"""The transfer step of ``zoo demo``: the zoo's own phantom checkpoint, loaded through the
registry (sha256 verified), fine-tuned with ``zoo.finetune`` on a few labels of a harder task,
against the same network trained from scratch; exported with ``zoo.export`` as a SavedModel."""

from __future__ import annotations

from pathlib import Path

from zoo.data.synthetic import SOURCE_TASK, TARGET_TASK

__all__ = ["CHECKPOINT", "SOURCE_TASK", "TARGET_TASK", "transfer_data", "transfer_step"]

CHECKPOINT = "simple_cnn.phantom"


def _accuracy(model, images, labels) -> float:
    import numpy as np

    return float(np.mean(model.predict(images, verbose=0, batch_size=128).argmax(-1) == labels))


def transfer_data(n_labelled: int, seed: int):
    """The target task's (train, validation, test) phantoms, seeded: every run sees the same."""
    from zoo.data.synthetic import make_phantoms

    return (make_phantoms(n_labelled, seed=seed + 1, **TARGET_TASK),
            make_phantoms(max(40, n_labelled // 2), seed=seed + 3, **TARGET_TASK),
            make_phantoms(600, seed=seed + 2, **TARGET_TASK))


def transfer_step(out: Path, n_labelled: int, epochs: int, seed: int, export: bool = True) -> dict:
    """Checkpoint as is, fine-tuned in two stages (zoo.finetune's recipe), and from scratch, on the
    same few labels.

    Both trainings use the recipe's defaults (learning rates, augmentation, frozen BatchNorm);
    from scratch trains every layer, BatchNorm included, at the stage-1 learning rate.
    """
    import zoo
    from zoo.train.finetune import finetune

    train, val, test = transfer_data(n_labelled, seed)
    print(
        f"target task: {n_labelled} labelled 64x64 phantoms (lesion contrast "
        f"{TARGET_TASK['contrast']}, noise {TARGET_TASK['noise']}), {len(val.labels)} for "
        f"validation, {len(test.labels)} for test"
    )
    card = zoo.get_card(CHECKPOINT)
    print(f"loading {card.name} ({card.description}; sha256 {card.sha256[:12]}...)")
    as_is = _accuracy(zoo.load(CHECKPOINT), test.images, test.labels)
    # the demo's own sub-folders: an earlier demo's runs are replaced, never a user's files
    # (zoo.outputs)
    common = dict(
        batch_size=16,
        seed=seed,
        verbose=0,
        patience=max(2, epochs // 3),
        strategy="cpu",
        overwrite=True,
    )
    tuned = finetune(
        CHECKPOINT,
        train,
        val,
        epochs=(epochs // 2, epochs - epochs // 2),
        out_dir=out / "finetune",
        **common,
    )
    stage1 = [row for row in tuned.history if row["stage"] == "stage1"]
    finetuned = _accuracy(tuned.model, test.images, test.labels)
    scratch = finetune("simple_cnn", train, val, num_classes=2, input_shape=(64, 64), in_chans=1,
                       epochs=(0, epochs), learning_rate=(1e-3, 1e-3), unfreeze_batchnorm=True,
                       out_dir=out / "scratch", **common)
    from_scratch = _accuracy(scratch.model, test.images, test.labels)
    chance = max(test.labels.mean(), 1 - test.labels.mean())
    best1 = min(r["val_loss"] for r in stage1) if stage1 else float("nan")
    print(f"fine-tuning: stage 1 best val_loss {best1:.4f}; stage 2 "
          + (f"improved it to {tuned.best_value:.4f}" if tuned.stage2_kept
             else "did not improve it: the model keeps stage 1's weights"))
    print(f"test accuracy  checkpoint as is: {as_is:.3f}   fine-tuned: {finetuned:.3f}   "
          f"from scratch: {from_scratch:.3f}   (chance {chance:.3f}); run record {tuned.record}")
    result = {
        "checkpoint_as_is": as_is,
        "finetuned": finetuned,
        "from_scratch": from_scratch,
        "stage2_kept": tuned.stage2_kept,
        "run_record": str(tuned.record),
        "model": tuned.model,
    }
    if export:
        saved = zoo.export(tuned.model, out / "saved_model", overwrite=True)
        print(
            f"SavedModel written to {saved} (preprocessing inside; input 'image': grey values in "
            "[0, 255])"
        )
        result["saved_model"] = str(saved)
    return result
