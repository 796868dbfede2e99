"""The image parameterisation and robustness transforms of feature visualisation, as Lucid /
lucent define them and IMI used them (`param.image(256, batch=n)`): each image is a Fourier
spectrum scaled by 1/frequency, turned into pixels by an inverse FFT, its colours decorrelated
and squashed into [0, 1] by a sigmoid. Written here (about 100 lines) rather than imported: see
`visualize.py` for why no library fits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Lucid's square root of the ImageNet colour covariance (its `color_correlation_svd_sqrt`),
# normalised so that its largest column has norm 1: optimising in this basis decorrelates colours.
_COLOUR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR_BASIS = _COLOUR_SQRT / np.linalg.norm(_COLOUR_SQRT, axis=0).max()
INIT_SD = 0.01  # Lucid's initial spectrum scale
SPATIAL_SCALE = 4.0  # Lucid's "magic" divisor of the spatial image: less saturation
IMI_SIZE = 224  # transforms are given in pixels of IMI's 224 px images, scaled to other sizes


def spectrum_shape(size: int) -> tuple[int, ...]:
    """Shape of one image's parameters: (3 colours, rfft2 frequencies, real/imaginary)."""
    return (3, size, size // 2 + 1, 2)


def init_spectra(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """n random spectra (a Lucid image at initialisation: faint noise around grey)."""
    return torch.randn((n, *spectrum_shape(size)), generator=generator) * INIT_SD


def _frequency_scale(size: int, device) -> torch.Tensor:
    """1/f: each frequency's amplitude per unit of parameter (decay power 1, as Lucid)."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    scale = 1.0 / np.maximum(np.sqrt(fx * fx + fy * fy), 1.0 / size)
    return torch.tensor(scale, dtype=torch.float32, device=device)


def spectra_to_images(spectra: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S//2+1, 2) spectra -> (N, 3, S, S) RGB images in [0, 1]."""
    size = spectra.shape[2]
    complex_spectra = torch.view_as_complex(spectra) * _frequency_scale(size, spectra.device)
    image = torch.fft.irfft2(complex_spectra, s=(size, size), norm="ortho") / SPATIAL_SCALE
    basis = torch.tensor(COLOUR_BASIS, dtype=image.dtype, device=image.device)
    image = torch.einsum("nchw,dc->ndhw", image, basis)
    return torch.sigmoid(image)


def scaled_pixels(pixels: int, size: int) -> int:
    """A length given in pixels of a 224 px image, at `size` px."""
    return int(round(pixels * size / IMI_SIZE))


def random_transform(rng: np.random.Generator, size: int, jitter: tuple[int, ...],
                     scales: tuple[float, ...], angles: tuple[float, ...]) -> torch.Tensor:
    """One draw of IMI's robustness transforms - jitter, random scale, random rotation, jitter
    - as a single affine map (2, 3) in the normalised coordinates of `F.affine_grid`: one
    resampling instead of four. A jitter of d px shifts by an integer in [-d/2, d/2) (Lucid's
    crop jitter, centred); scale and rotation are about the image centre. The same draw is
    applied to every image of a step, as in lucent."""
    def shift(d):
        d = max(scaled_pixels(d, size), 1)
        dx, dy = (rng.integers(d, size=2) - d // 2) * 2.0 / size  # pixels -> [-1, 1] units
        return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]])

    first, second = (shift(d) for d in jitter)
    s = float(rng.choice(scales))
    a = np.deg2rad(float(rng.choice(angles)))
    rotate_scale = np.array([[s * np.cos(a), -s * np.sin(a), 0],
                             [s * np.sin(a), s * np.cos(a), 0], [0, 0, 1]])
    forward = second @ rotate_scale @ first
    # affine_grid maps output positions to where they are sampled from: the inverse map.
    return torch.tensor(np.linalg.inv(forward)[:2], dtype=torch.float32)


def apply_transform(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample (N, 3, S, S) images through an affine map; uncovered pixels are black (0), as
    lucent's translate, scale and rotate leave them."""
    n = images.shape[0]
    grid = F.affine_grid(theta.to(images.device)[None], [1, *images.shape[1:]],
                         align_corners=False)
    return F.grid_sample(images, grid.expand(n, -1, -1, -1), mode="bilinear",
                         padding_mode="zeros", align_corners=False)
