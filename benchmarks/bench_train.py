"""Data loading vs training-step throughput, in one run (loading must not be the bottleneck).

On the sample scene's chip store: (a) chips/s the loader delivers, normalised and augmented as in
training; (b) chips/s of a training step (forward, masked loss, backward, optimizer) of the demo's
U-Net on batches already in memory. Target on the CPU: (a) / (b) >= 2. Then (c) what checkpoints
cost per epoch, written through wetmap's verifying writer: before issue 17, a full checkpoint
(weights and Adam's moments) as both best.ckpt and last.ckpt after every epoch; now the weights
alone as best.ckpt when validation improves (at most once an epoch), the full state every
`train.checkpoint_minutes`.

On a CUDA GPU (`--device cuda`) the step runs there under bf16 autocast, as training runs it
(`bf16-mixed`), batches already on the device.

    .venv/bin/python benchmarks/bench_train.py [--size 1024] [--batches 20] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from wetmap import config
from wetmap.chips.build import build_chip_store
from wetmap.model.network import torchgeo_task_args
from wetmap.sample import make_sample
from wetmap.train.dataset import ChipDataModule, load_chip_store
from wetmap.train.task import WetmapTask


class _Trainer:  # just enough for the task's batch augmentation outside a Lightning loop
    training = True
    global_step = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    amp = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = make_sample(Path(tmp) / "sample", size=args.size)
        tile = config.build(config.TileConfig, {"image": str(files.scene_a), "labels": str(files.labels),
                                                "clouds": str(files.scene_a_scl), "size": 128, "overlap": 64,
                                                "min_valid": 0.3, "split": {"block": 512, "val": 0.2, "test": 0.0}})
        build_chip_store(tile, Path(tmp) / "chips")
        chips = load_chip_store(Path(tmp) / "chips", tile.bands)
        dm = ChipDataModule(chips, args.batch_size)
        model_cfg = config.ModelConfig()
        task = WetmapTask(**torchgeo_task_args(model_cfg, len(tile.bands)), loss_name="composite",
                          loss_options={"terms": {"dice": 0.5, "bce": 0.5}, "batch": True})
        task._trainer = _Trainer()

        n, start = 0, time.perf_counter()
        batches = []
        while n < args.batches:
            for batch in dm.train_dataloader():
                batches.append(task.on_after_batch_transfer(batch, 0))
                n += 1
                if n == args.batches:
                    break
        load_s = time.perf_counter() - start
        chips_loaded = sum(b["image"].shape[0] for b in batches)

        task.to(device)
        batches = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in batches]
        optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)
        task.train()

        def step(batch: dict) -> None:
            with amp:
                loss = task._loss(task(batch["image"]), batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        for batch in batches[:2]:  # warm-up
            step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in batches:
            step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_s = time.perf_counter() - start
    load_rate, step_rate = chips_loaded / load_s, chips_loaded / step_s
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"{chips_loaded} chips of 128x128x6 in batches of {args.batch_size}, training step on {where}")
    print(f"  data loading (read Zarr, normalise, augment): {load_rate:8.1f} chips/s")
    print(f"  training step (U-Net ResNet-18, Dice+BCE)    : {step_rate:8.1f} chips/s")
    print(f"  ratio loading / training: {load_rate / step_rate:.1f} (target >= 2)")
    full_s, full_mb, weights_s, weights_mb = checkpoint_costs(task, optimizer)
    epoch_s = chips_loaded / step_rate
    print(f"  a full checkpoint: {full_mb:.0f} MB in {full_s:.2f} s; the weights alone: {weights_mb:.0f} MB in "
          f"{weights_s:.2f} s")
    print(f"  per epoch of {chips_loaded} chips ({epoch_s:.1f} s of steps): two full checkpoints {2 * full_s:.2f} s "
          f"({2 * full_s / epoch_s:.0%} of the steps) before; at most {weights_s:.2f} s "
          f"({weights_s / epoch_s:.0%}) now")


def checkpoint_costs(task: WetmapTask, optimizer: torch.optim.Optimizer) -> tuple[float, float, float, float]:
    """Seconds and MB of a full and of a weights-only checkpoint, as the trainer writes them."""
    from wetmap.train.checkpoints import VerifiedCheckpointIO

    writer = VerifiedCheckpointIO()
    full = {"state_dict": task.state_dict(), "optimizer_states": [optimizer.state_dict()], "epoch": 1}
    weights = {"state_dict": task.state_dict(), "epoch": 1}
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, payload in (("full.ckpt", full), ("best.ckpt", weights)):
            path = Path(tmp) / name
            start = time.perf_counter()
            writer.save_checkpoint(payload, path)
            out += [time.perf_counter() - start, path.stat().st_size / 1e6]
    return out[0], out[1], out[2], out[3]


if __name__ == "__main__":
    main()
