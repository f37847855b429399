"""Train / validation split of a recording in contiguous time blocks, with a gap between them.

Neighbouring frames of a video are nearly the same picture: a random split would validate on
frames the network was trained on, a shifted copy. Here the frames (in stamp order) are cut into
``blocks`` validation blocks spread evenly over the recording, each a contiguous run of frames,
and the ``gap`` frames on either side of every validation block are used for neither, so no
validation frame is next to a training frame (``gap >= 1``).
"""
from dataclasses import dataclass
from typing import List

from midas_ros.training import DatasetError

MIN_VALIDATION_FRAMES = 2
MIN_TRAINING_FRAMES = 2


@dataclass(frozen=True)
class TimeSplit:
    """Frame indices (into the stamp-ordered pairs) of each part."""

    train: List[int]
    validation: List[int]
    gap: List[int]
    blocks: List[List[int]]      # the validation blocks, each contiguous

    def as_dict(self):
        return {'train': len(self.train), 'validation': len(self.validation),
                'gap_frames': len(self.gap),
                'validation_blocks': [[b[0], b[-1]] for b in self.blocks]}


def time_split(count, val_fraction=0.2, blocks=3, gap=5):
    """Split ``count`` frames in stamp order; see the module docstring.

    ``val_fraction`` of the frames (rounded, at least MIN_VALIDATION_FRAMES) go to validation in
    ``blocks`` equal contiguous blocks centred at (k + 0.5) / blocks of the recording.
    DatasetError when either part would be too small to use.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f'--val-fraction must be in (0, 1), got {val_fraction}')
    if blocks < 1 or gap < 1:
        raise DatasetError(f'need at least 1 validation block and a gap of at least 1 frame, '
                           f'got {blocks} blocks, gap {gap}')
    total_val = int(round(count * val_fraction))
    if total_val < MIN_VALIDATION_FRAMES:
        raise DatasetError(f'validation split too small to score: {count} pairs x '
                           f'--val-fraction {val_fraction:g} = {total_val} frames (need at '
                           f'least {MIN_VALIDATION_FRAMES}); record more or raise --val-fraction')
    blocks = max(1, min(blocks, total_val // MIN_VALIDATION_FRAMES))
    sizes = [total_val // blocks + (1 if k < total_val % blocks else 0) for k in range(blocks)]
    validation_blocks = []
    for k, size in enumerate(sizes):
        centre = (k + 0.5) * count / blocks
        start = min(max(0, int(round(centre - size / 2))), count - size)
        validation_blocks.append(list(range(start, start + size)))
    validation = sorted({i for block in validation_blocks for i in block})
    excluded = {j for i in validation for j in range(i - gap, i + gap + 1) if 0 <= j < count}
    train = [i for i in range(count) if i not in excluded]
    gap_frames = sorted(excluded.difference(validation))
    if len(train) < MIN_TRAINING_FRAMES:
        raise DatasetError(f'{count} pairs leave {len(train)} training frames after '
                           f'{len(validation)} validation and {len(gap_frames)} gap frames; '
                           'record more, or lower --val-fraction or --split-gap')
    return TimeSplit(train, validation, gap_frames, validation_blocks)
