"""How many CPUs this process may really use, and every thread pool sized to it.

A robot's CPU is shared: the camera driver, navigation and the detector run on the same cores.
Two things then ruin CPU inference (measured on a 2-core EPYC, midas_v21_small_256, one core
busy in another process: torch's forward 66 ms -> 230 ms):

* thread pools sized from ``os.cpu_count()`` -- the host's cores, not the ones a container's
  affinity mask or CPU quota grants -- so more threads than CPUs fight over them;
* threads that *spin-wait* (OpenMP's default active wait, ONNX Runtime's intra-op spinning)
  for a core another process holds, burning the time slice the work needed.

A third thing matters once the CPU is shared: threads that do not spin must sleep and be woken
at every operator of the network, and on a small convolutional network (hundreds of short
operators) that costs a lot. Measured here (ONNX Runtime 1.32, midas_v21_small_256, 2 cores):
one frame at a time on 2 sleeping threads, 55 ms per frame but 124 ms of CPU (18 frames/s at
most); two frames at a time, each session on the same 2 threads, 22 frames/s at 92 ms of CPU per
frame; one thread each: 23 frames/s, 86 ms. Where the CPU is the limit (a camera and the
outputs share it) frames in parallel give more frames per second, and one thread per core in
all the most (depth_node at a 30 Hz camera, every output: 12.3-13.4 frames/s against 11.7-12.3
with each frame on both cores); a frame that comes alone then runs on its share of the cores.
``parallel_frames`` decides how many.

``CpuBudget.detect()`` reads the affinity mask (``os.sched_getaffinity``) and the cgroup CPU
quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, the tightest along the
process's cgroup path). ``ThreadPlan`` turns that (or explicit counts) into the threads of each
pool, and ``configure_pools`` applies it to torch and OpenCV; the ONNX Runtime and OpenVINO
backends read the same plan (``current_plan``) when they build their sessions.

No library reads the cgroup quota for us (``os.process_cpu_count`` of Python 3.13 reads the
affinity only; torch and OpenCV count host cores), hence this module.
"""
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ['CpuBudget', 'ThreadPlan', 'cgroup_cpu_quota', 'configure_pools', 'current_plan',
           'parallel_frames', 'prefer_passive_waiting']

# Exported runtimes whose sessions run a frame on the calling thread (several at once).
FRAME_PARALLEL_BACKENDS = ('onnxruntime', 'openvino')
# Each frame in flight holds its own session, i.e. its own copy of the weights: 'auto' runs
# frames in parallel only for networks up to this size (the small and tiny variants).
AUTO_PARALLEL_MAX_WEIGHT_BYTES = 256 * 2 ** 20

_MOUNTINFO = Path('/proc/self/mountinfo')
_SELF_CGROUP = Path('/proc/self/cgroup')


