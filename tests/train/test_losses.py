"""The cloud-masked Dice family: formulas, masking, empty cases, precision, MONAI agreement."""

import math

import pytest
import torch

from wetmap.train.losses import (
    CompositeLoss,
    DiceLoss,
    FocalLoss,
    GeneralizedDiceLoss,
    TverskyLoss,
    boundary_weights,
    build_loss,
)

torch.manual_seed(0)


def batch(n: int = 3, c: int = 1, h: int = 12, w: int = 10, valid_p: float = 0.7):
    g = torch.Generator().manual_seed(n * 100 + c)
    logits = torch.randn(n, c, h, w, generator=g)
    k = max(c, 2)
    target = torch.randint(0, k, (n, h, w), generator=g)
    valid = torch.rand(n, h, w, generator=g) < valid_p
    target[~valid] = 255  # unknown labels at invalid pixels must never be read
    return logits, target, valid


ALL_LOSSES = [
    lambda m: DiceLoss(mode=m), lambda m: DiceLoss(mode=m, batch=True), lambda m: DiceLoss(mode=m, squared=True),
    lambda m: DiceLoss(mode=m, jaccard=True), lambda m: DiceLoss(mode=m, average="micro"),
    lambda m: GeneralizedDiceLoss(mode=m), lambda m: TverskyLoss(mode=m, alpha=0.3, beta=0.7),
    lambda m: FocalLoss(mode=m), lambda m: CompositeLoss({"dice": 0.5, "bce" if m == "binary" else "ce": 0.5}, mode=m),
]


def test_binary_dice_gradient_matches_closed_form() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.rand(1, 1, 9, 7, generator=g, dtype=torch.float64).float().requires_grad_()
    t = (torch.rand(1, 9, 7, generator=g) > 0.6).long()
    eps = 1e-5
    loss = DiceLoss(mode="binary", from_logits=False, smooth_nr=eps, smooth_dr=eps)(p, t)
    loss.backward()
    pd, gd = p.detach().double()[0, 0], t.double()[0]
    inter, s = (pd * gd).sum(), pd.sum() + gd.sum() + eps
    expected = ((2 * inter + eps) - 2 * gd * s) / s**2
    assert torch.allclose(p.grad[0, 0].double(), expected, atol=1e-6)
    assert math.isclose(loss.item(), 1 - ((2 * inter + eps) / s).item(), rel_tol=1e-5)


@pytest.mark.parametrize("mode,c", [("binary", 1), ("multiclass", 3)])
@pytest.mark.parametrize("make", ALL_LOSSES)
def test_invalid_pixels_change_neither_loss_nor_gradient(make, mode: str, c: int) -> None:
    logits, target, valid = batch(c=c)
    loss_fn = make(mode)
    x1 = logits.clone().requires_grad_()
    l1 = loss_fn(x1, target, valid)
    l1.backward()
    # Scramble predictions and targets wherever the pixel is invalid.
    x2 = torch.where(valid.unsqueeze(1), logits, torch.randn_like(logits) * 50).requires_grad_()
    t2 = torch.where(valid, target, torch.randint_like(target, 0, max(c, 2)))
    l2 = loss_fn(x2, t2, valid)
    l2.backward()
    assert torch.allclose(l1, l2, atol=1e-6)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-7)
    assert (x1.grad.permute(1, 0, 2, 3)[:, ~valid] == 0).all()


def test_empty_target_empty_prediction_is_zero_and_false_positives_are_one() -> None:
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    confident_no = torch.full((2, 1, 8, 8), -30.0)
    confident_yes = torch.full((2, 1, 8, 8), 30.0)
    assert DiceLoss()(confident_no, target).item() == pytest.approx(0.0, abs=1e-3)
    assert DiceLoss()(confident_yes, target).item() == pytest.approx(1.0, abs=1e-3)
    # With batch pooling too: wetland-free batches still punish false positives.
    assert DiceLoss(batch=True)(confident_yes, target).item() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("mode,c", [("binary", 1), ("multiclass", 3)])
