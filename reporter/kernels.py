"""Compiled inner loops (numba): the SSIM sums, fused into one pass over the image.

Where it sits: ``metrics._Scale.compare`` calls :func:`ssim_sums` once per colour
plane and scale; ``metrics._Scale`` computes the baseline's side with
:func:`ssim_stats`, by the same steps; ``signal.ink_cells`` sums the sparse-image
metrics' ink per grid cell with :func:`ink_cells`; ``psnr_local`` sums squared
differences per cell with :func:`diff_cells`; ``align.Aligner`` takes the shift's
normalised cross-power spectrum from :func:`cross_power`. Nothing else in the package
imports numba, and this module is imported only by a process that computes metrics,
so ``--help``, the reports and the history never pay for it.

Why compiled: SSIM needs three Gaussian-blurred products of the image (y, y^2,
x*y) and a dozen arithmetic passes over them. With OpenCV each pass goes through
memory; here each row is blurred horizontally into a ring of 14 rows, four output
rows at a time are blurred vertically from the ring (each ring row is read once for
all four: the ring lives in the L2 cache, and reading it was the bottleneck), and the
SSIM and contrast-structure terms of a row are summed while it is in the L1 cache.
Each step is its own short loop, so that it vectorises in eight float32 lanes
without running out of registers, and is given whole arrays and a row number, never
a view of a row (a new array structure each time, its reference count taken and
dropped: with the four-row blur, a 16384 x 64 plane, all rows, takes 8.5 ms against
11.6). The terms are added to each column's sums, in
float32 over blocks of 16 rows, then in float64: elementwise, in the order the code
gives. No sum is left for the compiler to reorder: when numba was allowed to
(fastmath's reassociation), the code it compiled and the same code loaded from its
cache summed in different orders, and SSIM differed in the ninth digit between a
run that compiled and every later run (an AVX-512 machine).
A plane of 1024 x 1024 takes about 4.2 ms (4.8 with two output rows at a time and
views of rows, the fifteenth round's form; 32.7 ms for the three planes with the
OpenCV strips it replaced, one core, 2-core development VM).

The machine code is cached on disk, so it is compiled once per machine and
pixel type, never in each worker or each cron run: in ``NUMBA_CACHE_DIR`` when
that is set, else in ``<reporter cache>/numba`` (``REPORTER_CACHE``, else
``$XDG_CACHE_HOME/reporter``, else ``~/.cache/reporter``). Where no cache folder
can be written, each process compiles (about 20 s per pixel type) and one warning
says so. Even from the cache, the first kernel a process calls costs about 0.45 s
(numba's import and its type system; without :func:`_numpy_support_without_scipy`,
0.2 s more): the workers' fork server pays it once for all its workers (:func:`warm`).
"""

from __future__ import annotations

import logging
import sys
import warnings
from functools import partial

import numba
import numpy as np

from .embedding import cache_folder

__all__ = [
    "block_means",
    "cross_power",
    "diff_cells",
    "halve",
    "ink_cells",
    "ssim_stats",
    "ssim_sums",
    "warm",
]

log = logging.getLogger(__name__)

if not numba.config.CACHE_DIR:
    numba.config.CACHE_DIR = str(cache_folder() / "numba")


def _numpy_support_without_scipy() -> None:
    """Import numba's NumPy support (``numba.np.arraymath``) without SciPy's linear algebra.

    Numba imports that module on the first call of any kernel, and the module imports
    ``scipy.linalg.cython_blas`` (all of ``scipy.linalg``: 170-220 ms on the
    benchmark's VM, a fifth of the fork server's start) only to see whether its
    ``np.correlate`` and ``np.convolve`` may call BLAS. No kernel here uses either, so
    the module is imported now with that name blocked: it then uses its own loop for
    them in this process. The name is unblocked at once, so that an ``import
    scipy.linalg`` later (scikit-learn's) works as ever. Nothing is done when SciPy's
    BLAS or the module is already imported.
    """
    blas = "scipy.linalg.cython_blas"
    if blas in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    sys.modules[blas] = None  # an import of it now fails at once, importing nothing
    try:
        import numba.np.arraymath  # noqa: F401
    except ImportError:  # another numba: its first kernel call imports what it needs
        pass
    finally:
        if blas in sys.modules and sys.modules[blas] is None:
            del sys.modules[blas]


