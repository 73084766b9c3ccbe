"""Quality metrics for the rate-distortion benchmark: images (PSNR, MS-SSIM) and audio
(SNR, SI-SDR, log-mel distance).

Inputs may be ``torch.Tensor`` or ``numpy.ndarray``.

Images
    * ``uint8`` arrays are divided by 255 first, so every image metric works on the
      [0, 1] scale (``data_range=1.0``); float arrays are taken as already in [0, 1].
    * Layout: 2-D ``(H, W)`` is grayscale; a 3-D array whose first dimension is 1, 3 or 4
      is ``(C, H, W)``, otherwise one whose last dimension is 1, 3 or 4 is ``(H, W, C)``;
      a 4-D array is a batch ``(N, C, H, W)`` and the metric is the mean over the batch.

Audio
    ``(T,)`` or ``(C, T)`` float waveforms in [-1, 1]; the metrics are computed per channel
    and averaged over channels (both signals must have the same shape).

>>> import numpy as np
>>> x = np.zeros((8, 8, 3), np.uint8); y = x.copy(); y[0, 0, 0] = 255
>>> round(psnr(x, y), 2)
22.83
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = Union[np.ndarray, torch.Tensor]

# MS-SSIM constants of Wang, Simoncelli & Bovik (2003), as in CompressAI's evaluation
# (pytorch_msssim): 11-tap Gaussian window, sigma 1.5, five scales.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN_SIZE = 11
_WIN_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        # torch warns on read-only arrays (e.g. np.asarray of a PIL image); copy those.
        return torch.from_numpy(x if x.flags.writeable else x.copy())
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(x).__name__}")


def _image_nchw(x: ArrayLike, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Any accepted image layout -> (N, C, H, W) of ``dtype`` on the [0, 1] scale."""
    t = _as_tensor(x)
    is_uint8 = t.dtype == torch.uint8
    t = t.to(dtype)
    if is_uint8:
        t = t / 255.0
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        if t.shape[0] in (1, 3, 4):
            t = t[None]
        elif t.shape[-1] in (1, 3, 4):
            t = t.permute(2, 0, 1)[None]
        else:
            raise ValueError(f"cannot tell the channel axis of an image of shape {tuple(t.shape)}")
    elif t.ndim != 4:
        raise ValueError(f"expected an image (H,W), (C,H,W), (H,W,C) or (N,C,H,W), got {tuple(t.shape)}")
    return t


