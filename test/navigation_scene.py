"""A scene with known geometry for the navigation outputs: floor, boxes, thin poles and walls of a
closed room, seen by a camera pitched down, with depth made as a network makes it.

The ground truth (rendered depth, every surface's exact shape) is this module's; the depth the
nodes get is the true inverse depth area-averaged to a network's output size and upsampled back
with the node's own upsampling (``models.transforms.upsample_prediction``), so object boundaries
become the ramps of "flying pixels" a monocular network gives.
"""
import math

import cv2
import numpy as np
import torch

from midas_ros.models.transforms import upsample_prediction
from midas_ros.scale import FloorPlane
from midas_ros.synthetic import CameraPose, SceneConfig, SceneObject, SyntheticScene

WIDTH, HEIGHT, NETWORK = 640, 480, (256, 192)     # a 256 px network on a VGA camera
CAMERA_HEIGHT, PITCH_DEG = 0.8, 15.0
ROOM = (8.0, 6.0, 2.8)
CAMERA_X = -3.0                                   # looking along +x, room centred on 0
BOXES = (SceneObject('box_a', 'box', (-1.5, 0.45), (0.5, 0.5, 0.6)),
         SceneObject('box_b', 'box', (-0.4, -0.8), (0.6, 0.5, 0.9)),
         SceneObject('box_c', 'box', (0.9, -0.2), (0.7, 0.6, 0.5)))
POLES = (SceneObject('pole_a', 'pole', (-1.6, -0.55), (0.05, 0.05, 1.5)),
         SceneObject('pole_b', 'pole', (0.2, 0.2), (0.04, 0.04, 1.2)))
FLOOR = FloorPlane.from_height_pitch_roll(CAMERA_HEIGHT, math.radians(PITCH_DEG), 0.0)


class Scene:
    def __init__(self):
        config = SceneConfig(width=WIDTH, height=HEIGHT, hfov_deg=70.0, room_size=ROOM,
                             camera_height=CAMERA_HEIGHT, camera_pitch_deg=PITCH_DEG,
                             object_count=0)
        self.pose = CameraPose.from_yaw_pitch(CAMERA_X, 0.0, CAMERA_HEIGHT, 0.0,
                                              math.radians(PITCH_DEG))
        scene = SyntheticScene(config, objects=BOXES + POLES, path=lambda index: self.pose)
        self.intrinsics = scene.intrinsics
        frame = scene.render(0)
        self.rgb = frame.rgb
        self.true_depth = frame.depth.astype(np.float32)
        self.depth = network_like(self.true_depth)
        self.true_world = self.to_world(self.points(self.true_depth))

    def points(self, depth):
        """Optical-frame points (H, W, 3) of a depth image, written out here."""
        intr = self.intrinsics
        v, u = np.mgrid[0:intr.height, 0:intr.width].astype(np.float64)
        return np.stack([(u - intr.cx) / intr.fx * depth, (v - intr.cy) / intr.fy * depth,
                         depth], axis=-1)

    def to_world(self, optical):
        return np.asarray(optical, np.float64) @ self.pose.rotation.T + self.pose.position

    def floor_pixels(self):
        return np.abs(self.true_world[..., 2]) < 1e-3


def network_like(true_depth):
    """Inverse depth area-averaged to the network size, upsampled back by the node's code."""
    inverse = (1.0 / true_depth).astype(np.float32)
    small = cv2.resize(inverse, NETWORK, interpolation=cv2.INTER_AREA)
    upsampled = upsample_prediction(torch.from_numpy(small)[None], HEIGHT, WIDTH)[0, 0].numpy()
    with np.errstate(divide='ignore'):
        return (1.0 / upsampled).astype(np.float32)


def _box_distance(world, box):
    half = np.array([box.size[0] / 2, box.size[1] / 2, box.size[2] / 2])
    centre = np.array([box.center[0], box.center[1], box.size[2] / 2])
    outside = np.maximum(np.abs(world - centre) - half, 0.0)
    return np.linalg.norm(outside, axis=-1)


def surface_distance(world, include_floor=True):
    """Distance (m) from world points (..., 3) to the nearest true surface of the scene (the
    floor left out with ``include_floor`` false)."""
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    planes = [np.abs(x - ROOM[0] / 2), np.abs(x + ROOM[0] / 2), np.abs(y - ROOM[1] / 2),
              np.abs(y + ROOM[1] / 2), np.abs(z - ROOM[2])]
    if include_floor:
        planes.append(np.abs(z))
    distances = planes + [_box_distance(world, box) for box in BOXES + POLES]
    return np.min(np.stack(distances), axis=0)


def true_scan_ranges(angles):
    """(range, object name) per bearing of a level scan at the camera (x forward = world x):
    the horizontal distance to the first box, pole or wall."""
    origin = np.array([CAMERA_X, 0.0])
    ranges = np.full(len(angles), np.inf)
    names = np.array([''] * len(angles), dtype=object)
    directions = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    with np.errstate(divide='ignore', invalid='ignore'):
        for box in BOXES + POLES:
            half = np.array(box.size[:2]) / 2
            low = (np.array(box.center) - half - origin) / directions
            high = (np.array(box.center) + half - origin) / directions
            near = np.max(np.minimum(low, high), axis=-1)
            far = np.min(np.maximum(low, high), axis=-1)
            hit = (near <= far) & (near > 0) & (near < ranges)
            ranges[hit], names[hit] = near[hit], box.object_id
        for axis, bound in ((0, ROOM[0] / 2), (1, ROOM[1] / 2), (1, -ROOM[1] / 2)):
            t = (bound - origin[axis]) / directions[:, axis]
            hit = (t > 0) & (t < ranges)
            ranges[hit], names[hit] = t[hit], 'wall'
    return ranges, names


def flying_and_kept(scene, points):
    """(fraction of the published points farther than 10 cm from every true surface, fraction
    of the network-like points on true surfaces that were published) of an organized cloud."""
    raw = surface_distance(scene.to_world(scene.points(scene.depth))) <= 0.10
    valid = np.isfinite(points[..., 2])
    flying = surface_distance(scene.to_world(points[valid])) > 0.10
    return float(flying.mean()), float((valid & raw).sum() / raw.sum())


def scan_errors(ranges, angle_min, angle_increment, margin=4):
    """{box: (nearest scan range / true nearest range - 1, median relative error of its rays)}
    for each box, over the rays whose bearing hits it with ``margin`` neighbours on each side
    hitting it too (the rays at a silhouette see the edge filter's gap)."""
    ranges = np.asarray(ranges, np.float64)
    angles = angle_min + angle_increment * np.arange(len(ranges))
    truth, names = true_scan_ranges(angles)
    result = {}
    for box in BOXES:
        inner = names == box.object_id
        for shift in range(1, margin + 1):
            inner &= (np.roll(names, shift) == box.object_id) & \
                (np.roll(names, -shift) == box.object_id)
        assert inner.sum() >= 3, box.object_id
        errors = np.abs(ranges[inner] / truth[inner] - 1)
        result[box.object_id] = (float(np.nanmin(ranges[inner]) / truth[inner].min() - 1),
                                 float(np.median(errors)))
    return result


def obstacle_distances(scene, optical_points):
    """Distance of each obstacle point (optical frame) to the nearest true surface other than the
    floor: a floor point in the obstacle cloud is far from all of them."""
    return surface_distance(scene.to_world(optical_points), include_floor=False)
