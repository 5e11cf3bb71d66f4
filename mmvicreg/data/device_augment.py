"""The colour half of the VICReg views, applied to a whole batch on the training device.

The published recipe is written once, in :mod:`mmvicreg.data.recipe` (the workers'
:func:`~mmvicreg.data.transforms.vicreg_view` reads it too): per image, after the random resized crop and the
horizontal flip, colour jitter (p 0.8), grayscale (p 0.2), Gaussian blur (p 1.0 / 0.1 for view 1 / 2) and
solarisation (p 0.0 / 0.2). :class:`DeviceViewAugment` does the same on a float batch ``(B, 3, H, W)`` in [0, 1] (a
GPU batch, typically), with independent random parameters per sample drawn from the device's global RNG, so that
DataLoader workers only decode, crop and flip.

The per-op maths follows ``torchvision.transforms.v2.functional`` on float tensors (``x`` in [0, 1], factor ``f``,
luma ``L(x) = 0.2989 R + 0.587 G + 0.114 B``, ``clamp`` to [0, 1]):

* brightness: ``clamp(f x)``
* contrast: ``clamp(f x + (1 - f) mean(L(x)))``, the mean over the whole image of that sample
* saturation: ``clamp(f x + (1 - f) L(x))``
* hue: RGB -> HSV, ``h <- (h + f) mod 1``, HSV -> RGB (torchvision's formulas)
* grayscale: ``L(x)`` on all three channels
* blur: separable Gaussian, 1-D taps ``softmax(-(t / σ)^2)`` at ``t = linspace(-(k-1)/(2√2), (k-1)/(2√2), k)``
  (that is ``exp(-d²/2σ²)`` at integer offsets ``d``, normalised), reflect padding of ``k // 2``, then a clamp to
  [0, 1] (torchvision does not clamp; the kernel is a convex combination, so this only trims rounding)
* solarize: ``x >= 128/255 -> 1 - x``: the recipe solarises 8-bit images at 128, i.e. ``x >= 128/255`` on ``x / 255``

Jitter applies its four ops in a per-sample random order (torchvision's ``ColorJitter`` draws ``randperm(4)`` per
call); op ids 0, 1, 2, 3 are brightness, contrast, saturation, hue, as torchvision numbers them.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from mmvicreg.data.recipe import JITTER_OPS, VIEW_RECIPES, blur_kernel_size, view_recipe

SOLARIZE_THRESHOLD = VIEW_RECIPES[1].solarize_threshold / 255  # the recipe's 128 on 8-bit levels, on [0, 1]
_LUMA = (0.2989, 0.587, 0.114)
# HSV -> RGB: for sector i = floor(6h) mod 6, which of (v, p, q, t) each of R, G, B takes (torchvision's table)
_HSV_SELECT = ((0, 2, 1, 1, 3, 0), (3, 0, 0, 2, 1, 1), (1, 1, 3, 0, 0, 2))


def _per_sample(factors: torch.Tensor) -> torch.Tensor:
    return factors.to(torch.float32).reshape(-1, 1, 1, 1)


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W) -> (N, 1, H, W)``: ``0.2989 R + 0.587 G + 0.114 B`` (torchvision's ``rgb_to_grayscale``)."""
    r, g, b = x.unbind(dim=1)
    return r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``clamp(f x + (1 - f) other, 0, 1)`` with one ``f`` per sample."""
    f = _per_sample(factors)
    return (x * f).add_(other * (1.0 - f)).clamp_(0.0, 1.0)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)``: the luma on all three channels (``rgb_to_grayscale(x, num_output_channels=3)``)."""
    return rgb_to_luma(x).expand_as(x).contiguous()