def _pair(
    x: ArrayLike, y: ArrayLike, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _image_nchw(x, dtype), _image_nchw(y, dtype)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b


def psnr(x: ArrayLike, y: ArrayLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels (``psnr-rgb``).

    Identical images give ``math.inf`` (no cap), so a lossless result is visible as such.
    For a batch, the PSNR of each item is computed and averaged (CompressAI's convention).

    >>> import numpy as np
    >>> a = np.full((4, 4), 0.5); psnr(a, a)
    inf
    >>> round(psnr(a, a + 0.1), 1)
    20.0
    """
    a, b = _pair(x, y)
    mse = ((a - b) ** 2).flatten(1).mean(1)
    values = [math.inf if m == 0 else 10.0 * math.log10(data_range**2 / float(m)) for m in mse]
    return float(np.mean(values))


@lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).to(torch.float32)


def _ssim_maps(a: torch.Tensor, b: torch.Tensor, win: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per (N, C), 'valid' Gaussian filtering."""
    c = a.shape[1]
    k = win.numel()
    wh = win.view(1, 1, 1, k).repeat(c, 1, 1, 1)
    wv = win.view(1, 1, k, 1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wh, groups=c), wv, groups=c)

    c1, c2 = _K1**2, _K2**2  # data_range is 1 on our scale
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    ssim = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs
    return ssim.flatten(2).mean(-1), cs.flatten(2).mean(-1)


def ms_ssim_scales(height: int, width: int) -> tuple[int, int]:
    """(number of scales, window size) that :func:`ms_ssim` uses for an image of this size.

    The standard definition needs the image to stay at least as large as the 11-tap window
    after four 2x down-samplings (smaller side >= 161). Smaller images use as many scales as
    fit (the weights of the scales used are renormalised to sum to 1); an image smaller than
    11 pixels uses one scale with the largest odd window that fits.

    >>> ms_ssim_scales(512, 768), ms_ssim_scales(40, 48), ms_ssim_scales(7, 9)
    ((5, 11), (2, 11), (1, 7))
    """
    side = min(height, width)
    if side < 1:
        raise ValueError("empty image")
    if side < _WIN_SIZE:
        return 1, side if side % 2 == 1 else side - 1
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side // (2**scales) >= _WIN_SIZE:
        scales += 1
    return scales, _WIN_SIZE


def ms_ssim(x: ArrayLike, y: ArrayLike) -> float:
    """Multi-scale SSIM (Wang et al. 2003) on the [0, 1] scale; 1.0 for identical images.

    The standard five-scale definition (11-tap Gaussian window, sigma 1.5, K1=0.01,
    K2=0.03, 2x2 average pooling between scales, negative contrast terms clamped at 0 as
    in pytorch_msssim). Images too small for five scales use fewer, see
    :func:`ms_ssim_scales`; they never crash. Colour channels are scored separately and
    averaged. A batch gives the mean over the batch.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    >>> ms_ssim(a, a)
    1.0
    """
    # float32 filtering: 3x faster than float64 and within 1e-6 of it on 8-bit images.
    a, b = _pair(x, y, torch.float32)
    scales, win_size = ms_ssim_scales(a.shape[-2], a.shape[-1])
    win = _gaussian_window(win_size, _WIN_SIGMA)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float32)
    weights = weights / weights.sum()
    terms = []
    for level in range(scales):
        ssim, cs = _ssim_maps(a, b, win)
        if level < scales - 1:
            terms.append(torch.relu(cs))
            a = F.avg_pool2d(a, 2, ceil_mode=False)
            b = F.avg_pool2d(b, 2, ceil_mode=False)
    terms.append(torch.relu(ssim))
    stacked = torch.stack(terms, dim=0)  # (scales, N, C)
    value = torch.prod(stacked.double() ** weights.double().view(-1, 1, 1), dim=0)  # (N, C)
    return float(value.mean(1).mean(0))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, ``-10 log10(1 - ms_ssim)``, as CompressAI's plots use it.

    >>> round(ms_ssim_db(0.99), 6)
    20.0
    """
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


# --------------------------------------------------------------------------- audio
def _audio_pair(ref: ArrayLike, est: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    r = _as_tensor(ref).to(torch.float64)
    e = _as_tensor(est).to(torch.float64)
    if r.shape != e.shape:
        raise ValueError(f"signals differ in shape: {tuple(r.shape)} vs {tuple(e.shape)}")
    if r.ndim == 1:
        r, e = r[None], e[None]
    if r.ndim != 2:
        raise ValueError(f"expected audio (T,) or (C, T), got {tuple(r.shape)}")
    return r, e


def _db_ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    values = []
    for n, d in zip(num.tolist(), den.tolist()):
        if d == 0:
            values.append(math.inf)
        elif n == 0:
            values.append(-math.inf)
        else:
            values.append(10.0 * math.log10(n / d))
    return float(np.mean(values))


def snr(ref: ArrayLike, est: ArrayLike) -> float:
    """Signal-to-noise ratio in dB, ``10 log10(|ref|^2 / |ref - est|^2)``, mean over channels.

    >>> import numpy as np
    >>> t = np.sin(np.linspace(0, 100, 4000))
    >>> round(snr(t, 0.9 * t), 1)
    20.0
    """
    r, e = _audio_pair(ref, est)
    return _db_ratio((r**2).sum(-1), ((r - e) ** 2).sum(-1))


def si_sdr(ref: ArrayLike, est: ArrayLike) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), mean over channels.

    Both signals are made zero-mean; the reference is scaled by the projection of the
    estimate on it, ``a = <est, ref> / |ref|^2``, and the ratio ``|a ref|^2 / |est - a ref|^2``
    is taken. Scaling the estimate by any non-zero factor leaves the value unchanged.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0); t = rng.standard_normal(1000); n = 0.1 * rng.standard_normal(1000)
    >>> abs(si_sdr(t, t + n) - si_sdr(t, 3 * (t + n))) < 1e-9
    True
    """
    r, e = _audio_pair(ref, est)
    r = r - r.mean(-1, keepdim=True)
    e = e - e.mean(-1, keepdim=True)
    energy = (r**2).sum(-1, keepdim=True)
    alpha = (e * r).sum(-1, keepdim=True) / torch.where(energy == 0, torch.ones_like(energy), energy)
    target = alpha * r
    return _db_ratio((target**2).sum(-1), ((e - target) ** 2).sum(-1))


# The log-mel distance's settings; fixed so numbers from different runs compare.
MEL_N_FFT = 2048
MEL_HOP = 512
MEL_N_MELS = 80
MEL_FLOOR = 1e-5


@lru_cache(maxsize=4)
def _mel_transform(sample_rate: int):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=MEL_N_FFT,
        hop_length=MEL_HOP,
        n_mels=MEL_N_MELS,
        power=1.0,  # magnitude, as in the mel losses of HiFi-GAN / EnCodec / DAC
        center=True,
    ).to(torch.float64)


def mel_distance(ref: ArrayLike, est: ArrayLike, sample_rate: int) -> float:
    """Log-mel spectrogram L1 distance (lower is better), mean over channels, frames and bands.

    torchaudio ``MelSpectrogram(n_fft=2048, hop_length=512, n_mels=80, power=1)`` magnitude
    mel spectrogram; the distance is ``mean |log10(max(M_ref, 1e-5)) - log10(max(M_est, 1e-5))|``.

    >>> import numpy as np
    >>> t = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32)
    >>> mel_distance(t, t, 16000)
    0.0
    """
    r, e = _audio_pair(ref, est)
    mel = _mel_transform(int(sample_rate))
    with torch.no_grad():
        lr = torch.log10(mel(r).clamp_min(MEL_FLOOR))
        le = torch.log10(mel(e).clamp_min(MEL_FLOOR))
    return float((lr - le).abs().mean())


__all__ = ["psnr", "ms_ssim", "ms_ssim_db", "ms_ssim_scales", "snr", "si_sdr", "mel_distance"]
