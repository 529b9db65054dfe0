"""Compiled inner loops (numba): the SSIM sums, fused into one pass over the image.

Where it sits: ``metrics._Scale.compare`` calls :func:`ssim_sums` once per colour
plane and scale. Nothing else in the package imports numba, and this module is
imported only by a process that computes metrics, so ``--help``, the reports and
the history never pay for it.

Why compiled: SSIM needs three Gaussian-blurred products of the image (y, y^2,
x*y) and a dozen arithmetic passes over them. With OpenCV each pass goes through
memory; here each row is blurred horizontally into a ring of 11 rows, the ring is
blurred vertically, and the SSIM and contrast-structure terms are summed while
the values are still in registers. At 1024 x 1024 x 3 this takes 14.7 ms against
32.7 ms for the OpenCV strips it replaced (one core, 2-core development VM).

The machine code is cached on disk, so it is compiled once per machine and
pixel type, never in each worker or each cron run: in ``NUMBA_CACHE_DIR`` when
that is set, else in ``<reporter cache>/numba`` (``REPORTER_CACHE``, else
``$XDG_CACHE_HOME/reporter``, else ``~/.cache/reporter``). Where no cache folder
can be written, each process compiles (about 4 s per pixel type) and one warning
says so. Even from the cache, the first kernel a process calls costs about 0.45 s
(numba's import and its type system): the workers' fork server pays it once for
all its workers (:func:`warm`).
"""

from __future__ import annotations

import logging
import warnings

import numba
import numpy as np

from .embedding import cache_folder

__all__ = ["block_means", "halve", "ssim_sums", "warm"]

log = logging.getLogger(__name__)

if not numba.config.CACHE_DIR:
    numba.config.CACHE_DIR = str(cache_folder() / "numba")

_OPTIONS = {
    "nogil": True,  # Dask workers run tasks in threads
    # No ZeroDivisionError checks: they would stop the loops from vectorising (the
    # denominators hold C1 and C2 and are never 0).
    "error_model": "numpy",
    # Reassociation lets the row sums vectorise; no NaN/Inf assumptions are made.
    "fastmath": {"reassoc", "contract", "arcp", "nsz"},
}


_UNCACHED: list[str] = []  # the kernels compiled without a cache


