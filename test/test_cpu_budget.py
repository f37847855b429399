"""The CPU budget (affinity + cgroup quota) and the thread plan every pool is sized from."""
import os

import cv2
import pytest
import torch

from midas_ros import cpu_budget
from midas_ros.cpu_budget import (CpuBudget, ThreadPlan, cgroup_cpu_quota, configure_pools,
                                  parallel_frames, prefer_passive_waiting)


def fake_cgroup(tmp_path, mountinfo_lines, cgroup_lines, files):
    """A /proc/self/{mountinfo,cgroup} pair and a cgroup tree under tmp_path/'fs'."""
    for relative, text in files.items():
        path = tmp_path / 'fs' / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    mountinfo, cgroup = tmp_path / 'mountinfo', tmp_path / 'cgroup'
    mountinfo.write_text('\n'.join(line.replace('FS', str(tmp_path / 'fs'))
                                   for line in mountinfo_lines) + '\n')
    cgroup.write_text('\n'.join(cgroup_lines) + '\n')
    return mountinfo, cgroup


V2_MOUNT = '30 23 0:26 / FS rw,nosuid - cgroup2 cgroup2 rw'
V1_MOUNT = '32 31 0:29 / FS/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct'


def test_cgroup_v2_quota_is_the_tightest_along_the_path(tmp_path):
    mountinfo, cgroup = fake_cgroup(tmp_path, [V2_MOUNT], ['0::/robot.slice/depth.service'], {
        'cpu.max': 'max 100000\n',
        'robot.slice/cpu.max': '150000 100000\n',             # 1.5 CPUs for the slice
        'robot.slice/depth.service/cpu.max': 'max 100000\n'})
    assert cgroup_cpu_quota(mountinfo, cgroup) == pytest.approx(1.5)


def test_cgroup_v2_unlimited_and_namespaced(tmp_path):
    mountinfo, cgroup = fake_cgroup(tmp_path, [V2_MOUNT], ['0::/'], {'cpu.max': 'max 100000\n'})
    assert cgroup_cpu_quota(mountinfo, cgroup) is None
    # A container sees a path that does not exist in its own mount: the mount's root is its
    # cgroup, and the limit there counts.
    mountinfo, cgroup = fake_cgroup(tmp_path, [V2_MOUNT], ['0::/../host/x'],
                                    {'cpu.max': '50000 100000\n'})
    assert cgroup_cpu_quota(mountinfo, cgroup) == pytest.approx(0.5)


def test_cgroup_v1_quota(tmp_path):
    files = {'cpu,cpuacct/docker/abc/cpu.cfs_quota_us': '300000\n',
             'cpu,cpuacct/docker/abc/cpu.cfs_period_us': '100000\n',
             'cpu,cpuacct/cpu.cfs_quota_us': '-1\n',
             'cpu,cpuacct/cpu.cfs_period_us': '100000\n'}
    mountinfo, cgroup = fake_cgroup(tmp_path, [V1_MOUNT],
                                    ['4:memory:/docker/abc', '2:cpu,cpuacct:/docker/abc'], files)
    assert cgroup_cpu_quota(mountinfo, cgroup) == pytest.approx(3.0)
    files['cpu,cpuacct/docker/abc/cpu.cfs_quota_us'] = '-1\n'
    mountinfo, cgroup = fake_cgroup(tmp_path, [V1_MOUNT],
                                    ['4:memory:/docker/abc', '2:cpu,cpuacct:/docker/abc'], files)
    assert cgroup_cpu_quota(mountinfo, cgroup) is None


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path / 'missing', tmp_path / 'missing') is None


def test_budget_is_the_affinity_capped_by_the_quota():
    assert CpuBudget(8).cores == 8
    assert CpuBudget(8, quota=2.0).cores == 2
    assert CpuBudget(8, quota=2.5).cores == 2     # more threads than the quota: throttled
    assert CpuBudget(2, quota=16.0).cores == 2    # the affinity binds first
    assert CpuBudget(4, quota=0.3).cores == 1
    assert '2 usable CPU(s)' in CpuBudget(8, quota=2.0).describe()