def adjust_brightness(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``clamp(f x, 0, 1)`` with ``f = factors[n]`` for sample ``n`` (torchvision's ``adjust_brightness``)."""
    return (x * _per_sample(factors)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``clamp(f x + (1 - f) m, 0, 1)``, ``m`` the mean luma of sample ``n`` (torchvision's ``adjust_contrast``)."""
    return _blend(x, rgb_to_luma(x).mean(dim=(1, 2, 3), keepdim=True), factors)


def adjust_saturation(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``clamp(f x + (1 - f) L(x), 0, 1)`` per pixel (torchvision's ``adjust_saturation``)."""
    return _blend(x, rgb_to_luma(x), factors)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB in [0, 1] -> HSV in [0, 1] (torchvision's formulas; grey pixels get ``h = s = 0``)."""
    r, g, _ = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)
    eqc = maxc == minc
    channels_range = maxc - minc
    ones = torch.ones_like(maxc)
    s = channels_range / torch.where(eqc, ones, maxc)
    divisor = torch.where(eqc, ones, channels_range).unsqueeze(1)
    rc, gc, bc = ((maxc.unsqueeze(1) - x) / divisor).unbind(dim=1)
    maxc_neq_r = maxc != r
    maxc_eq_g = maxc == g
    hg = rc.add(2.0).sub_(bc).mul_(maxc_eq_g & maxc_neq_r)
    hr = bc.sub(gc).mul_(~maxc_neq_r)
    hb = gc.add(4.0).sub_(rc).mul_(maxc_neq_r & ~maxc_eq_g)
    h = hr.add_(hg).add_(hb).mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    return torch.stack((h, s, maxc), dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` HSV in [0, 1] -> RGB (torchvision's sector formulas: ``p, q, t`` clamped to [0, 1])."""
    h, s, v = hsv.unbind(dim=1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    sxf = s * f
    one_minus_s = 1.0 - s
    q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0)
    t = sxf.add_(one_minus_s).mul_(v).clamp_(0.0, 1.0)
    p = one_minus_s.mul_(v).clamp_(0.0, 1.0)
    sector = i.to(torch.long).remainder_(6)
    vpqt = torch.stack((v, p, q, t), dim=1)
    table = torch.tensor(_HSV_SELECT, dtype=torch.long, device=hsv.device)
    select = table[:, sector].movedim(0, 1)  # (N, 3, H, W): index into (v, p, q, t) per output channel
    return vpqt.gather(1, select)


def adjust_hue(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """HSV hue ``h <- (h + f) mod 1`` with ``f = factors[n]`` in [-0.5, 0.5] (torchvision's ``adjust_hue``)."""
    h, s, v = rgb_to_hsv(x).unbind(dim=1)
    h = h.add_(_per_sample(factors).squeeze(1)).remainder_(1.0)
    return hsv_to_rgb(torch.stack((h, s, v), dim=1))


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``(N,) -> (N, k)``: ``softmax(-(t / σ_n)^2)``, ``t = linspace(-(k-1)/(2√2), (k-1)/(2√2), k)``.

    torchvision's 1-D Gaussian: ``t √2`` are the integer offsets ``d``, so this is ``exp(-d²/2σ²)`` normalised.
    """
    lim = (kernel_size - 1) / (2.0 * 2.0**0.5)
    t = torch.linspace(-lim, lim, steps=kernel_size, dtype=torch.float32, device=sigma.device)
    return torch.softmax(t.div(sigma.to(torch.float32).unsqueeze(1)).pow(2).neg(), dim=1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur sample ``n`` of ``(N, C, H, W)`` with a ``k × k`` Gaussian of σ ``sigma[n]``, reflect-padded by ``k // 2``.

    Separable (rows, then columns), as one grouped convolution over all ``N·C`` planes per direction: the same
    result as torchvision's 2-D ``gaussian_blur`` up to float rounding, then clamped to [0, 1].
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    n, c, height, width = x.shape
    half = kernel_size // 2
    weight = gaussian_kernels(sigma, kernel_size).repeat_interleave(c, dim=0)  # (N*C, k)
    planes = x.reshape(1, n * c, height, width)
    planes = F.conv2d(F.pad(planes, (half, half, 0, 0), mode="reflect"), weight.view(n * c, 1, 1, kernel_size),
                      groups=n * c)
    planes = F.conv2d(F.pad(planes, (0, 0, half, half), mode="reflect"), weight.view(n * c, 1, kernel_size, 1),
                      groups=n * c)
    return planes.reshape(n, c, height, width).clamp_(0.0, 1.0)


def solarize(x: torch.Tensor, threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    """``x >= threshold -> 1 - x`` (torchvision's ``solarize`` on float images; the default is the recipe's 128/255)."""
    return torch.where(x >= threshold, 1.0 - x, x)


def sample_params(batch: int, view: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Per-sample parameters of ``batch`` views, from one ``torch.rand(batch, 13)`` on ``device``'s global RNG.

    With the recipe of ``view`` (:func:`mmvicreg.data.recipe.view_recipe`): ``jitter`` (bool, p 0.8), ``order``
    (long ``(B, 4)``: the op id at each position, a uniform permutation), ``brightness``/``contrast`` ~
    U[0.6, 1.4], ``saturation`` ~ U[0.8, 1.2], ``hue`` ~ U[-0.1, 0.1], ``grayscale`` (bool, p 0.2), ``blur``
    (bool, p ``blur_p``), ``sigma`` ~ U[0.1, 2.0], ``solarize`` (bool, p ``solarize_p``). Every draw is made
    whether or not its op fires, so the RNG advances by the same amount on every call.
    """
    recipe = view_recipe(view)
    u = torch.rand(batch, 13, device=device)
    params = {"jitter": u[:, 0] < recipe.jitter_p, "order": u[:, 1:5].argsort(dim=1, stable=True)}
    ranges = recipe.factor_ranges()
    for column, name in enumerate(JITTER_OPS, start=5):
        low, high = ranges[name]
        params[name] = low + (high - low) * u[:, column]
    params["grayscale"] = u[:, 9] < recipe.grayscale_p
    params["blur"] = u[:, 10] < recipe.blur_p
    low, high = recipe.blur_sigma
    params["sigma"] = low + (high - low) * u[:, 11]
    params["solarize"] = u[:, 12] < recipe.solarize_p
    return params


def _apply_subset(x: torch.Tensor, rows: torch.Tensor, fn: Callable[..., torch.Tensor],
                  *factors: torch.Tensor) -> torch.Tensor:
    """``fn`` on the samples ``rows`` of ``x`` (written back in place), with those samples' ``factors``."""
    if rows.numel() == 0:
        return x
    if rows.numel() == x.shape[0]:  # rows are sorted and distinct: every sample, in order
        return fn(x, *factors)
    out = fn(x.index_select(0, rows), *(f.index_select(0, rows) for f in factors))
    return x.index_copy_(0, rows, out)


def apply_params(images: torch.Tensor, params: dict[str, torch.Tensor], kernel_size: int) -> torch.Tensor:
    """Apply :func:`sample_params`'s ``params`` to a float32 ``(B, 3, H, W)`` batch in [0, 1]; returns a new tensor.

    Jitter (its four ops in ``order``), then grayscale, blur (``kernel_size``), solarize, each on the samples whose
    flag is set. One host sync (the subset sizes) per call; no loop over samples.
    """
    masks = [params["jitter"] & (params["order"][:, pos] == op) for pos in range(4) for op in range(4)]
    masks += [params["grayscale"], params["blur"], params["solarize"]]
    stacked = torch.stack(masks)
    counts = stacked.sum(dim=1).tolist()  # the one host sync
    # a stable sort puts each mask's True rows first, in increasing order: row r's subset is rows[r, :counts[r]]
    rows = torch.argsort((~stacked).to(torch.int32), dim=1, stable=True)
    subsets = [rows[r, :count] for r, count in enumerate(counts)]
    jitter_fns = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    x = images.clone()
    for pos in range(4):
        for op, name in enumerate(JITTER_OPS):
            x = _apply_subset(x, subsets[4 * pos + op], jitter_fns[op], params[name])
    x = _apply_subset(x, subsets[16], grayscale)
    x = _apply_subset(x, subsets[17], lambda s, sig: gaussian_blur(s, sig, kernel_size), params["sigma"])
    return _apply_subset(x, subsets[18], solarize)


class DeviceViewAugment(torch.nn.Module):
    """VICReg view ``view``'s colour augmentations (jitter, grayscale, blur, solarize) on a batch, per sample.

    ``forward(images)``: float32 ``(B, 3, H, W)`` in [0, 1] (or uint8, read as ``x / 255``) on any device ->
    float32 ``(B, 3, H, W)`` in [0, 1] on the same device; with ``return_params=True`` also the per-sample
    parameters of :func:`sample_params`. The blur kernel is ``blur_kernel_size(size)`` (23 at 224), as the CPU recipe's.
    """

    def __init__(self, view: int, size: int = 224) -> None:
        super().__init__()
        recipe = view_recipe(view)  # raises on anything but 1 or 2
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.view = view
        self.size = size
        self.kernel_size = blur_kernel_size(size)
        self.blur_p, self.solarize_p = recipe.blur_p, recipe.solarize_p

    def extra_repr(self) -> str:
        return f"view={self.view}, size={self.size}, kernel_size={self.kernel_size}"

    def _check(self, images: object) -> None:
        half = self.kernel_size // 2
        ok = (isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3
              and images.dtype in (torch.float32, torch.uint8) and min(images.shape[2:]) > half)
        if not ok:
            got = (f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                   else type(images).__name__)
            raise ValueError(
                f"expected images of shape (B, 3, H, W) with H, W > {half} (the blur's reflect padding at "
                f"kernel {self.kernel_size}), dtype float32 in [0, 1] or uint8; got {got}"
            )

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor, return_params: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Augment ``images``; draws from the global RNG of ``images.device`` (seeded runs repeat). Always in
        float32: under a training step's bf16/fp16 autocast the blur's convolution would otherwise drop to half
        precision."""
        self._check(images)
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images
        params = sample_params(x.shape[0], self.view, x.device)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = apply_params(x, params, self.kernel_size)
        return (out, params) if return_params else out