_numpy_support_without_scipy()

_OPTIONS = {
    "nogil": True,  # Dask workers run tasks in threads
    # No ZeroDivisionError checks: they would stop the loops from vectorising (the
    # denominators hold C1 and C2 and are never 0).
    "error_model": "numpy",
    # No reassociation: with it, LLVM chose the order of the sums, and chose differently
    # when compiling than in the code it cached (SSIM differed in the ninth digit between
    # the run that compiled and every later run, on an AVX-512 machine). No NaN/Inf
    # assumptions are made.
    "fastmath": {"contract", "arcp", "nsz"},
}


_UNCACHED: list[str] = []  # the kernels compiled without a cache


def _compiled(func, **options):
    options = {**_OPTIONS, **options}
    try:
        return numba.njit(cache=True, **options)(func)
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        if not _UNCACHED:
            _UNCACHED.append(func.__name__)
            log.warning(
                "no writable cache folder for compiled code (%s): each process compiles "
                "it again (about 20 s); set REPORTER_CACHE or NUMBA_CACHE_DIR to a writable "
                "folder",
                exc,
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return numba.njit(cache=False, **options)(func)


RING = 14  # rows of horizontally blurred data kept: 11 for a window, 3 more for 4 outputs
GROUP = 4  # output rows blurred vertically together (each ring row read once for all)


@partial(_compiled, inline="always")
def _window(
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, g0, g1, g2, g3, g4, g5
):  # pragma: no cover
    """The 11-tap symmetric blur of a0 .. a10: each pair of mirrored values added, then
    weighed (six products, not eleven)."""
    return (
        g0 * (a0 + a10)
        + g1 * (a1 + a9)
        + g2 * (a2 + a8)
        + g3 * (a3 + a7)
        + g4 * (a4 + a6)
        + g5 * a5
    )


@_compiled
def _hblur(src, out, s, n, g0, g1, g2, g3, g4, g5):  # pragma: no cover - compiled
    """The 11-tap symmetric blur of one row, valid part only, into row ``s`` of ``out``:
    out[s, j] blurs src[j..j+10]."""
    for j in range(n):
        v0, v1, v2, v3, v4, v5 = src[j], src[j + 1], src[j + 2], src[j + 3], src[j + 4], src[j + 5]
        v6, v7, v8, v9, v10 = src[j + 6], src[j + 7], src[j + 8], src[j + 9], src[j + 10]
        out[s, j] = _window(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, g0, g1, g2, g3, g4, g5)


@_compiled
def _vblur(ring, o, out, q, n, g0, g1, g2, g3, g4, g5):  # pragma: no cover - compiled
    """The vertical blur of ring rows o .. o + 10 (modulo RING) into row ``q`` of ``out``."""
    i0, i1, i2, i3 = o % RING, (o + 1) % RING, (o + 2) % RING, (o + 3) % RING
    i4, i5, i6, i7 = (o + 4) % RING, (o + 5) % RING, (o + 6) % RING, (o + 7) % RING
    i8, i9, i10 = (o + 8) % RING, (o + 9) % RING, (o + 10) % RING
    for j in range(n):
        v0, v1, v2, v3, v4 = ring[i0, j], ring[i1, j], ring[i2, j], ring[i3, j], ring[i4, j]
        v5, v6, v7, v8, v9 = ring[i5, j], ring[i6, j], ring[i7, j], ring[i8, j], ring[i9, j]
        v10 = ring[i10, j]
        out[q, j] = _window(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, g0, g1, g2, g3, g4, g5)


@_compiled
def _vblur4(ring, o, out, q, step, n, g0, g1, g2, g3, g4, g5):  # pragma: no cover - compiled
    """Four output rows (o .. o + 3) from ring rows o .. o + 13, into rows q, q + step,
    q + 2 step and q + 3 step of ``out``: each ring row is read once for all four, which
    divides the traffic from the L2 cache the ring lives in by 1.7 against two at a time."""
    i0, i1, i2, i3 = o % RING, (o + 1) % RING, (o + 2) % RING, (o + 3) % RING
    i4, i5, i6, i7 = (o + 4) % RING, (o + 5) % RING, (o + 6) % RING, (o + 7) % RING
    i8, i9, i10, i11 = (o + 8) % RING, (o + 9) % RING, (o + 10) % RING, (o + 11) % RING
    i12, i13 = (o + 12) % RING, (o + 13) % RING
    q1, q2, q3 = q + step, q + 2 * step, q + 3 * step
    for j in range(n):
        v0, v1, v2, v3, v4 = ring[i0, j], ring[i1, j], ring[i2, j], ring[i3, j], ring[i4, j]
        v5, v6, v7, v8, v9 = ring[i5, j], ring[i6, j], ring[i7, j], ring[i8, j], ring[i9, j]
        v10, v11, v12, v13 = ring[i10, j], ring[i11, j], ring[i12, j], ring[i13, j]
        out[q, j] = _window(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, g0, g1, g2, g3, g4, g5)
        out[q1, j] = _window(v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, g0, g1, g2, g3, g4, g5)
        out[q2, j] = _window(v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, g0, g1, g2, g3, g4, g5)
        out[q3, j] = _window(v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, g0, g1, g2, g3, g4, g5)


@_compiled
def _row_terms(v, q, mx2, sxx_c2, w, r, weighted, n, c1, c2, cols_s, cols_cs):  # pragma: no cover
    """Each pixel's term of the SSIM map and of the contrast-structure map in output row
    ``r``, from the image's blurred y, y^2 and x*y (rows q, q + 1, q + 2 of ``v``) and the
    baseline's statistics, added to the columns' running sums ``cols_s`` and ``cols_cs``,
    all in the float type (eight lanes of float32 for 8-bit data): an elementwise loop,
    which vectorises without reassociating any sum."""
    one = c1 / c1  # not the literal 1, which would make every term float64
    half = one / (one + one)
    for j in range(n):
        my, eyy, exy, m2 = v[q, j], v[q + 1, j], v[q + 2, j], mx2[r, j]
        mxmy2 = m2 * my  # 2 mx my
        my_sq = my * my
        mx = m2 * half  # exact
        num2 = exy + exy - mxmy2 + c2  # 2 sxy + C2
        den2 = eyy - my_sq + sxx_c2[r, j]  # sxx + syy + C2
        den1 = my_sq + (mx * mx + c1)  # mx^2 + my^2 + C1
        rr = one / (den1 * den2)  # one division for both terms, not two
        if weighted:
            cols_s[j] += (mxmy2 + c1) * num2 * rr * w[r, j]
            cols_cs[j] += num2 * den1 * rr * w[r, j]
        else:
            cols_s[j] += (mxmy2 + c1) * num2 * rr
            cols_cs[j] += num2 * den1 * rr


ROWS_PER_BLOCK = 16  # rows a column sums in the float type before its float64 total


@_compiled
def _flush(sums, totals, n):  # pragma: no cover - compiled
    """Add ``sums`` (the float type) into ``totals`` (float64), and zero them."""
    for j in range(n):
        totals[j] += sums[j]
        sums[j] = 0


@_compiled
def _ssim_sums(x, y, mx2, sxx_c2, w, c1, c2, g):  # pragma: no cover - compiled
    rows, width = y.shape
    n = width - 10  # the valid (cropped) columns
    outs = rows - 10  # the valid rows
    grouped = outs - outs % GROUP  # rows blurred four at a time; the rest one by one
    ft = mx2.dtype
    g0, g1, g2, g3, g4, g5 = g[0], g[1], g[2], g[3], g[4], g[5]
    ry = np.empty(width, ft)
    ryy = np.empty(width, ft)
    rxy = np.empty(width, ft)
    hy = np.empty((RING, n), ft)  # rings of horizontally blurred rows
    hyy = np.empty((RING, n), ft)
    hxy = np.empty((RING, n), ft)
    v = np.empty((3 * GROUP, n), ft)  # blurred y, y^2, x*y of each output row of a group
    weighted = w.shape[0] > 0
    # Each column's sums down the rows: over a block of rows in the float type, then
    # into float64 totals (float32 sums over a thousand rows would lose digits).
    cols_s = np.zeros(n, ft)
    cols_cs = np.zeros(n, ft)
    totals_s = np.zeros(n, np.float64)
    totals_cs = np.zeros(n, np.float64)
    block = 0  # rows summed in cols_s and cols_cs since the last flush
    # Rows are passed to the helpers as (array, index), never as views: a view is a new
    # array structure, its reference count taken and dropped (the module's docstring).
    for r in range(rows):
        for j in range(width):
            ry[j] = y[r, j]
            ryy[j] = ry[j] * ry[j]
            rxy[j] = ry[j] * x[r, j]
        slot = r % RING
        _hblur(ry, hy, slot, n, g0, g1, g2, g3, g4, g5)
        _hblur(ryy, hyy, slot, n, g0, g1, g2, g3, g4, g5)
        _hblur(rxy, hxy, slot, n, g0, g1, g2, g3, g4, g5)
        o = r - (RING - 1)  # output rows o .. o + 3 are complete
        if o >= 0 and o % GROUP == 0 and o < grouped:
            _vblur4(hy, o, v, 0, 3, n, g0, g1, g2, g3, g4, g5)
            _vblur4(hyy, o, v, 1, 3, n, g0, g1, g2, g3, g4, g5)
            _vblur4(hxy, o, v, 2, 3, n, g0, g1, g2, g3, g4, g5)
            for k in range(GROUP):
                _row_terms(v, 3 * k, mx2, sxx_c2, w, o + k, weighted, n, c1, c2, cols_s, cols_cs)
            block += GROUP
            if block >= ROWS_PER_BLOCK:
                _flush(cols_s, totals_s, n)
                _flush(cols_cs, totals_cs, n)
                block = 0
    for o in range(grouped, outs):  # the last rows, with the ring holding rows - 14 ..
        _vblur(hy, o, v, 0, n, g0, g1, g2, g3, g4, g5)
        _vblur(hyy, o, v, 1, n, g0, g1, g2, g3, g4, g5)
        _vblur(hxy, o, v, 2, n, g0, g1, g2, g3, g4, g5)
        _row_terms(v, 0, mx2, sxx_c2, w, o, weighted, n, c1, c2, cols_s, cols_cs)
    _flush(cols_s, totals_s, n)
    _flush(cols_cs, totals_cs, n)
    total_s = 0.0  # in column order: the same sum, bit for bit, in every process
    total_cs = 0.0
    for j in range(n):
        total_s += totals_s[j]
        total_cs += totals_cs[j]
    return total_s, total_cs


@partial(_compiled, fastmath=_OPTIONS["fastmath"] - {"contract"})
def _stat_row(v, q, mx2, sxx_c2, r, n, c2):  # pragma: no cover - compiled
    for j in range(n):
        m = v[q, j]
        mx2[r, j] = m + m
        # m * m rounded before the difference, as the image's side rounds my^2
        # (compiled without contraction into a fused multiply-subtract)
        sxx_c2[r, j] = v[q + 1, j] - m * m + c2


@_compiled
def _stats(x, mx2, sxx_c2, c2, g):  # pragma: no cover - compiled
    rows, width = x.shape
    n = width - 10
    outs = rows - 10
    grouped = outs - outs % GROUP  # as _ssim_sums: each row blurred by the same code
    ft = mx2.dtype
    g0, g1, g2, g3, g4, g5 = g[0], g[1], g[2], g[3], g[4], g[5]
    rx = np.empty(width, ft)
    rxx = np.empty(width, ft)
    hx = np.empty((RING, n), ft)
    hxx = np.empty((RING, n), ft)
    v = np.empty((2 * GROUP, n), ft)
    for r in range(rows):
        for j in range(width):
            rx[j] = x[r, j]
            rxx[j] = rx[j] * rx[j]
        slot = r % RING
        _hblur(rx, hx, slot, n, g0, g1, g2, g3, g4, g5)
        _hblur(rxx, hxx, slot, n, g0, g1, g2, g3, g4, g5)
        o = r - (RING - 1)
        if o >= 0 and o % GROUP == 0 and o < grouped:
            _vblur4(hx, o, v, 0, 2, n, g0, g1, g2, g3, g4, g5)
            _vblur4(hxx, o, v, 1, 2, n, g0, g1, g2, g3, g4, g5)
            for k in range(GROUP):
                _stat_row(v, 2 * k, mx2, sxx_c2, o + k, n, c2)
    for o in range(grouped, outs):
        _vblur(hx, o, v, 0, n, g0, g1, g2, g3, g4, g5)
        _vblur(hxx, o, v, 1, n, g0, g1, g2, g3, g4, g5)
        _stat_row(v, 0, mx2, sxx_c2, o, n, c2)


def ssim_stats(x, c1, c2, taps, dtype):
    """The baseline's side of SSIM for one plane ``x`` (H x W, any pixel type): 2 mu_x
    and sigma_x^2 + C2 over the valid region ((H - 10) x (W - 10)), as ``dtype``.
    ``taps``: the 11-tap Gaussian in ``dtype``. (mu_x^2 + C1 is not kept: computing it
    from 2 mu_x costs less than reading a third array of the image's size for every
    image, 0.3 ms of a plane's 3.2 at 1024 px.)

    Computed exactly as :func:`ssim_sums` computes the image's side, in ``dtype``, the
    same steps in the same order: sigma^2 = E[x^2] - mu^2 is a difference of two large
    numbers, and its float32 rounding then cancels between the baseline's and the
    image's terms. Taken in float64 here alone, SSIM of the sample dot plots moved 5e-5
    away from skimage's float64 value."""
    h, w = x.shape
    ft = np.dtype(dtype).type
    out = [np.empty((h - 10, w - 10), ft) for _ in range(2)]
    taps = np.asarray(taps, dtype=ft).ravel()[:6]
    _stats(np.ascontiguousarray(x), *out, ft(c2), taps)
    return tuple(out)


def ssim_sums(x, y, mx2, sxx_c2, w, c1, c2, taps):
    """Sums of the SSIM map and of the contrast-structure map of one plane.

    ``x``, ``y``: the baseline's and the image's plane (H x W, any pixel type).
    ``mx2``, ``sxx_c2``: the baseline's 2 mu_x and sigma_x^2 + C2 over the valid
    region ((H - 10) x (W - 10), float32 or float64: the type every sum is taken in).
    ``w``: weights of the valid region, or None. ``taps``: the first six taps of the
    symmetric 11-tap Gaussian. The maps are those of ``metrics.ssim_map`` restricted
    to pixels whose window lies inside.
    """
    ft = mx2.dtype.type
    if w is None:
        w = np.empty((0, 0), mx2.dtype)
    return _ssim_sums(
        np.ascontiguousarray(x),
        np.ascontiguousarray(y),
        mx2,
        sxx_c2,
        np.ascontiguousarray(w, dtype=mx2.dtype),
        ft(c1),
        ft(c2),
        np.asarray(taps[:6], dtype=mx2.dtype),  # as given: the baseline's blur used them
    )


@_compiled
def _halve(src, out):  # pragma: no cover - compiled
    rows, cols = src.shape
    half = cols // 2
    for i in range(out.shape[0]):
        top = src[2 * i]
        bottom = src[min(2 * i + 1, rows - 1)]  # an odd last row is reflected (repeated)
        row = out[i]
        for j in range(half):
            # Accumulated in the output's float type: uint8 + uint8 would be int64 in
            # numba, and the loop would run in four lanes instead of eight.
            row[j] = top[2 * j]
            row[j] += top[2 * j + 1]
            row[j] += bottom[2 * j]
            row[j] += bottom[2 * j + 1]
            row[j] *= 0.25
        if cols % 2:  # an odd last column is reflected (repeated)
            row[half] = top[cols - 1]
            row[half] += bottom[cols - 1]
            row[half] *= 0.5


def halve(plane: np.ndarray, dtype: type) -> np.ndarray:
    """msssim.m's downsampling of one plane: 2 x 2 means ('symmetric' border: an odd
    last row or column is repeated), every other pixel, as ``dtype``."""
    out = np.empty(((plane.shape[0] + 1) // 2, (plane.shape[1] + 1) // 2), dtype)
    _halve(np.ascontiguousarray(plane), out)
    return out


@_compiled
def _block_means(src, rows, cols, f, line, win, out):  # pragma: no cover - compiled
    """Each output row: the sum of its f source rows, column by column (``line``); the
    sums of f neighbouring columns, for every column where they lie inside (``win``,
    f contiguous passes, which vectorise); then every f-th of those, and at the borders
    the reflected columns (``cols``) one by one. ``line`` and ``win`` hold whole numbers
    exactly (int32 or int64 for integer pixels, float64 otherwise)."""
    scale = 1.0 / (f * f)
    width = src.shape[1]
    a = (f - 1) // 2  # MATLAB's anchor: output j averages columns j f - a .. j f - a + f - 1
    wide = out.shape[1]
    first_inside = min(-(-a // f), wide)  # j f - a >= 0
    end_inside = max((width - f + a) // f + 1, first_inside)  # j f - a + f - 1 <= width - 1
    spans = width - f + 1  # windows of f columns that lie inside
    for i in range(out.shape[0]):
        r0 = rows[i * f]
        for c in range(width):
            line[c] = src[r0, c]
        for t in range(1, f):
            rt = rows[i * f + t]
            for c in range(width):
                line[c] += src[rt, c]
        for c in range(spans):
            win[c] = line[c]
        for u in range(1, f):
            for c in range(spans):
                win[c] += line[c + u]
        for j in range(first_inside, end_inside):
            out[i, j] = win[j * f - a] * scale
        for j in range(first_inside):
            out[i, j] = _reflected_sum(line, cols, j * f, f) * scale
        for j in range(end_inside, wide):
            out[i, j] = _reflected_sum(line, cols, j * f, f) * scale


@_compiled
def _reflected_sum(line, cols, start, f):  # pragma: no cover - compiled
    total = line[cols[start]]
    for u in range(1, f):
        total += line[cols[start + u]]
    return total


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
    reflected at the borders. Integer pixels are summed as integers (exact, and twice
    the lanes of float64: 0.33 ms a plane at 1024 px and f = 4, against 0.85)."""
    h, w = plane.shape
    out = np.empty((-(-h // f), -(-w // f)), dtype)
    if plane.dtype.kind in "ui":
        top = int(np.iinfo(plane.dtype).max)
        sums = np.int32 if f * f * top < 2**31 else np.int64
    else:
        sums = np.float64
    _block_means(
        np.ascontiguousarray(plane),
        _reflected(h, f),
        _reflected(w, f),
        f,
        np.empty(w, sums),
        np.empty(w, sums),
        out,
    )
    return out


@_compiled
def _ink3(row, b0, b1, b2, dead, valid, acc):  # pragma: no cover - compiled
    """Add each pixel's ink in one interleaved three-channel row to ``acc``: its largest
    channel difference from (b0, b1, b2), less ``dead``, at least 0; 0 where not valid.
    In int32 lanes: the three channels' loads vectorise as one interleaved group."""
    for j in range(acc.shape[0]):
        d0 = abs(np.int32(row[3 * j]) - b0)
        d1 = abs(np.int32(row[3 * j + 1]) - b1)
        d2 = abs(np.int32(row[3 * j + 2]) - b2)
        acc[j] += max(max(d0, max(d1, d2)) - dead, 0) * np.int32(valid[j])


@_compiled
def _ink1(row, b0, dead, valid, acc):  # pragma: no cover - compiled
    for j in range(acc.shape[0]):
        acc[j] += max(abs(np.int32(row[j]) - b0) - dead, 0) * np.int32(valid[j])


@_compiled
def _ink_cells(flat, channels, colour, dead, valid, rows, cols, out):  # pragma: no cover
    width = flat.shape[1] // channels
    acc = np.zeros(width, np.int64)  # each column's ink over the rows of one band of cells
    for band in range(rows.shape[0] - 1):
        acc[:] = 0
        for r in range(rows[band], rows[band + 1]):
            if channels == 3:
                _ink3(flat[r], colour[0], colour[1], colour[2], dead, valid[r], acc)
            else:
                _ink1(flat[r], colour[0], dead, valid[r], acc)
        for c in range(cols.shape[0] - 1):
            total = 0
            for j in range(cols[c], cols[c + 1]):
                total += acc[j]
            out[band, c] = total


def ink_cells(pixels, colour, dead, valid, rows, cols):
    """The ink of ``pixels`` (H x W or H x W x 1 or 3, 8- or 16-bit) summed per cell, in
    one pass: cell (i, j) holds rows ``rows[i]`` to ``rows[i + 1]`` and columns
    ``cols[j]`` to ``cols[j + 1]``. A pixel's ink: its largest channel difference from
    ``colour`` (whole pixel values, one per channel), less ``dead`` (a whole number), at
    least 0; 0 outside ``valid`` (H x W booleans, or None). Integer sums, exact, as
    float64.

    What ``signal.py`` defines, without the image-sized arrays OpenCV made on the way
    (differences, planes, their maxima, a float64 integral image): 0.6 ms instead of 2.6
    at 1024 x 1024 x 3."""
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    flat = np.ascontiguousarray(pixels).reshape(h, w * channels)
    valid = np.ones((h, w), np.bool_) if valid is None else np.ascontiguousarray(valid, np.bool_)
    out = np.zeros((len(rows) - 1, len(cols) - 1), np.int64)
    _ink_cells(
        flat,
        channels,
        np.asarray(colour, np.int32),
        np.int32(dead),
        valid,
        np.asarray(rows, np.int64),
        np.asarray(cols, np.int64),
        out,
    )
    return out.astype(np.float64)


@_compiled
def _sq_row(x, y, r, acc):  # pragma: no cover - compiled
    """Add each sample's squared difference in row ``r`` (all channels interleaved) to
    ``acc``: int64 lanes, exact for 16-bit samples."""
    for j in range(acc.shape[0]):
        d = np.int64(x[r, j]) - np.int64(y[r, j])
        acc[j] += d * d


@_compiled
def _diff_cells(x, y, channels, rows, cols, out):  # pragma: no cover - compiled
    acc = np.zeros(x.shape[1], np.int64)  # each sample column's sum over one band of cells
    for band in range(rows.shape[0] - 1):
        acc[:] = 0
        for r in range(rows[band], rows[band + 1]):
            _sq_row(x, y, r, acc)
        for c in range(cols.shape[0] - 1):
            total = 0
            for j in range(cols[c] * channels, cols[c + 1] * channels):
                total += acc[j]
            out[band, c] = total


def diff_cells(x, y, rows, cols):
    """The squared differences of two images of one shape and integer type (H x W or
    H x W x C) summed per cell, over every channel, in one pass: cell (i, j) holds rows
    ``rows[i]`` to ``rows[i + 1]`` and columns ``cols[j]`` to ``cols[j + 1]``. Integer
    sums, exact (a 16-bit sample's square needs 32 bits), as float64; their total is
    the whole images' squared distance.

    What ``psnr_local`` needs, without the image-sized difference arrays OpenCV or numpy
    would make: about 0.4 ms at 1024 x 1024 x 3."""
    h, w = x.shape[:2]
    channels = 1 if x.ndim == 2 else x.shape[2]
    out = np.zeros((len(rows) - 1, len(cols) - 1), np.int64)
    _diff_cells(
        np.ascontiguousarray(x).reshape(h, w * channels),
        np.ascontiguousarray(y).reshape(h, w * channels),
        channels,
        np.asarray(rows, np.int64),
        np.asarray(cols, np.int64),
        out,
    )
    return out.astype(np.float64)


@_compiled
def _cross_products(a, b, out, mag2):  # pragma: no cover - compiled
    """out = a * conj(b), and in mag2 each value's squared magnitude at its places."""
    h, w = a.shape
    end = w - 1 if w % 2 == 0 else w  # columns 1 .. end - 1 hold (re, im) pairs
    rows = h - 1 if h % 2 == 0 else h  # rows 1 .. rows - 1 of the real columns do
    pairs = (end - 1) // 2
    for i in range(h):
        ra, rb, ro, rm = a[i], b[i], out[i], mag2[i]
        for k in range(pairs):  # counted by k, not stepped by 2: it vectorises (3 x faster)
            j = 2 * k + 1
            ar, ai, br, bi = ra[j], ra[j + 1], rb[j], rb[j + 1]
            re = ar * br + ai * bi
            im = ai * br - ar * bi
            m = re * re + im * im
            ro[j] = re
            ro[j + 1] = im
            rm[j] = m
            rm[j + 1] = m
    for k in range(2 if w % 2 == 0 else 1):  # the real columns' own 1-D spectra
        col = w - 1 if k else 0
        for i in (0, h - 1) if h % 2 == 0 else (0, 0):  # real values
            out[i, col] = a[i, col] * b[i, col]
            mag2[i, col] = out[i, col] * out[i, col]
        for i in range(1, rows, 2):
            re = a[i, col] * b[i, col] + a[i + 1, col] * b[i + 1, col]
            im = a[i + 1, col] * b[i, col] - a[i, col] * b[i + 1, col]
            out[i, col] = re
            out[i + 1, col] = im
            mag2[i, col] = mag2[i + 1, col] = re * re + im * im


@_compiled
def _over_magnitude(out, mag2, eps):  # pragma: no cover - compiled
    flat, m = out.ravel(), mag2.ravel()
    for j in range(flat.shape[0]):
        flat[j] /= np.sqrt(m[j]) + eps


def cross_power(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The normalised cross-power spectrum a * conj(b) / |a * conj(b)| of two spectra in
    OpenCV's packed CCS layout (``cv2.dft`` of real float32 H x W arrays), in that layout:
    what phase correlation takes the inverse transform of. A value of magnitude 0 stays
    0 (each is divided by its magnitude plus 1e-12 of the largest).

    One pass for the products and their squared magnitudes, numpy's maximum, one pass
    for the division: 0.38-0.41 ms at 512 x 512 against 1.1-1.25 ms for
    ``cv2.mulSpectrums`` and the numpy steps (the magnitude of each packed value in its
    place, then the division). Within float32 rounding of those, not bit for bit.

    The layout: columns 1 .. W - 2 hold (re, im) pairs of every row; column 0, and
    column W - 1 when W is even, hold the real 1-D spectrum of that column: row 0
    real, then (re, im) pairs, then a real last row when H is even."""
    a = np.ascontiguousarray(a, np.float32)
    out, mag2 = np.empty_like(a), np.empty_like(a)
    _cross_products(a, np.ascontiguousarray(b, np.float32), out, mag2)
    top = float(np.sqrt(mag2.max()))
    _over_magnitude(out, mag2, np.float32(1e-12 * (top or 1.0)))
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
            ssim_sums(plane, plane, stats, stats, w, 1.0, 1.0, taps)
        halve(plane, ft)
        block_means(plane, 2, ft)
        ssim_stats(plane, 1.0, 1.0, taps, ft)
    edges = np.array([0, 8, 16])
    for channels in (1, 3):
        ink_cells(np.ones((16, 16, channels), pixels), [0] * channels, 0, None, edges, edges)
        diff_cells(*[np.ones((16, 16, channels), pixels)] * 2, edges, edges)
    spectrum = np.ones((16, 16), np.float32)  # the shift's phase correlation
    cross_power(spectrum, spectrum)
    weights = np.ones((16, 16), np.float32)  # the share of valid pixels, at every level
    halve(weights, np.float32)
    block_means(weights, 2, np.float32)