def test_detected_budget_follows_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0})
    monkeypatch.setattr(cpu_budget, 'cgroup_cpu_quota', lambda: None)
    assert CpuBudget.detect() == CpuBudget(1)


def test_plan_from_budget_and_overrides():
    plan = ThreadPlan.for_budget(CpuBudget(4, quota=3.0))
    assert (plan.intra_op, plan.inter_op, plan.opencv) == (3, 1, 3)
    plan = ThreadPlan.for_budget(CpuBudget(4), intra_op=1, inter_op=2, opencv=1)
    assert (plan.intra_op, plan.inter_op, plan.opencv) == (1, 2, 1)
    with pytest.raises(ValueError, match='opencv threads must be >= 0'):
        ThreadPlan.for_budget(CpuBudget(4), opencv=-1)


def test_plan_with_frames_in_parallel():
    plan = ThreadPlan.for_budget(CpuBudget(8), frames=2)
    # The frames share the cores: as many network threads in all as there are cores.
    assert (plan.frames, plan.intra_op, plan.opencv) == (2, 4, 8)
    assert '2 frames in parallel x 4 inference thread(s)' in plan.describe()
    assert ThreadPlan.for_budget(CpuBudget(2), frames=3).intra_op == 1
    assert ThreadPlan.for_budget(CpuBudget(4, quota=2.5), frames=2).intra_op == 1
    assert ThreadPlan.for_budget(CpuBudget(8), intra_op=3, frames=2).intra_op == 3
    with pytest.raises(ValueError, match='frames in parallel must be >= 1'):
        ThreadPlan.for_budget(CpuBudget(2), frames=0)


def test_parallel_frames_auto_only_where_it_pays():
    small, large = 84 * 2 ** 20, 1300 * 2 ** 20     # midas_v21_small_256, dpt_beit_large_512
    two = CpuBudget(2)
    assert parallel_frames(0, two, 'cpu', 'onnxruntime', small)[0] == 2
    assert parallel_frames(0, two, 'cpu', 'openvino', small)[0] == 2
    assert parallel_frames(0, CpuBudget(16), 'cpu', 'onnxruntime', small)[0] == 2
    for budget, device, backend, weights, why in (
            (two, 'cpu', 'torch', small, 'torch runs a frame on the whole pool'),
            (two, 'cuda', 'onnxruntime', small, 'cuda: one frame at a time'),
            (CpuBudget(1), 'cpu', 'onnxruntime', small, 'one usable CPU'),
            (CpuBudget(4, quota=1.5), 'cpu', 'onnxruntime', small, 'one usable CPU'),
            (two, 'cpu', 'onnxruntime', large, '1300 MiB of weights')):
        frames, reason = parallel_frames(0, budget, device, backend, weights)
        assert frames == 1 and why in reason, (budget, device, backend, reason)
    assert parallel_frames(3, CpuBudget(1), 'cuda', 'torch', large) == (
        3, 'set explicitly (inference.parallel_frames)')
    with pytest.raises(ValueError, match='>= 0'):
        parallel_frames(-1, two, 'cpu', 'onnxruntime', small)


def test_configure_pools_applies_the_plan():
    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        plan = configure_pools(ThreadPlan.for_budget(CpuBudget(2), intra_op=1, opencv=1))
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        assert cpu_budget.current_plan() is plan
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_passive_waiting_keeps_a_user_value():
    environ = {}
    prefer_passive_waiting(environ)
    assert environ['OMP_WAIT_POLICY'] == 'PASSIVE'
    environ = {'OMP_WAIT_POLICY': 'ACTIVE'}
    prefer_passive_waiting(environ)
    assert environ['OMP_WAIT_POLICY'] == 'ACTIVE'
    # torch is imported in this process: too late for this one, and it says so.
    assert prefer_passive_waiting({}) is False