def _compiled(func):
    try:
        return numba.njit(cache=True, **_OPTIONS)(func)
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        if not _UNCACHED:
            _UNCACHED.append(func.__name__)
            log.warning(
                "no writable cache folder for compiled code (%s): each process compiles "
                "it again (about 4 s); set REPORTER_CACHE or NUMBA_CACHE_DIR to a writable "
                "folder",
                exc,
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return numba.njit(cache=False, **_OPTIONS)(func)


@_compiled
def _ssim_sums(x, y, mx2, mx_sq_c1, sxx_c2, w, c1, c2, g):  # pragma: no cover - compiled
    rows, width = y.shape
    n = width - 10  # the valid (cropped) columns
    ft = mx2.dtype
    g0, g1, g2, g3, g4, g5 = g[0], g[1], g[2], g[3], g[4], g[5]
    ry = np.empty(width, ft)
    ryy = np.empty(width, ft)
    rxy = np.empty(width, ft)
    hy = np.empty((11, n), ft)  # ring of horizontally blurred rows
    hyy = np.empty((11, n), ft)
    hxy = np.empty((11, n), ft)
    weighted = w.shape[0] > 0
    total_s = 0.0
    total_cs = 0.0
    for r in range(rows):
        yr = y[r]
        xr = x[r]
        for j in range(width):
            ry[j] = yr[j]
            ryy[j] = ry[j] * ry[j]
            rxy[j] = ry[j] * xr[j]
        slot = r % 11
        oy, oyy, oxy = hy[slot], hyy[slot], hxy[slot]
        for j in range(n):  # one loop for the three rows: each tap is loaded once
            oy[j] = (
                g0 * (ry[j] + ry[j + 10])
                + g1 * (ry[j + 1] + ry[j + 9])
                + g2 * (ry[j + 2] + ry[j + 8])
                + g3 * (ry[j + 3] + ry[j + 7])
                + g4 * (ry[j + 4] + ry[j + 6])
                + g5 * ry[j + 5]
            )
            oyy[j] = (
                g0 * (ryy[j] + ryy[j + 10])
                + g1 * (ryy[j + 1] + ryy[j + 9])
                + g2 * (ryy[j + 2] + ryy[j + 8])
                + g3 * (ryy[j + 3] + ryy[j + 7])
                + g4 * (ryy[j + 4] + ryy[j + 6])
                + g5 * ryy[j + 5]
            )
            oxy[j] = (
                g0 * (rxy[j] + rxy[j + 10])
                + g1 * (rxy[j + 1] + rxy[j + 9])
                + g2 * (rxy[j + 2] + rxy[j + 8])
                + g3 * (rxy[j + 3] + rxy[j + 7])
                + g4 * (rxy[j + 4] + rxy[j + 6])
                + g5 * rxy[j + 5]
            )
        if r < 10:
            continue
        o = r - 10  # the output row: the window of input rows o .. o + 10
        s0, s1, s2, s3, s4, s5 = (
            o % 11,
            (o + 1) % 11,
            (o + 2) % 11,
            (o + 3) % 11,
            (o + 4) % 11,
            (o + 5) % 11,
        )
        s6, s7, s8, s9, s10 = (o + 6) % 11, (o + 7) % 11, (o + 8) % 11, (o + 9) % 11, (o + 10) % 11
        a0, a1, a2, a3, a4, a5 = hy[s0], hy[s1], hy[s2], hy[s3], hy[s4], hy[s5]
        a6, a7, a8, a9, a10 = hy[s6], hy[s7], hy[s8], hy[s9], hy[s10]
        b0, b1, b2, b3, b4, b5 = hyy[s0], hyy[s1], hyy[s2], hyy[s3], hyy[s4], hyy[s5]
        b6, b7, b8, b9, b10 = hyy[s6], hyy[s7], hyy[s8], hyy[s9], hyy[s10]
        d0, d1, d2, d3, d4, d5 = hxy[s0], hxy[s1], hxy[s2], hxy[s3], hxy[s4], hxy[s5]
        d6, d7, d8, d9, d10 = hxy[s6], hxy[s7], hxy[s8], hxy[s9], hxy[s10]
        m2 = mx2[o]
        mq = mx_sq_c1[o]
        sx = sxx_c2[o]
        wr = w[o] if weighted else m2
        row_s = c1 * 0
        row_cs = c1 * 0
        for j in range(n):
            my = (
                g0 * (a0[j] + a10[j])
                + g1 * (a1[j] + a9[j])
                + g2 * (a2[j] + a8[j])
                + g3 * (a3[j] + a7[j])
                + g4 * (a4[j] + a6[j])
                + g5 * a5[j]
            )
            eyy = (
                g0 * (b0[j] + b10[j])
                + g1 * (b1[j] + b9[j])
                + g2 * (b2[j] + b8[j])
                + g3 * (b3[j] + b7[j])
                + g4 * (b4[j] + b6[j])
                + g5 * b5[j]
            )
            exy = (
                g0 * (d0[j] + d10[j])
                + g1 * (d1[j] + d9[j])
                + g2 * (d2[j] + d8[j])
                + g3 * (d3[j] + d7[j])
                + g4 * (d4[j] + d6[j])
                + g5 * d5[j]
            )
            mxmy2 = m2[j] * my  # 2 mx my
            my_sq = my * my
            num2 = exy + exy - mxmy2 + c2  # 2 sxy + C2
            den2 = eyy - my_sq + sx[j]  # sxx + syy + C2
            den1 = my_sq + mq[j]  # mx^2 + my^2 + C1
            r = 1 / (den1 * den2)  # one division for both terms, not two
            cs = num2 * den1 * r
            s = (mxmy2 + c1) * num2 * r
            if weighted:
                row_s += s * wr[j]
                row_cs += cs * wr[j]
            else:
                row_s += s
                row_cs += cs
        total_s += row_s
        total_cs += row_cs
    return total_s, total_cs


def ssim_sums(x, y, mx2, mx_sq_c1, sxx_c2, w, c1, c2, taps):
    """Sums of the SSIM map and of the contrast-structure map of one plane.

    ``x``, ``y``: the baseline's and the image's plane (H x W, any pixel type).
    ``mx2``, ``mx_sq_c1``, ``sxx_c2``: the baseline's 2 mu_x, mu_x^2 + C1 and
    sigma_x^2 + C2 over the valid region ((H - 10) x (W - 10), float32 or float64:
    the type every sum is taken in). ``w``: weights of the valid region, or None.
    ``taps``: the first six taps of the symmetric 11-tap Gaussian. The maps are
    those of ``metrics.ssim_map`` restricted to pixels whose window lies inside.
    """
    ft = mx2.dtype.type
    if w is None:
        w = np.empty((0, 0), mx2.dtype)
    return _ssim_sums(
        np.ascontiguousarray(x),
        np.ascontiguousarray(y),
        mx2,
        mx_sq_c1,
        sxx_c2,
        np.ascontiguousarray(w, dtype=mx2.dtype),
        ft(c1),
        ft(c2),
        np.asarray(taps[:6], dtype=mx2.dtype),  # as given: the baseline's blur used them
    )


@_compiled
def _halve(src, out):  # pragma: no cover - compiled
    rows, cols = src.shape
    for i in range(out.shape[0]):
        r0 = 2 * i
        r1 = min(r0 + 1, rows - 1)  # an odd last row is reflected (repeated)
        top = src[r0]
        bottom = src[r1]
        row = out[i]
        for j in range(out.shape[1]):
            c0 = 2 * j
            c1 = min(c0 + 1, cols - 1)
            row[j] = (top[c0] + top[c1] + bottom[c0] + bottom[c1]) * 0.25


def halve(plane: np.ndarray, dtype: type) -> np.ndarray:
    """msssim.m's downsampling of one plane: 2 x 2 means ('symmetric' border: an odd
    last row or column is repeated), every other pixel, as ``dtype``."""
    out = np.empty(((plane.shape[0] + 1) // 2, (plane.shape[1] + 1) // 2), dtype)
    _halve(np.ascontiguousarray(plane), out)
    return out


@_compiled
def _block_means(src, rows, cols, f, out):  # pragma: no cover - compiled
    scale = 1.0 / (f * f)
    line = np.empty(cols.shape[0], np.float64)  # the sum of f rows, columns reflected
    for i in range(out.shape[0]):
        line[:] = 0.0
        for t in range(f):
            r = src[rows[i * f + t]]
            for j in range(cols.shape[0]):
                line[j] += r[cols[j]]
        for j in range(out.shape[1]):
            total = 0.0
            for u in range(f):
                total += line[j * f + u]
            out[i, j] = total * scale


def _reflected(n: int, f: int) -> np.ndarray:
    """Source indices of f samples per output: i*f - anchor + t, reflected at the
    borders like OpenCV's BORDER_REFLECT (fedcba|abcdef|fedcba)."""
    idx = np.arange(-(-n // f) * f) - (f - 1) // 2
    idx = np.where(idx < 0, -idx - 1, idx)
    return np.where(idx >= n, 2 * n - idx - 1, idx)


def block_means(plane: np.ndarray, f: int, dtype: type) -> np.ndarray:
    """ssim.m's downsampling of one plane: ``imfilter(img, ones(f)/f^2, 'symmetric')``,
    then every f-th pixel. Sample i averages rows i*f - anchor .. i*f - anchor + f - 1
    (MATLAB centres an even kernel before its middle, anchor = (f - 1) // 2),
    reflected at the borders."""
    h, w = plane.shape
    out = np.empty((-(-h // f), -(-w // f)), dtype)
    _block_means(np.ascontiguousarray(plane), _reflected(h, f), _reflected(w, f), f, out)
    return out


def warm(dtype: str = "uint8") -> None:
    """Load (or compile, the first time on this machine) every kernel signature a run of
    ``dtype`` pixels uses: full-resolution planes, float levels, and mask weights.

    The workers' fork server calls it, so that every worker it forks starts with the
    machine code in memory instead of each one loading or compiling it. It runs no
    OpenCV code: a fork server that had started OpenCV's thread pool would hand its
    workers a pool they deadlock on.
    """
    pixels = np.dtype(dtype)
    ft = np.float64 if pixels == np.uint16 else np.float32
    taps = np.full(6, 0.1, ft)
    for plane in (np.ones((16, 16), pixels), np.ones((16, 16), ft)):
        stats = np.ones((6, 6), ft)
        for w in (None, stats):
            ssim_sums(plane, plane, stats, stats, stats, w, 1.0, 1.0, taps)
        halve(plane, ft)
        block_means(plane, 2, ft)
    weights = np.ones((16, 16), np.float32)  # the share of valid pixels, at every level
    halve(weights, np.float32)
    block_means(weights, 2, np.float32)
