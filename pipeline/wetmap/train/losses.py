"""The cloud-masked Dice loss family, focal / BCE, and composites of them.

Every loss takes `loss(pred, target, valid=None, weight=None)`. `valid` (N,H,W, True = usable)
removes cloud, shadow, cirrus, no-data and unknown-label pixels from every sum, after the
activation, so they give neither loss nor gradient; target values there (e.g. 255) are never read
as classes. Sums run in float32 even under autocast. A sample with no valid pixel is left out of
the mean; a batch with none gives 0 with zero gradients.

Dice per (sample, class) = (2·Σwpg + smooth_nr) / (Σwp + Σwg + smooth_dr), w = valid · weight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wetmap.config.train import DEFAULT_TERMS, loss_option_keys

Mode = Literal["binary", "multiclass"]

_TINY = 1e-12


def _pixel_weights(valid: Tensor | None, weight: Tensor | None, like: Tensor) -> Tensor | None:
    """(N,1,H,W) float32 weights: the valid mask times an optional weight map (None: all 1)."""
    if valid is None and weight is None:
        return None
    n, _, h, w = like.shape
    out = None
    if valid is not None:
        out = valid.reshape(n, 1, h, w).to(torch.float32)
    if weight is not None:
        wmap = weight.reshape(n, 1, h, w).to(torch.float32)
        out = wmap if out is None else out * wmap
    return out


def _as_float(mask: Tensor) -> Tensor:
    """float32 0/1 from a bool mask; through uint8, which converts an order of magnitude faster."""
    return mask.view(torch.uint8).to(torch.float32) if mask.dtype == torch.bool else mask.to(torch.float32)


def _as_nchw(pred: Tensor, mode: Mode) -> Tensor:
    if mode == "binary" and pred.ndim == 3:
        pred = pred.unsqueeze(1)
    if pred.ndim != 4:
        raise ValueError(f"pred must be (N,C,H,W){' or (N,H,W)' if mode == 'binary' else ''}, got {tuple(pred.shape)}")
    if mode == "binary" and pred.shape[1] != 1:
        raise ValueError(f"binary mode expects one channel, got {pred.shape[1]}")
    return pred.float()


def targets(target: Tensor, mode: Mode, num_classes: int, valid: Tensor | None) -> Tensor:
    """(N,C,H,W) float32 targets from class indices or soft targets; invalid pixels read as 0."""
    if target.is_floating_point() and target.ndim == 4:
        out = target.float()
    else:
        index = target.long()
        if index.ndim == 4:
            index = index[:, 0]
        usable = (index >= 0) & (index < max(num_classes, 2))
        if valid is not None:
            usable &= valid.reshape(index.shape).bool()
        index = torch.where(usable, index, torch.zeros_like(index))
        if mode == "binary":
            out = index.unsqueeze(1).float()
        else:
            out = F.one_hot(index, num_classes).permute(0, 3, 1, 2).float()
    if valid is not None:
        out = out * valid.reshape(out.shape[0], 1, *out.shape[2:]).float()
    return out


def _row_dots(a: Tensor, b: Tensor, share: int) -> Tensor:
    """Dot product of each row of `a` with row i // share of `b`: BLAS dots, no temporaries."""
    return torch.stack([torch.dot(a[i], b[i // share]) for i in range(a.shape[0])])


class _MaskedSums(torch.autograd.Function):
    """Σp·g, Σp (or Σp²) and Σg per (sample, class), from logits, with a closed-form backward.

    Autograd would keep a full-size temporary per product and a backward node per step, which
    made the masked loss twice as slow as MONAI's unmasked one on the CPU. Here the sums are dot
    products and the backward writes the gradient in place: dL/dp = a·g + b·u (a = dL/dΣpg,
    b = dL/dΣp, u = the mask or weights), then through the activation.
    """

    @staticmethod
    def forward(ctx, x: Tensor, g: Tensor, u: Tensor | None, mode: str, from_logits: bool,
                temperature: float, squared: bool) -> tuple[Tensor, Tensor, Tensor]:
        n, c = x.shape[:2]
        if from_logits:
            z = x / temperature if temperature != 1.0 else x
            p = torch.sigmoid(z) if mode == "binary" else torch.softmax(z, dim=1)
        else:
            p = x
        q = p * p if squared else p
        tp = _row_dots(p.reshape(n * c, -1), g.reshape(n * c, -1), 1).view(n, c)
        ps = q.sum((2, 3)) if u is None else _row_dots(q.reshape(n * c, -1), u.reshape(n, -1), c).view(n, c)
        gs = (g * g if squared else g).sum((2, 3))
        ctx.save_for_backward(p, g, u)
        ctx.options = (mode, from_logits, temperature, squared)
        return tp, ps, gs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_tp: Tensor, d_ps: Tensor, d_gs: Tensor):
        p, g, u = ctx.saved_tensors
        mode, from_logits, temperature, squared = ctx.options
        n, c = p.shape[:2]
        a, b = d_tp.view(n, c, 1, 1), d_ps.view(n, c, 1, 1)
        grad = g * a
        if squared:
            grad.addcmul_(p, 2 * b if u is None else u * (2 * b))
        elif u is None:
            grad.add_(b)
        else:
            grad.addcmul_(u, b)
        if from_logits:
            if mode == "binary":
                grad.mul_(p)
                grad.addcmul_(grad, p, value=-1.0)  # dL/dp · p(1−p)
            else:
                grad.sub_((grad * p).sum(1, keepdim=True)).mul_(p)  # softmax backward
            if temperature != 1.0:
                grad.div_(temperature)
        return grad, None, None, None, None, None, None


class _OverlapLoss(nn.Module):
    """Shared machinery of the Dice-like losses: masked sums, reductions, empty-sample rules."""

    class_weights: Tensor | None   # a buffer, moved with the module

    def __init__(self, mode: Mode = "binary", from_logits: bool = True, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5, squared: bool = False, batch: bool = False,
                 include_background: bool = True, average: Literal["macro", "micro"] = "macro",
                 class_weights: Sequence[float] | Tensor | None = None, jaccard: bool = False,
                 temperature: float = 1.0) -> None:
        super().__init__()
        if mode not in ("binary", "multiclass"):
            raise ValueError(f"mode must be 'binary' or 'multiclass', got {mode!r}")
        if average not in ("macro", "micro"):
            raise ValueError(f"average must be 'macro' or 'micro', got {average!r}")
        self.mode, self.from_logits, self.temperature = mode, from_logits, float(temperature)
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        self.squared, self.batch, self.jaccard = squared, batch, jaccard
        self.include_background, self.average = include_background, average
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def _sums(self, pred: Tensor, target: Tensor, valid: Tensor | None, weight: Tensor | None):
        """Masked per-(sample, class) sums TP=Σwpg, Σwp, Σwg (N,C), and which samples count.

        Class-index targets become one-hot by comparison and are masked as booleans before any
        float work: that keeps the masked loss about as fast as MONAI's unmasked one.
        """
        x = _as_nchw(pred, self.mode)
        n, c = x.shape[:2]
        if target.is_floating_point() and target.ndim == 4:  # soft / one-hot targets
            u = _pixel_weights(valid, weight, x)
            g = target.float() if u is None else target.float() * u
        else:  # class indices: one-hot by comparison, as float 0/1 through uint8 (fast on the CPU)
            index = target.reshape(n, 1, *x.shape[2:])
            classes = torch.arange(c, device=x.device).view(1, c, 1, 1) if self.mode == "multiclass" else 1
            usable: Tensor | None
            if valid is not None:
                usable = valid.reshape(index.shape).bool()
            else:  # without a mask, pixels whose target is no class (e.g. 255) are still left out
                low, high = torch.aminmax(index)
                in_range = bool(low >= 0) and bool(high < max(c, 2))
                usable = None if in_range else (index >= 0) & (index < max(c, 2))
            hit = index == classes
            u = None if usable is None else _as_float(usable)
            g = _as_float(hit if usable is None else hit & usable)
            if weight is not None:
                wmap = weight.reshape(index.shape).float()
                u = wmap if u is None else u * wmap
                g = g * wmap
        tp, ps, gs = _MaskedSums.apply(x, g, u, self.mode, self.from_logits, self.temperature, self.squared)
        total = None if u is None else u.sum((1, 2, 3))
        if self.mode == "multiclass" and not self.include_background:
            tp, ps, gs = tp[:, 1:], ps[:, 1:], gs[:, 1:]
        counts = torch.ones(n, dtype=torch.bool, device=x.device) if total is None else total > 0
        if self.batch:
            tp, ps, gs = tp.sum(0, keepdim=True), ps.sum(0, keepdim=True), gs.sum(0, keepdim=True)
            counts = counts.any().reshape(1)
        return tp, ps, gs, counts

    def _class_weights(self, n_classes: int, device: torch.device) -> Tensor:
        if self.class_weights is None:
            return torch.full((n_classes,), 1.0 / n_classes, device=device)
        cw = self.class_weights.to(device)
        if self.mode == "multiclass" and not self.include_background and cw.numel() == n_classes + 1:
            cw = cw[1:]
        if cw.numel() != n_classes:
            raise ValueError(f"class_weights has {cw.numel()} values for {n_classes} classes")
        return cw / cw.sum()

    def _score(self, tp: Tensor, ps: Tensor, gs: Tensor) -> Tensor:
        if self.jaccard:
            return (tp + self.smooth_nr) / (ps + gs - tp + self.smooth_dr).clamp_min(_TINY)
        return (2 * tp + self.smooth_nr) / (ps + gs + self.smooth_dr).clamp_min(_TINY)

    def _reduce(self, tp: Tensor, ps: Tensor, gs: Tensor, counts: Tensor) -> Tensor:
        cw = self._class_weights(tp.shape[1], tp.device)
        if self.average == "micro":
            per_sample = 1 - self._score((tp * cw).sum(1), (ps * cw).sum(1), (gs * cw).sum(1))
        else:
            per_sample = ((1 - self._score(tp, ps, gs)) * cw).sum(1)
        return _mean_over(per_sample, counts)

    def forward(self, pred: Tensor, target: Tensor, valid: Tensor | None = None,
                weight: Tensor | None = None) -> Tensor:
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return self._reduce(*self._sums(pred, target, valid, weight))


def _mean_over(per_sample: Tensor, counts: Tensor) -> Tensor:
    """Mean over the samples that have a valid pixel; 0 (zero gradient) when none has."""
    keep = counts.to(per_sample.dtype)
    return (per_sample * keep).sum() / keep.sum().clamp_min(1.0)


class DiceLoss(_OverlapLoss):
    """Soft Dice (or Jaccard) loss over valid pixels; see the module docstring for the formula."""


class GeneralizedDiceLoss(_OverlapLoss):
    """Generalized Dice (Sudre et al. 2017): classes weighted by 1/G², 1/G or 1 of their volume G.

    A class absent from the (valid part of the) target takes the largest finite weight, so its
    false positives still cost something.
    """

    def __init__(self, w_type: Literal["square", "simple", "uniform"] = "square", **kwargs) -> None:
        super().__init__(**kwargs)
        if w_type not in ("square", "simple", "uniform"):
            raise ValueError(f"w_type must be square, simple or uniform, got {w_type!r}")
        self.w_type = w_type

    def _reduce(self, tp: Tensor, ps: Tensor, gs: Tensor, counts: Tensor) -> Tensor:
        if self.w_type == "uniform":
            w = torch.ones_like(gs)
        else:
            w = 1.0 / (gs * gs if self.w_type == "square" else gs)
        finite = torch.isfinite(w)
        w = torch.where(finite, w, torch.zeros_like(w))
        largest = w.max(dim=1, keepdim=True).values
        largest = torch.where(largest > 0, largest, torch.ones_like(largest))
        w = torch.where(finite, w, largest).detach()
        if self.class_weights is not None:
            w = w * self._class_weights(tp.shape[1], tp.device)
        numer = 2 * (w * tp).sum(1) + self.smooth_nr
        denom = (w * (ps + gs)).sum(1) + self.smooth_dr
        if self.jaccard:
            numer = numer / 2
            denom = denom - (w * tp).sum(1)
        return _mean_over(1 - numer / denom.clamp_min(_TINY), counts)


class TverskyLoss(_OverlapLoss):
    """1 − (TP + smooth_nr) / (TP + α·FP + β·FN + smooth_dr) per (sample, class).

    α > β punishes false positives more (precision), β > α false negatives (recall: thin wetlands).
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.alpha, self.beta = float(alpha), float(beta)

    def _score(self, tp: Tensor, ps: Tensor, gs: Tensor) -> Tensor:
        fp, fn = ps - tp, gs - tp
        return (tp + self.smooth_nr) / (tp + self.alpha * fp + self.beta * fn + self.smooth_dr).clamp_min(_TINY)


def _masked_pixel_mean(loss: Tensor, valid: Tensor | None, weight: Tensor | None) -> Tensor:
    w = _pixel_weights(valid, weight, loss)
    if w is None:
        return loss.mean()
    return (loss * w).sum() / w.sum().clamp_min(_TINY)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017), mean over valid pixels; gamma=0 gives (B)CE."""

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None,
                 mode: Mode = "binary", from_logits: bool = True, temperature: float = 1.0) -> None:
        super().__init__()
        self.gamma, self.mode, self.from_logits, self.temperature = float(gamma), mode, from_logits, float(temperature)
        self.alpha = alpha

    def forward(self, pred: Tensor, target: Tensor, valid: Tensor | None = None,
                weight: Tensor | None = None) -> Tensor:
        with torch.autocast(device_type=pred.device.type, enabled=False):
            x = _as_nchw(pred, self.mode) / self.temperature
            g = targets(target, self.mode, x.shape[1], valid)
            if self.mode == "binary":
                if self.from_logits:
                    ce = F.binary_cross_entropy_with_logits(x, g, reduction="none")
                    p = torch.sigmoid(x)
                else:
                    p = x.clamp(_TINY, 1 - 1e-7)
                    ce = F.binary_cross_entropy(p, g, reduction="none")
                p_t = p * g + (1 - p) * (1 - g)
                loss = ce * (1 - p_t).pow(self.gamma) if self.gamma else ce
                if self.alpha is not None:
                    a = float(self.alpha)  # type: ignore[arg-type]
                    loss = loss * (a * g + (1 - a) * (1 - g))
            else:
                logp = F.log_softmax(x, 1) if self.from_logits else x.clamp_min(_TINY).log()
                ce = -(g * logp)
                loss = ce * (1 - logp.exp()).pow(self.gamma) if self.gamma else ce
                if self.alpha is not None:
                    loss = loss * torch.as_tensor(self.alpha, dtype=loss.dtype, device=loss.device).view(1, -1, 1, 1)
                loss = loss.sum(1, keepdim=True)
            return _masked_pixel_mean(loss, valid, weight)


class CompositeLoss(nn.Module):
    """A weighted sum of named losses, e.g. CompositeLoss({"dice": 0.5, "bce": 0.5})."""

    def __init__(self, terms: Mapping[str, float], mode: Mode = "binary", **options) -> None:
        super().__init__()
        if not terms:
            raise ValueError("CompositeLoss needs at least one term")
        self.weights = {name: float(w) for name, w in terms.items()}
        self.terms = nn.ModuleDict({name: build_loss(name, mode=mode, **options) for name in terms})

    def forward(self, pred: Tensor, target: Tensor, valid: Tensor | None = None,
                weight: Tensor | None = None) -> Tensor:
        return sum(self.weights[name] * term(pred, target, valid, weight) for name, term in self.terms.items())


_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "dice": DiceLoss,
    "generalized_dice": GeneralizedDiceLoss,
    "tversky": TverskyLoss,
    "focal": FocalLoss,
    "bce": lambda mode="binary", **kw: FocalLoss(gamma=0.0, mode=mode, **kw),
    "ce": lambda mode="multiclass", **kw: FocalLoss(gamma=0.0, mode=mode, **kw),
}


def build_loss(name: str, mode: Mode = "binary", **options) -> nn.Module:
    """A loss by config name: dice, generalized_dice, tversky, focal, bce, ce or composite.

    Inside a composite, each term gets only the options it takes (`batch` goes to Dice, not BCE).
    """
    if name == "composite":
        terms = options.pop("terms", DEFAULT_TERMS)
        return CompositeLoss(terms, mode=mode, **options)
    if name not in _FACTORIES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join([*_FACTORIES, 'composite'])}")
    allowed = loss_option_keys(name)
    return _FACTORIES[name](mode=mode, **{k: v for k, v in options.items() if k in allowed})


def boundary_weights(target: Tensor, width: int = 3, amplitude: float = 2.0,
                     valid: Tensor | None = None) -> Tensor:
    """(N,H,W) weights 1 + amplitude·exp(−(d/width)²), d = pixels to the nearest class boundary.

    Wetland edges are where maps disagree most; weighting them sharpens the outline. Distances are
    chessboard steps grown by 3x3 max-pooling, up to 3·width.
    """
    t = target.long()
    if valid is not None:
        t = torch.where(valid.bool(), t, torch.zeros_like(t))
    t = t.unsqueeze(1).float()
    edge = (F.max_pool2d(t, 3, 1, 1) != -F.max_pool2d(-t, 3, 1, 1)).float()
    dist = torch.full_like(edge, float(3 * width + 1))
    reached = edge
    for step in range(3 * width + 1):
        dist = torch.where((reached > 0) & (dist > step), torch.full_like(dist, float(step)), dist)
        reached = F.max_pool2d(reached, 3, 1, 1)
    return (1 + amplitude * torch.exp(-(dist / width) ** 2)).squeeze(1)
