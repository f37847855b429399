"""Fit the ``fixed`` scale mode's a and b from a few frames with known distances.

``python -m midas_ros calibrate_scale SAMPLES`` reads a CSV (header ``relative,region,distance``)
or a YAML list of mappings with the same keys, one row per measured spot:

* ``relative``: a number (the network's relative inverse depth there), or a ``.npy`` file of a
  whole relative map (e.g. saved from ``depth/relative``), relative to the samples file;
* ``region``: for a ``.npy``, the pixel ``"u v"`` or the box ``"u0 v0 u1 v1"`` (half-open) whose
  median is used; empty for a number;
* ``distance``: the measured metric depth there, in metres along the optical axis.

Prints the ``scale`` parameters to paste under the depth_node's ``ros__parameters`` and the fit
residual. Use spots at clearly different distances, since two numbers are fitted
(1 / depth = a * relative + b); with a single distance only a is fitted (b = 0).
"""
import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from midas_ros.scale import fit_inverse_depth


class SampleError(ValueError):
    """A samples file that cannot be used, with the row at fault."""


def read_rows(path):
    """Rows of the samples file as dicts with keys relative, region, distance."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() in ('.yaml', '.yml'):
        import yaml
        rows = yaml.safe_load(text)
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise SampleError(f'{path}: expected a YAML list of mappings')
        return rows
    return list(csv.DictReader(line for line in text.splitlines()
                               if line.strip() and not line.lstrip().startswith('#')))


def relative_value(row, base_dir, cache):
    """The relative inverse depth a row points at: its number, or a region's median."""
    source = str(row.get('relative', '')).strip()
    try:
        return float(source)
    except ValueError:
        pass
    if source not in cache:
        cache[source] = np.load(base_dir / source)
    relative = cache[source]
    corners = [int(round(float(value))) for value in str(row.get('region') or '').split()]
    if len(corners) == 2:
        corners = [corners[0], corners[1], corners[0] + 1, corners[1] + 1]
    if len(corners) != 4:
        raise SampleError(f"region must be 'u v' or 'u0 v0 u1 v1', got {row.get('region')!r}")
    u0, v0, u1, v1 = corners
    height, width = relative.shape[:2]
    if not (0 <= u0 < u1 <= width and 0 <= v0 < v1 <= height):
        raise SampleError(f'region {corners} is empty or outside the {width}x{height} map')
    values = relative[v0:v1, u0:u1]
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise SampleError(f'region {corners} of {source} holds no finite value')
    return float(np.median(values))


def load_samples(path):
    """(relative, distance) arrays from the samples file."""
    base_dir = Path(path).resolve().parent
    cache, relative, distance = {}, [], []
    for number, row in enumerate(read_rows(path), start=1):
        try:
            relative.append(relative_value(row, base_dir, cache))
            distance.append(float(row['distance']))
        except (KeyError, TypeError, ValueError, OSError) as error:
            raise SampleError(f'{path}: sample {number}: {error}') from error
    if not distance:
        raise SampleError(f'{path}: no samples')
    return np.array(relative), np.array(distance)


def snippet(fit, relative, distance):
    """The YAML text to paste, with the fit's quality as comments."""
    predicted = 1.0 / (fit.a * relative + fit.b)
    error = np.abs(predicted - distance) / distance
    lines = [f'# {fit.samples} samples, {fit.inliers} inliers; depth error median '
             f'{100 * np.median(error):.1f} %, max {100 * error.max():.1f} %'
             + (f' ({fit.reason})' if fit.reason else ''),
             'scale:',
             '  mode: fixed',
             f'  a: {fit.a:.9g}',
             f'  b: {fit.b:.9g}',
             '# relative -> measured m, fitted m']
    lines += [f'#   {r:.6g} -> {d:.3f}, {p:.3f}' for r, d, p in zip(relative, distance, predicted)]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m midas_ros calibrate_scale',
        description='Fit depth = 1 / (a * relative + b) from spots with known distances.')
    parser.add_argument('samples', help='CSV or YAML file: relative, region, distance per row')
    parser.add_argument('--inlier-threshold', type=float, default=0.05,
                        help='relative depth error that counts as an inlier (default 0.05)')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        relative, distance = load_samples(args.samples)
    except (OSError, SampleError) as error:
        parser.exit(1, f'calibrate_scale: error: {error}\n')
    if not (distance > 0).all():
        parser.exit(1, 'calibrate_scale: error: every distance must be > 0 m\n')
    fit = fit_inverse_depth(relative, 1.0 / distance, args.inlier_threshold)
    if not fit.ok:
        parser.exit(1, f'calibrate_scale: error: no usable fit: {fit.reason}\n')
    sys.stdout.write(snippet(fit, relative, distance))
    return 0


if __name__ == '__main__':
    sys.exit(main())