def _read(path):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _v2_quota(directory):
    """CPUs granted by a v2 ``cpu.max`` ('max 100000' or '<quota> <period>'); None: no limit."""
    text = _read(Path(directory) / 'cpu.max')
    if not text:
        return None
    quota, _, period = text.partition(' ')
    if quota == 'max':
        return None
    try:
        quota, period = int(quota), int(period or 100000)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(directory):
    """CPUs granted by v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; None: no limit (-1)."""
    quota, period = (_read(Path(directory) / name)
                     for name in ('cpu.cfs_quota_us', 'cpu.cfs_period_us'))
    try:
        quota, period = int(quota), int(period)
    except (TypeError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _cgroup_mounts(mountinfo_text):
    """[(version, mount root, mount point)] of the cgroup2 mount and the v1 'cpu' hierarchy."""
    mounts = []
    for line in mountinfo_text.splitlines():
        fields = line.split()
        if ' - ' not in line or len(fields) < 5:
            continue
        post = line.split(' - ', 1)[1].split()
        fstype, options = post[0], post[2] if len(post) > 2 else ''
        if fstype == 'cgroup2':
            mounts.append((2, fields[3], fields[4]))
        elif fstype == 'cgroup' and 'cpu' in options.split(','):
            mounts.append((1, fields[3], fields[4]))
    return mounts


def _cgroup_paths(cgroup_text):
    """{version: path} of this process: v2 from '0::<path>', v1 from the line naming 'cpu'."""
    paths = {}
    for line in cgroup_text.splitlines():
        parts = line.split(':', 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == '0' and controllers == '':
            paths.setdefault(2, path)
        elif 'cpu' in controllers.split(','):
            paths[1] = path
    return paths


def cgroup_cpu_quota(mountinfo=_MOUNTINFO, self_cgroup=_SELF_CGROUP):
    """CPUs the cgroup quota grants this process (e.g. 1.5), or None when nothing limits it.

    The tightest quota from the process's own cgroup up to the mount's root counts (a parent's
    limit binds its children). A container usually sees its own cgroup as the root of the mount;
    then the root's file is the container's limit.
    """
    mount_text, cgroup_text = _read(mountinfo), _read(self_cgroup)
    if not mount_text or not cgroup_text:
        return None
    paths = _cgroup_paths(cgroup_text)
    limits = []
    for version, root, mount_point in _cgroup_mounts(mount_text):
        path = paths.get(version)
        if path is None:
            continue
        relative = os.path.relpath(path, root) if path.startswith(root) else '.'
        directory = Path(mount_point) / relative
        if not directory.is_dir():    # a cgroup namespace: the mount's root is ours
            directory = Path(mount_point)
        read_quota = _v2_quota if version == 2 else _v1_quota
        while True:
            quota = read_quota(directory)
            if quota is not None:
                limits.append(quota)
            if directory == Path(mount_point) or directory.parent == directory:
                break
            directory = directory.parent
    return min(limits) if limits else None


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may use: ``affinity`` cores, at most ``quota`` CPUs of time.

    ``cores`` is what thread pools should be sized to: the affinity count, capped by the quota
    (rounded down, at least 1: a pool with more threads than the quota grants gets throttled).
    """

    affinity: int
    quota: Optional[float] = None

    @property
    def cores(self):
        if self.quota is None:
            return max(1, self.affinity)
        return max(1, min(self.affinity, math.floor(self.quota + 1e-9)))

    @classmethod
    def detect(cls):
        try:
            affinity = len(os.sched_getaffinity(0))
        except AttributeError:   # not Linux: no masks, no cgroups
            return cls(os.cpu_count() or 1)
        return cls(affinity, cgroup_cpu_quota())

    def describe(self):
        quota = 'no CPU quota' if self.quota is None else f'cgroup quota {self.quota:g} CPUs'
        return f'{self.cores} usable CPU(s) ({self.affinity} in the affinity mask, {quota})'


@dataclass(frozen=True)
class ThreadPlan:
    """Threads of every pool the depth pipeline uses.

    ``frames``: frames whose networks run at the same time (``parallel_frames``); ``intra_op``:
    the parallelism of each one's network -- torch intra-op, ONNX Runtime intra-op, OpenVINO
    inference threads; by default the usable cores divided among the frames (at least 1), so
    that the frames' threads together match the cores; ``inter_op``: torch's pool for
    independent operators (MiDaS runs one chain of operators: 1); ``opencv``: OpenCV's pool
    (colour conversion, resizes in the node's thread); ``budget``: where the numbers came from.
    """

    intra_op: int
    inter_op: int
    opencv: int
    budget: CpuBudget
    frames: int = 1

    @classmethod
    def for_budget(cls, budget=None, intra_op=0, inter_op=0, opencv=0, frames=1):
        """The plan for ``budget`` (default: detected) with ``frames`` in parallel; a count
        > 0 overrides that pool's.

        Raises ValueError for a negative count or ``frames`` < 1.
        """
        for name, value in (('intra_op', intra_op), ('inter_op', inter_op), ('opencv', opencv)):
            if value < 0:
                raise ValueError(f'{name} threads must be >= 0 (0: from the CPU budget), '
                                 f'got {value}')
        if frames < 1:
            raise ValueError(f'frames in parallel must be >= 1, got {frames}')
        budget = budget or CpuBudget.detect()
        # Frames in parallel share the cores: one network per core (or per share of them).
        return cls(intra_op or max(1, budget.cores // frames), inter_op or 1,
                   opencv or budget.cores, budget, frames)

    def describe(self):
        network = f'{self.intra_op} inference thread(s)' if self.frames == 1 else \
            f'{self.frames} frames in parallel x {self.intra_op} inference thread(s)'
        return (f'{self.budget.describe()}: {network}, {self.inter_op} inter-op, '
                f'{self.opencv} OpenCV, passive waiting')


def parallel_frames(requested, budget, device_type, backend, weight_bytes):
    """How many frames' networks run at the same time, and why: ``(frames, reason)``.

    ``requested`` > 0 is taken as it is; 0 (auto) gives 2 where it pays (see the module's
    docstring): on the CPU, with an exported runtime (``FRAME_PARALLEL_BACKENDS``: its
    session runs on the calling thread; torch's OpenMP pool belongs to the main thread), with
    at least 2 usable cores, for weights up to ``AUTO_PARALLEL_MAX_WEIGHT_BYTES`` (every frame
    in flight holds a session of its own). Else 1: a GPU runs one frame at a time anyway.
    """
    if requested < 0:
        raise ValueError(f'frames in parallel must be >= 0 (0: auto), got {requested}')
    if requested:
        return requested, 'set explicitly (inference.parallel_frames)'
    if device_type != 'cpu':
        return 1, f'{device_type}: one frame at a time'
    if backend not in FRAME_PARALLEL_BACKENDS:
        return 1, f'{backend} runs a frame on the whole pool'
    if budget.cores < 2:
        return 1, 'one usable CPU'
    if weight_bytes > AUTO_PARALLEL_MAX_WEIGHT_BYTES:
        return 1, (f'{weight_bytes / 2 ** 20:.0f} MiB of weights: a second copy is not worth '
                   'it for a network this slow')
    return 2, ('two frames at a time, each on its share of the cores, spend less CPU per frame '
               'than one on threads that sleep and wake at every operator')


_current = None


def current_plan():
    """The plan ``configure_pools`` applied last, else one from the detected budget."""
    return _current or ThreadPlan.for_budget()


def prefer_passive_waiting(environ=os.environ):
    """Make OpenMP threads sleep, not spin, while they wait for work (``OMP_WAIT_POLICY``).

    The OpenMP runtime reads the variable once, when torch loads it: call this before the first
    ``import torch`` (the nodes' ``main`` does). A value the user set is kept. Returns whether
    it can still take effect (torch not yet imported).
    """
    environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    return 'torch' not in sys.modules


def configure_pools(plan):
    """Apply ``plan`` to torch (intra-op, inter-op) and OpenCV; ``current_plan()`` returns it.

    torch accepts a new inter-op count only before its pool starts; a later call keeps the
    running pool (a RuntimeError of torch's, ignored: the intra-op count is what matters).
    """
    global _current
    import cv2
    import torch
    torch.set_num_threads(plan.intra_op)
    if torch.get_num_interop_threads() != plan.inter_op:
        try:
            torch.set_num_interop_threads(plan.inter_op)
        except RuntimeError:
            pass
    cv2.setNumThreads(plan.opencv)
    _current = plan
    return plan
