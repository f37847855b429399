"""``python -m midas_ros benchmark --filters``: what the navigation outputs cost per frame on one
core: the depth-edge filter, the edge-free organized cloud, the obstacle cloud without the floor,
both scan modes and the confidence image (``midas_ros.navigation``), on network-like depth.

Frames are views of the built-in synthetic scene; their true inverse depth is area-averaged to a
network's output size (``--network``, default 256x192) and upsampled back with depth_node's own
upsampling, so object boundaries hold the ramps the edge filter is for. OpenCV runs on one
thread (the issue's budget: at most 2 ms per 640x480 frame for the edge filter on one core).
"""
import time

import numpy as np


def network_like_depths(width, height, network, count):
    """(depth images, intrinsics, floor): ``count`` network-like metric depth images."""
    import cv2
    import torch

    from midas_ros.models.transforms import upsample_prediction
    from midas_ros.scale import FloorPlane
    from midas_ros.synthetic import SceneConfig, SyntheticScene
    scene = SyntheticScene(SceneConfig(width=width, height=height))
    step = max(1, scene.config.loop_frames // count)
    depths = []
    for index in range(count):
        inverse = 1.0 / scene.render(index * step).depth
        small = cv2.resize(inverse.astype(np.float32), network, interpolation=cv2.INTER_AREA)
        upsampled = upsample_prediction(torch.from_numpy(small)[None], height, width)[0, 0]
        depths.append((1.0 / upsampled.numpy()).astype(np.float32))
    floor = FloorPlane.from_height_pitch_roll(scene.config.camera_height,
                                              np.radians(scene.config.camera_pitch_deg), 0.0)
    return depths, scene.intrinsics, floor


def measure_filters(width=640, height=480, network=(256, 192), frames=50, warmup=3):
    """{configuration: {stage: [ms per frame]}} for the edge filter alone and the navigation
    products with each scan mode."""
    import cv2

    from midas_ros.depth_edges import DepthEdgeFilter
    from midas_ros.navigation import NavigationDepth, NavigationSettings
    cv2.setNumThreads(1)
    depths, intrinsics, floor = network_like_depths(width, height, network, 8)
    results = {}
    edges = DepthEdgeFilter()
    times = []
    for index in range(warmup + frames):
        tick = time.perf_counter()
        edges.edges(depths[index % len(depths)])
        if index >= warmup:
            times.append((time.perf_counter() - tick) * 1e3)
    results['edge filter'] = {'edges': times}
    for mode in ('rows', 'height_band'):
        core = NavigationDepth(NavigationSettings(scan_mode=mode))
        stages = {}
        for index in range(warmup + frames):
            tick = time.perf_counter()
            frame = core.process(depths[index % len(depths)], intrinsics, floor)
            total = (time.perf_counter() - tick) * 1e3
            if index >= warmup:
                for stage, seconds in frame.timings.items():
                    stages.setdefault(stage, []).append(seconds * 1e3)
                stages.setdefault('total', []).append(total)
        results[f'all outputs, scan.mode {mode}'] = stages
    return results


def format_filters(results, width, height, network):
    lines = [f'navigation outputs per {width}x{height} frame, network output '
             f'{network[0]}x{network[1]}, one OpenCV thread (median / p90 ms):']
    for configuration, stages in results.items():
        lines.append(f'  {configuration}:')
        for stage, times in stages.items():
            lines.append(f'    {stage:<16} {np.median(times):7.2f} / '
                         f'{np.percentile(times, 90):7.2f}')
    return '\n'.join(lines)


def run_filters(args):
    network = (256, 192)
    results = measure_filters(args.width, args.height, network, args.frames, args.warmup)
    print(format_filters(results, args.width, args.height, network))
    return results
