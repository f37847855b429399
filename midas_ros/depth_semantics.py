"""What a depth or range value means: the one definition every output and input uses.

REP 117 (ranges) and REP 118 (depth images) give three special values, each with one meaning:

* ``+inf`` (:data:`TOO_FAR`): something was measured, beyond the maximum (the far limit, or no
  return within it): free space up to the maximum;
* ``-inf`` (:data:`TOO_NEAR`): something was measured nearer than the minimum: too close to
  tell, never free space;
* ``NaN`` (:data:`NO_READING`): nothing is known (invalid network output, no return). In
  integer depth images (16UC1 millimetres) 0 says the same, and so does 0 in a float image: no
  sensor measures a depth of exactly 0.

A reading is *in range* when ``minimum <= value <= maximum`` (NaN and the infinities never
are, unless a limit is itself infinite). depth_image_proc keeps its "valid depth" rule in one
traits header for the same reason this module exists: depth_node's depth image
(:func:`depth_from_inverse`), its point cloud (:func:`has_point`), its laser scan
(:func:`classify_ranges`) and obstacle_node's input (:func:`classify_depth`) all call it.

Every function takes numpy arrays and optional ``out`` buffers (so per-frame callers allocate
nothing) and works on any shape.
"""
import math

import numpy as np

NO_READING = math.nan
TOO_FAR = math.inf
TOO_NEAR = -math.inf


def _check_limits(minimum, maximum):
    if not 0.0 <= minimum < maximum:
        raise ValueError(f'need 0 <= minimum < maximum, got {minimum}, {maximum}')


def depth_from_inverse(inverse_depth, min_depth, max_depth, out=None, mask=None):
    """Depth (float32, metres) of an inverse-depth image (1/m), with REP 118's special values.

    ``1 / inverse_depth`` where the depth lies in ``[min_depth, max_depth]``; ``+inf`` where it
    lies beyond ``max_depth``, including an inverse depth <= 0 (at or "beyond" infinity: the
    affine scale of a monocular network extrapolates the sky there); ``-inf`` where it is
    nearer than ``min_depth``; NaN where the inverse depth is NaN (no reading). ``out`` may be
    ``inverse_depth`` itself (float32, converted in place); ``mask`` (bool, same shape) is a
    scratch buffer a per-frame caller reuses. Needs ``0 < min_depth < max_depth < inf``.
    """
    if not 0.0 < min_depth < max_depth < math.inf:
        raise ValueError(f'need 0 < min_depth < max_depth < inf, got {min_depth}, {max_depth}')
    inverse_depth = np.asarray(inverse_depth)
    if out is None:
        out = np.empty(inverse_depth.shape, dtype=np.float32)
    if mask is None:
        mask = np.empty(inverse_depth.shape, dtype=bool)
    # Too far is tested on the inverse depth (depth > max <=> inverse < 1/max, which includes
    # inverse <= 0), before ``out`` may overwrite it; after that every depth left is > 0 or
    # NaN, so too near is simply depth < min (NaN compares false).
    np.less(inverse_depth, 1.0 / max_depth, out=mask)
    with np.errstate(divide='ignore'):
        np.reciprocal(inverse_depth, out=out, casting='same_kind')
    np.copyto(out, TOO_FAR, where=mask)
    np.less(out, min_depth, out=mask)
    np.copyto(out, TOO_NEAR, where=mask)
    return out


def has_point(depth, out=None):
    """Boolean mask of the depths that are a 3D point: finite and > 0.

    Every other value (NaN, 0, +inf, -inf) is a NaN point in an organized cloud, as in
    depth_image_proc: a point cloud has no way to say "beyond range" or "too close".
    """
    depth = np.asarray(depth)
    if out is None:
        out = np.empty(depth.shape, dtype=bool)
    np.greater(depth, 0.0, out=out)
    # NaN fails both comparisons, +inf the second (only evaluated where the first held).
    np.less(depth, math.inf, out=out, where=out)
    return out


def classify_ranges(values, minimum, maximum, in_range, too_near, too_far):
    """Fill three boolean masks of ``values`` (ranges or depths, metres): in
    ``[minimum, maximum]``; too near (``0 < value < minimum``, and -inf); too far
    (``> maximum``, including +inf). NaN, 0 and negative finite values are in none of them (no
    reading). The masks must have
    ``values``' shape; they are returned as a tuple.
    """
    _check_limits(minimum, maximum)
    values = np.asarray(values)
    np.greater_equal(values, minimum, out=in_range)
    np.less_equal(values, maximum, out=too_far)
    np.logical_and(in_range, too_far, out=in_range)
    np.greater(values, maximum, out=too_far)
    np.less(values, minimum, out=too_near)
    # 0 and negative depths are below any minimum but mean "no reading" (REP 118; no sensor
    # measures them), never "too close"; -inf does mean too close.
    np.greater(values, 0.0, out=too_near, where=too_near)
    too_near |= np.isneginf(values)
    return in_range, too_near, too_far


def classify_depth(depth, minimum, maximum):
    """``(in_range, too_near, too_far)`` boolean masks of a depth image (new arrays): see
    :func:`classify_ranges`. For small windows (obstacle_node's boxes)."""
    shape = np.shape(depth)
    return classify_ranges(depth, minimum, maximum, np.empty(shape, bool),
                           np.empty(shape, bool), np.empty(shape, bool))


def range_without_reading(any_too_near, any_too_far):
    """What a ray (or an obstacle) reports when none of its readings is in range: ``-inf``
    when any was too near (something is too close to measure: never report free space then),
    else ``+inf`` when any was too far, else NaN. Scalars or boolean arrays."""
    return np.where(any_too_near, TOO_NEAR, np.where(any_too_far, TOO_FAR, NO_READING))
