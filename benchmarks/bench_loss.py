"""Forward+backward time of the masked Dice loss beside MONAI's and smp's, in one run (CPU).

Shape (16, 2, 256, 256) float32 logits, integer labels, as in the issue. Prints each time and its
ratio to MONAI's unmasked DiceLoss on the same labels (target: ours ≤ 1.0, masked included).

    .venv/bin/python benchmarks/bench_loss.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from wetmap.train.losses import DiceLoss


def timed(cases: dict[str, Callable[[], torch.Tensor]], repeat: int) -> dict[str, float]:
    """Median seconds of forward+backward per case, measured round-robin after warm-up.

    Interleaving the cases spreads the machine's drift evenly over all of them.
    """
    for fn in cases.values():
        for _ in range(3):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=40)
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
    target_float = target.unsqueeze(1).float()

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
    monai_masked_mc = MonaiMaskedDice(softmax=True, to_onehot_y=True)
    smp_mc = SmpDice("multiclass", from_logits=True)
    smp_masked_mc = SmpDice("multiclass", from_logits=True, ignore_index=255)
    # References take the same integer labels as ours; converting them to MONAI's float /
    # one-hot layout is part of using MONAI. "(float target ready)" rows show MONAI without it.
    cases = {
        "monai DiceLoss 2-class (unmasked)": run(lambda x: monai_mc_index(x, target.unsqueeze(1)), logits2),
        "monai DiceLoss 2-class (float target ready)": run(lambda x: monai_mc(x, onehot), logits2),
        "monai MaskedDiceLoss 2-class": run(
            lambda x: monai_masked_mc(x, target.unsqueeze(1), mask=valid.unsqueeze(1)), logits2),
        "smp DiceLoss 2-class (unmasked)": run(lambda x: smp_mc(x, target), logits2),
        "smp DiceLoss 2-class (ignore_index)": run(lambda x: smp_masked_mc(x, target_ignored), logits2),
        "wetmap DiceLoss 2-class (unmasked)": run(lambda x: ours_mc(x, target), logits2),
        "wetmap DiceLoss 2-class (masked)": run(lambda x: ours_mc(x, target_ignored, valid), logits2),
        "monai DiceLoss binary (unmasked)": run(lambda x: monai_bin(x, target.unsqueeze(1).float()), logits1),
        "monai DiceLoss binary (float target ready)": run(lambda x: monai_bin(x, target_float), logits1),
        "wetmap DiceLoss binary (unmasked)": run(lambda x: ours_bin(x, target), logits1),
        "wetmap DiceLoss binary (masked)": run(lambda x: ours_bin(x, target_ignored, valid), logits1),
    }
    times = timed(cases, args.repeat)
    torch_threads = torch.get_num_threads()
    print(f"forward+backward, (16,{c},256,256) float32, CPU, {torch_threads} threads, median of {args.repeat}")
    print("reference (ratio 1.00): MONAI's unmasked DiceLoss on the same integer labels")
    for name, seconds in times.items():
        ref = times["monai DiceLoss binary (unmasked)" if "binary" in name else "monai DiceLoss 2-class (unmasked)"]
        print(f"  {name:<46} {seconds * 1e3:8.2f} ms   ratio to MONAI unmasked: {seconds / ref:5.2f}")


if __name__ == "__main__":
    main()
