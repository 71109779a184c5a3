"""Training: augmentation keeps image, labels and mask together; --resume repeats the same run."""

from pathlib import Path

import lightning as L
import pytest
import torch

from wetmap import config
from wetmap.train import WetmapTask, fit


class Crash(Exception):
    pass


class Interrupt(L.Callback):
    """Kills training as the second epoch starts, as a killed job would (epoch 1 checkpointed)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise Crash("simulated interruption")


def run_cfg(sample, out: Path) -> config.TrainRunConfig:
    return config.build(config.TrainRunConfig, {
        "seed": 5,
        "data": {"image": str(sample.scene_a), "labels": str(sample.labels), "clouds": str(sample.scene_a_scl),
                 "chip_size": 64, "split_block": 1},
        "train": {"epochs": 2, "batch_size": 8},
        "output": str(out),
    })


def test_resume_continues_to_the_same_result(sample, tmp_path: Path) -> None:
    straight = fit(run_cfg(sample, tmp_path / "a"))
    cfg = run_cfg(sample, tmp_path / "b")
    with pytest.raises(Crash):
        fit(cfg, callbacks=[Interrupt()])
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "b" / "model.pt").exists()
    resumed = fit(cfg, resume=True)
    a = torch.load(straight["bundle"], weights_only=True)["state_dict"]
    b = torch.load(resumed["bundle"], weights_only=True)["state_dict"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    assert resumed["val_dice"] == pytest.approx(straight["val_dice"], abs=1e-6)


def test_augmentation_moves_image_labels_and_mask_together() -> None:
    task = WetmapTask(backbone="resnet18", in_channels=1, seed=0)
    image = torch.arange(2 * 32 * 32, dtype=torch.float32).view(2, 1, 32, 32)
    batch = {"image": image, "mask": (image[:, 0] % 7 == 0).long(), "valid": image[:, 0] % 5 != 0}
    batch["mask"][:, :4] = 255

    class FakeTrainer:
        training = True
        global_step = 0

    task._trainer = FakeTrainer()
    out = task.on_after_batch_transfer(dict(batch), 0)
    assert not torch.equal(out["image"], batch["image"]), "something moved"
    # Whatever moved where, each pixel's label and validity still belong to its image value.
    moved = out["image"][:, 0].round()  # kornia rotates by warping: exact up to float rounding
    assert torch.equal(out["mask"] == 1, (moved % 7 == 0) & (out["mask"] != 255))
    assert torch.equal(out["valid"], moved % 5 != 0)
    assert (out["mask"] == 255).sum() == (batch["mask"] == 255).sum()


class RunsCode:
    """Unpickling this runs a shell command: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_resume_never_unpickles_a_file_that_a_checkpoint_points_at(sample, tmp_path: Path) -> None:
    """A crafted last.ckpt (plain data, so it loads under weights_only=True) whose checkpoint
    callback names another file as the best model: resuming must not load that file."""
    cfg = run_cfg(sample, tmp_path / "run")
    with pytest.raises(Crash):
        fit(cfg, callbacks=[Interrupt()])
    marker, evil = tmp_path / "code-ran", tmp_path / "evil.ckpt"
    torch.save({"state_dict": RunsCode(marker)}, evil)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    (key,) = [k for k in checkpoint["callbacks"] if k.startswith("ModelCheckpoint")]
    checkpoint["callbacks"][key]["best_model_path"] = str(evil)
    checkpoint["callbacks"][key]["best_model_score"] = torch.tensor(2.0)   # nothing will beat it
    torch.save(checkpoint, last)
    result = fit(cfg, resume=True)
    assert not marker.exists()
    assert Path(result["bundle"]).exists()
