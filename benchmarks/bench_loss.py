"""Forward+backward time of the masked Dice loss beside MONAI's and smp's, in one run (CPU).

Shape (16, 2, 256, 256) float32 logits, as in the issue. Prints each time and its ratio to MONAI's
unmasked DiceLoss (target: ours ≤ 1.0, masked included).

    .venv/bin/python benchmarks/bench_loss.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from wetmap.losses import DiceLoss


def timed(fn: Callable[[], torch.Tensor], repeat: int) -> float:
    """Median seconds of forward+backward over `repeat` runs, after warm-up."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    from monai.losses import DiceLoss as MonaiDice
    from monai.losses import MaskedDiceLoss as MonaiMaskedDice
    from segmentation_models_pytorch.losses import DiceLoss as SmpDice

    torch.manual_seed(0)
    n, c, h, w = 16, 2, 256, 256
    logits2 = torch.randn(n, c, h, w)
    logits1 = torch.randn(n, 1, h, w)
    target = (torch.rand(n, h, w) < 0.05).long()
    valid = torch.rand(n, h, w) > 0.3
    target_ignored = torch.where(valid, target, torch.full_like(target, 255))
    onehot = torch.nn.functional.one_hot(target, c).permute(0, 3, 1, 2).float()

    def run(loss_fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            x = logits.detach().requires_grad_()
            loss = loss_fn(x)
            loss.backward()
            return loss
        return step

    ours_bin, ours_mc = DiceLoss(mode="binary"), DiceLoss(mode="multiclass")
    monai_bin = MonaiDice(sigmoid=True)
    monai_mc = MonaiDice(softmax=True)
    monai_mc_index = MonaiDice(softmax=True, to_onehot_y=True)
    monai_masked_mc = MonaiMaskedDice(softmax=True)
    smp_mc = SmpDice("multiclass", from_logits=True)
    smp_masked_mc = SmpDice("multiclass", from_logits=True, ignore_index=255)
    cases = {
        "monai DiceLoss 2-class (unmasked)": run(lambda x: monai_mc(x, onehot), logits2),
        "monai DiceLoss 2-class (unmasked, index target)": run(lambda x: monai_mc_index(x, target.unsqueeze(1)), logits2),
        "monai MaskedDiceLoss 2-class": run(lambda x: monai_masked_mc(x, onehot, mask=valid.unsqueeze(1)), logits2),
        "smp DiceLoss 2-class (unmasked)": run(lambda x: smp_mc(x, target), logits2),
        "smp DiceLoss 2-class (ignore_index)": run(lambda x: smp_masked_mc(x, target_ignored), logits2),
        "wetmap DiceLoss 2-class (unmasked)": run(lambda x: ours_mc(x, target), logits2),
        "wetmap DiceLoss 2-class (masked)": run(lambda x: ours_mc(x, target_ignored, valid), logits2),
        "monai DiceLoss binary (unmasked)": run(lambda x: monai_bin(x, target.unsqueeze(1).float()), logits1),
        "wetmap DiceLoss binary (unmasked)": run(lambda x: ours_bin(x, target), logits1),
        "wetmap DiceLoss binary (masked)": run(lambda x: ours_bin(x, target_ignored, valid), logits1),
    }
    times = {name: timed(fn, args.repeat) for name, fn in cases.items()}
    torch_threads = torch.get_num_threads()
    print(f"forward+backward, (16,{c},256,256) float32, CPU, {torch_threads} threads, median of {args.repeat}")
    print("reference: MONAI's unmasked DiceLoss given a ready one-hot float target (its fastest use)")
    for name, seconds in times.items():
        ref = times["monai DiceLoss binary (unmasked)" if "binary" in name else "monai DiceLoss 2-class (unmasked)"]
        print(f"  {name:<48} {seconds * 1e3:8.2f} ms   ratio to MONAI unmasked: {seconds / ref:5.2f}")


if __name__ == "__main__":
    main()
