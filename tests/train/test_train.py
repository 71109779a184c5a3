"""Training: augmentation keeps image, labels and mask together; --resume repeats the same run."""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from wetmap import config
from wetmap.train.fit import fit
from wetmap.train.task import WetmapTask


class Crash(Exception):
    """Raised by a callback to stop training as a crash would."""

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
        "model": {"arch": "fcn"},   # a small stand-in network: resuming is under test, not the U-Net
        "train": {"epochs": 2, "batch_size": 8, "checkpoint_minutes": 0},
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
    a = torch.load(straight.bundle, weights_only=True)["state_dict"]
    b = torch.load(resumed.bundle, weights_only=True)["state_dict"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    assert resumed.val_dice == pytest.approx(straight.val_dice, abs=1e-6)


def test_augmentation_moves_image_labels_and_mask_together() -> None:
    task = WetmapTask(backbone="resnet18", in_channels=1, seed=0)
    image = torch.arange(2 * 32 * 32, dtype=torch.float32).view(2, 1, 32, 32)
    batch = {"image": image, "mask": (image[:, 0] % 7 == 0).long(), "valid": image[:, 0] % 5 != 0,
             "clear": image[:, 0] % 3 != 0}
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
    assert torch.equal(out["clear"], moved % 3 != 0)
    assert (out["mask"] == 255).sum() == (batch["mask"] == 255).sum()


def test_jitter_changes_each_band_of_each_chip_and_leaves_indices_and_hidden_pixels() -> None:
    """full: per chip and band an affine change of the normalised bands; index channels and
    pixels that are not clear (0 from the input step) stay as they were."""
    task = WetmapTask(backbone="resnet18", in_channels=3, augment="full", jitter=0.2, n_bands=2, seed=0)
    image = torch.randn(4, 3, 32, 32)
    clear = torch.rand(4, 32, 32) > 0.3
    image = image * clear.unsqueeze(1)
    out = task._jitter(image, clear)
    assert torch.equal(out[:, 2], image[:, 2])
    assert (out[:, :2][~clear.unsqueeze(1).expand(-1, 2, -1, -1)] == 0).all()
    for n in range(4):
        for c in range(2):
            ok = clear[n]
            gain, shift = torch.linalg.lstsq(torch.stack([image[n, c][ok], torch.ones(int(ok.sum()))], 1),
                                             out[n, c][ok].unsqueeze(1)).solution[:, 0]
            assert 0.8 - 1e-4 <= gain <= 1.2 + 1e-4 and abs(shift) <= 0.2 + 1e-4
            assert not torch.equal(out[n, c], image[n, c])


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
    assert Path(result.bundle).exists()


def test_checkpoints_hold_only_what_resume_and_the_best_model_need(sample, tmp_path: Path) -> None:
    """best.ckpt: weights alone, written when validation improves; last.ckpt (with the optimiser
    state) only when training ends, under the default interval; the summary times chip-epochs."""
    cfg = run_cfg(sample, tmp_path / "run").model_copy(deep=True)
    cfg.train.checkpoint_minutes = 60
    writes: list[str] = []

    class Watch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            writes.append(",".join(sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt"))))

    result = fit(cfg, callbacks=[Watch()])
    assert "last.ckpt" not in writes[0], "the resume point is not written after every epoch"
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert "optimizer_states" not in best and last["optimizer_states"]
    assert result.seconds_per_chip_epoch > 0 and result.train_seconds > 0


def test_balanced_sampling_draws_chips_with_and_without_wetland_equally() -> None:
    from wetmap.train.dataset import SeededOrder, balanced_weights

    wetland = np.array([0.2] * 3 + [0.0] * 27)
    order = list(SeededOrder(30, seed=1, weights=balanced_weights(wetland)))
    drawn = [i for seed in range(40) for i in SeededOrder(30, seed, balanced_weights(wetland))]
    assert len(order) == 30 and order == list(SeededOrder(30, seed=1, weights=balanced_weights(wetland)))
    assert 0.45 < np.mean([wetland[i] > 0 for i in drawn]) < 0.55
    assert balanced_weights(np.zeros(5)) is None


def test_a_validation_split_without_wetland_selects_by_loss() -> None:
    from wetmap.train.dataset import ChipSet
    from wetmap.train.task import selection_metric

    def chips(val_wetland: float) -> ChipSet:
        z = np.zeros((2, 1, 1))
        return ChipSet(z, z, z, z, np.array(["train", "val"]), ["B02"], wetland=np.array([0.3, val_wetland]))

    assert selection_metric(chips(0.1)) == ("val_dice", "max")
    with pytest.warns(UserWarning, match="no wetland pixel"):
        assert selection_metric(chips(0.0)) == ("val_loss", "min")


def test_pretraining_learns_to_fill_hidden_squares_and_keeps_the_head(sample, tmp_path: Path) -> None:
    """Masked reconstruction on every stored chip (labelled or not) moves the encoder and the
    decoder, lowers its own loss, and leaves the segmentation head for the supervised run."""
    from wetmap.chips.build import build_chip_store
    from wetmap.model.network import build_network
    from wetmap.runtime import resolve_precision
    from wetmap.train.dataset import load_chip_store
    from wetmap.train.pretrain import pretrain

    tile = config.build(config.TileConfig, {"image": str(sample.scene_a), "labels": str(sample.labels),
                                            "clouds": str(sample.scene_a_scl), "size": 64, "overlap": 0,
                                            "min_valid": 0.3, "unlabelled": True,
                                            "split": {"block": 128, "val": 0.25, "test": 0.0}})
    build_chip_store(tile, tmp_path / "chips")
    chips = load_chip_store(tmp_path / "chips", tile.bands)
    cfg = config.build(config.TrainRunConfig, {"data": {"chips": str(tmp_path / "chips")},
                                               "train": {"batch_size": 8, "pretrain_epochs": 3, "lr": 0.003}})
    torch.manual_seed(0)
    network = build_network(cfg.model, 6)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    report = pretrain(network, chips, chips.input_step(), cfg, "cpu", resolve_precision(None, "cpu"))
    after = network.state_dict()
    assert report["chips"] == len(chips.stored) >= len(chips.ids("train")) + len(chips.ids("val"))
    assert report["loss_last_epoch"] < report["loss_first_epoch"]
    assert not torch.equal(after["encoder.conv1.weight"], before["encoder.conv1.weight"])
    assert not torch.equal(after["decoder.blocks.0.conv1.0.weight"], before["decoder.blocks.0.conv1.0.weight"])
    head = [k for k in after if k.startswith("segmentation_head.")]
    assert head and all(torch.equal(after[k], before[k]) for k in head)


def test_threshold_calibration_finds_the_validation_optimum() -> None:
    """A network whose P(wetland) is known: with wetland where P > 0.7 on the validation chips,
    calibration picks 0.7 (Dice 1); without wetland in them it keeps 0.5."""
    from wetmap.train.dataset import ChipSet
    from wetmap.train.task import calibrate_threshold

    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, (4, 1, 32, 32)).astype(np.float32)
    label = (p[:, 0] > 0.7).astype(np.uint8)
    ok = np.ones((4, 32, 32), bool)

    def chips(labels: np.ndarray) -> ChipSet:
        return ChipSet(p * 1000, labels, ok, ok, np.array(["train", "val", "val", "val"]), ["B02"],
                       np.zeros(1), np.ones(1), wetland=labels.mean((1, 2)))

    task = WetmapTask(backbone="resnet18", in_channels=1, seed=0)
    task._forward = lambda batch: torch.logit(batch["image"][:, :1] / 1000)
    threshold, dice = calibrate_threshold(task, chips(label), 4, chips(label).input_step())
    assert threshold == 0.7 and dice == pytest.approx(1.0)
    assert calibrate_threshold(task, chips(np.zeros_like(label)), 4, chips(label).input_step())[0] == 0.5


@pytest.mark.slow
def test_two_ddp_processes_score_validation_as_one_write_one_bundle_and_resume(sample, tmp_path: Path) -> None:
    """Lightning DDP on the CPU (gloo), 2 processes started by `wetmap train` itself: each sees part
    of the validation chips (5: split 3 + 2, none repeated), and the Dice logged per epoch from the
    summed counts equals one process's exact score of the same weights."""
    import csv
    import json
    import subprocess
    import sys

    from wetmap.chips.build import build_chip_store

    chips = tmp_path / "chips"
    build_chip_store(config.build(config.TileConfig, {
        "image": str(sample.scene_a), "labels": str(sample.labels), "clouds": str(sample.scene_a_scl), "size": 64,
        "overlap": 0, "min_valid": 0.05, "unlabelled": False, "split": {"block": 64, "val": 0.3, "test": 0.0}}), chips)
    (tmp_path / "t.yaml").write_text(f"seed: 0\ndata: {{chips: {chips}}}\n"
                                     "train: {epochs: 2, batch_size: 4, checkpoint_minutes: 0, pretrain_epochs: 0, "
                                     "calibrate_threshold: false, devices: 2, strategy: ddp, accelerator: cpu}\n"
                                     "model: {arch: fcn}\n")   # a small stand-in: DDP is under test, not the U-Net
    wetmap = Path(sys.executable).with_name("wetmap")
    run = tmp_path / "run"

    def train(*extra: str) -> str:
        done = subprocess.run([str(wetmap), "train", "--config", str(tmp_path / "t.yaml"), "-o", str(run), *extra],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    out = train()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["chips_val"] % 2 == 1   # uneven across the two processes
    with open(run / "logs" / "metrics.csv") as f:
        logged = [float(r["val_dice"]) for r in csv.DictReader(f) if r["val_dice"]]
    assert len(logged) == 2 and max(logged) == pytest.approx(metrics["val_dice"], abs=1e-6)
    assert out.count("model bundle:") == 1 and sorted(p.name for p in run.glob("*.pt")) == ["model.pt"]
    assert not list(run.rglob("*.tmp*"))
    train("--resume", "--set", "train.epochs=3")
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 3


def test_rasters_are_cut_into_the_named_store_and_training_reads_it(sample, tmp_path: Path) -> None:
    """One way to make chips: data.image / data.labels go through wetmap tile's store, kept in data.store."""
    from wetmap.chips.store import open_chip_store

    cfg = run_cfg(sample, tmp_path / "run")
    cfg = config.build(config.TrainRunConfig, {**config.dump(cfg), "data": {**config.dump(cfg)["data"],
                                                                             "store": str(tmp_path / "chips")}})
    result = fit(cfg)
    store = open_chip_store(tmp_path / "chips")
    assert result is not None and result.chips_train == len(store.chips("train")) > 0
    assert result.chips_val == len(store.chips("val")) > 0 and store.meta["size"] == 64 and store.meta["overlap"] == 0