@pytest.mark.parametrize("make", ALL_LOSSES)
def test_all_invalid_gives_zero_loss_zero_grad_no_nan(make, mode: str, c: int) -> None:
    logits, target, _ = batch(c=c)
    valid = torch.zeros_like(target, dtype=torch.bool)
    x = logits.clone().requires_grad_()
    loss = make(mode)(x, torch.full_like(target, 255), valid)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()


@pytest.mark.parametrize("make", [lambda: DiceLoss(), lambda: GeneralizedDiceLoss(), lambda: TverskyLoss()])
def test_sample_without_valid_pixel_is_left_out_of_the_mean(make) -> None:
    logits, target, valid = batch(n=2)
    valid[1] = False
    both = make()(logits, target, valid)
    first = make()(logits[:1], target[:1], valid[:1])
    assert torch.allclose(both, first)


def test_no_nan_for_any_mask_pattern() -> None:
    logits, target, valid = batch(n=4, c=3)
    valid[0] = False
    valid[1, :, :5] = False
    for make in ALL_LOSSES:
        for v in (valid, torch.ones_like(valid), None):
            t = target if v is not None else target.clamp(max=2)
            loss = make("multiclass")(logits, torch.where(valid, t, 0) if v is None else t, v)
            assert torch.isfinite(loss)


def test_loss_is_float32_under_autocast() -> None:
    logits, target, valid = batch(c=1)
    reference = DiceLoss()(logits, target, valid)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.nn.Conv2d(1, 1, 1)(logits)  # bf16 activations
        assert x.dtype == torch.bfloat16
        loss = DiceLoss()(logits.bfloat16(), target, valid)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), abs=1e-2)


def test_class_weights_are_normalised() -> None:
    logits, target, valid = batch(c=3)
    a = DiceLoss(mode="multiclass", class_weights=[1, 2, 3])(logits, target, valid)
    b = DiceLoss(mode="multiclass", class_weights=[2, 4, 6])(logits, target, valid)
    assert torch.allclose(a, b)


def test_micro_average_pools_classes() -> None:
    logits, target, valid = batch(n=1, c=3)
    p = torch.softmax(logits, 1) * valid.unsqueeze(1)
    g = torch.nn.functional.one_hot(torch.where(valid, target, 0), 3).permute(0, 3, 1, 2) * valid.unsqueeze(1)
    expected = 1 - (2 * (p * g).sum() + 1e-5) / (p.sum() + g.sum() + 1e-5)
    got = DiceLoss(mode="multiclass", average="micro")(logits, target, valid)
    assert torch.allclose(got, expected, atol=1e-6)


def test_jaccard_and_tversky_formulas() -> None:
    logits, target, valid = batch(n=1)
    p = torch.sigmoid(logits)[0, 0][valid[0]]
    g = target[0][valid[0]].float()
    tp, fp, fn = (p * g).sum(), (p * (1 - g)).sum(), ((1 - p) * g).sum()
    jac = 1 - (tp + 1e-5) / (p.sum() + g.sum() - tp + 1e-5)
    assert torch.allclose(DiceLoss(jaccard=True)(logits, target, valid), jac, atol=1e-6)
    tv = 1 - (tp + 1e-5) / (tp + 0.3 * fp + 0.7 * fn + 1e-5)
    assert torch.allclose(TverskyLoss(alpha=0.3, beta=0.7)(logits, target, valid), tv, atol=1e-6)


def test_generalized_dice_absent_class_takes_largest_finite_weight() -> None:
    logits = torch.randn(1, 3, 8, 8)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :2] = 1  # class 2 absent
    p = torch.softmax(logits, 1)
    g = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    vol = g.sum((0, 2, 3))
    w = 1 / vol**2
    w[2] = w[:2].max()
    inter, denom = (p * g).sum((0, 2, 3)), (p + g).sum((0, 2, 3))
    expected = 1 - (2 * (w * inter).sum() + 1e-5) / ((w * denom).sum() + 1e-5)
    assert torch.allclose(GeneralizedDiceLoss(mode="multiclass")(logits, target), expected, atol=1e-6)


def test_focal_with_gamma_zero_is_masked_bce() -> None:
    logits, target, valid = batch(n=2)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0][valid], target[valid].float())
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, target, valid), bce, atol=1e-6)
    assert FocalLoss(gamma=2.0)(logits, target, valid) < bce


def test_composite_is_weighted_sum() -> None:
    logits, target, valid = batch()
    combo = CompositeLoss({"dice": 0.7, "bce": 0.3})(logits, target, valid)
    parts = 0.7 * DiceLoss()(logits, target, valid) + 0.3 * build_loss("bce")(logits, target, valid)
    assert torch.allclose(combo, parts)


def test_weight_map_acts_inside_sums() -> None:
    logits, target, valid = batch(n=1)
    weight = torch.rand(target.shape)
    p = torch.sigmoid(logits)[:, 0]
    w = weight * valid
    g = torch.where(valid, target, 0).float()
    expected = 1 - (2 * (w * p * g).sum() + 1e-5) / ((w * p).sum() + (w * g).sum() + 1e-5)
    assert torch.allclose(DiceLoss()(logits, target, valid, weight=weight), expected, atol=1e-6)


def test_boundary_weights_peak_at_edges() -> None:
    target = torch.zeros(1, 64, 64, dtype=torch.long)
    target[:, 16:48, 16:48] = 1
    w = boundary_weights(target, width=3, amplitude=2.0)
    assert w[0, 16, 32] == pytest.approx(3.0)               # on the wetland edge
    assert w[0, 12, 32] == pytest.approx(1 + 2 * math.exp(-1))  # 3 px from the outer edge row
    assert w[0, 32, 32] == pytest.approx(1.0, abs=1e-3)     # deep inside
    assert w[0, 0, 0] == pytest.approx(1.0, abs=1e-3)       # far outside


# --- agreement with MONAI (a test-only dependency) on the unmasked cases it covers -----------------
monai_losses = pytest.importorskip("monai.losses")


@pytest.mark.parametrize("batch_mode", [False, True])
@pytest.mark.parametrize("squared", [False, True])
def test_binary_dice_agrees_with_monai(batch_mode: bool, squared: bool) -> None:
    logits, target, _ = batch(n=4, valid_p=1.1)
    ours = DiceLoss(batch=batch_mode, squared=squared)(logits, target)
    ref = monai_losses.DiceLoss(sigmoid=True, batch=batch_mode, squared_pred=squared, smooth_nr=1e-5,
                                smooth_dr=1e-5)(logits, target.unsqueeze(1).float())
    assert abs(ours.item() - ref.item()) < 1e-6


@pytest.mark.parametrize("include_background", [True, False])
def test_multiclass_dice_agrees_with_monai(include_background: bool) -> None:
    logits, target, _ = batch(n=3, c=4, valid_p=1.1)
    target = target.clamp(max=3)
    ours = DiceLoss(mode="multiclass", include_background=include_background)(logits, target)
    ref = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, include_background=include_background,
                                smooth_nr=1e-5, smooth_dr=1e-5)(logits, target.unsqueeze(1))
    assert abs(ours.item() - ref.item()) < 1e-6


@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
def test_generalized_dice_agrees_with_monai(w_type: str) -> None:
    logits, target, _ = batch(n=3, c=3, h=16, w=16, valid_p=1.1)
    target = target.clamp(max=2)
    ours = GeneralizedDiceLoss(w_type=w_type, mode="multiclass")(logits, target)
    ref = monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, w_type=w_type, smooth_nr=1e-5,
                                           smooth_dr=1e-5)(logits, target.unsqueeze(1))
    assert abs(ours.item() - ref.item()) < 1e-6


def test_tversky_agrees_with_monai() -> None:
    logits, target, _ = batch(n=3, c=3, valid_p=1.1)
    target = target.clamp(max=2)
    ours = TverskyLoss(mode="multiclass", alpha=0.3, beta=0.7)(logits, target)
    ref = monai_losses.TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7, smooth_nr=1e-5,
                                   smooth_dr=1e-5)(logits, target.unsqueeze(1))
    assert abs(ours.item() - ref.item()) < 1e-6
