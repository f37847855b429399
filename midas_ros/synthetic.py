"""A built-in synthetic indoor scene with exact ground truth, rendered by vectorized ray casting.

A closed room (textured floor, walls, ceiling) holds a few upright boxes at known poses (people,
crates, cabinets); a camera mounted at a fixed height with a slight downward pitch drives a closed
loop around them. Every frame gives RGB, true depth (REP 118: optical-frame z in metres), the true
2D box of each visible object and its true 3D position in the camera optical frame.

Everything is a pure function of ``(SceneConfig, frame index)``: the layout, colours and texture
come from ``seed`` and the camera pose from the index, so any process can re-render any frame.

Frames: world is REP 103 (x forward, y left, z up, floor at z = 0, room centred on the origin);
camera poses are given as the optical frame (x right, y down, z forward) in world coordinates.
"""
import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import cv2
import numpy as np

from midas_ros.geometry import Intrinsics

# Faces 0..5 of the room, in the order the slab test below produces them.
_ROOM_FACES = 6          # x-, x+, y-, y+, floor (z-), ceiling (z+)
_FLOOR, _CEILING = 4, 5
_FACES_PER_OBJECT = 6    # same order in the object's own frame: -x, +x, -y, +y, bottom, top
_TEXTURE_SIZE = 256      # texels per side of the tiling noise texture (power of two)
_TEXELS_PER_METRE = 64.0
_LIGHT = np.array([0.35, 0.55, 1.0]) / np.linalg.norm([0.35, 0.55, 1.0])  # towards the light
_AMBIENT = 0.45

# Upright box shapes per class: (length x, width y, height z) ranges in metres.
_OBJECT_CLASSES = (
    ('person', (0.35, 0.5), (0.25, 0.35), (1.55, 1.9)),
    ('box', (0.4, 0.8), (0.4, 0.8), (0.35, 0.8)),
    ('cabinet', (0.45, 0.6), (0.8, 1.2), (0.9, 1.4)),
)


@dataclass(frozen=True)
class SceneConfig:
    """Everything that decides what the scene looks like; equal configs render equal frames."""

    width: int = 640
    height: int = 480
    hfov_deg: float = 70.0
    seed: int = 0
    room_size: Tuple[float, float, float] = (12.0, 9.0, 2.8)   # x, y, z extent (m)
    camera_height: float = 0.8       # optical centre above the floor (m)
    camera_pitch_deg: float = 8.0    # positive looks down
    loop_frames: int = 300           # frames per lap of the camera path
    object_count: int = 6
    min_visible_pixels: int = 16     # smaller visible parts are not reported as objects

    def validate(self):
        """Raise ValueError naming the first bad field."""
        if self.width < 2 or self.height < 2:
            raise ValueError(f'image size must be at least 2x2, got {self.width}x{self.height}')
        if min(self.room_size) <= 0.0:
            raise ValueError(f'room_size must be positive, got {self.room_size}')
        if not 0.0 < self.camera_height < self.room_size[2]:
            raise ValueError(f'camera_height must be inside the room (0, {self.room_size[2]}), '
                             f'got {self.camera_height}')
        if not -80.0 <= self.camera_pitch_deg <= 80.0:
            raise ValueError(f'camera_pitch_deg must be in [-80, 80], got {self.camera_pitch_deg}')
        if self.loop_frames < 1 or self.object_count < 0:
            raise ValueError('loop_frames must be >= 1 and object_count >= 0')
        Intrinsics.from_fov(self.width, self.height, self.hfov_deg)  # checks the field of view
        return self


@dataclass(frozen=True)
class SceneObject:
    """An upright box standing on the floor: ``center`` is its footprint centre (x, y)."""

    object_id: str
    class_name: str
    center: Tuple[float, float]
    size: Tuple[float, float, float]     # along its own x, y and z (height)
    yaw: float = 0.0                     # rotation about world z (rad)
    color: Tuple[float, float, float] = (0.6, 0.6, 0.6)

    def corners(self):
        """The 8 corners in world coordinates, (8, 3)."""
        half_x, half_y = self.size[0] / 2.0, self.size[1] / 2.0
        local = np.array([[sx * half_x, sy * half_y, z] for sx in (-1, 1) for sy in (-1, 1)
                          for z in (0.0, self.size[2])])
        cos, sin = math.cos(self.yaw), math.sin(self.yaw)
        rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
        return local @ rotation.T + np.array([self.center[0], self.center[1], 0.0])

    def centroid(self):
        """Centre of the box volume in world coordinates, (3,)."""
        return np.array([self.center[0], self.center[1], self.size[2] / 2.0])


@dataclass(frozen=True)
class CameraPose:
    """The optical frame in the world: ``rotation`` columns are its x, y, z axes."""

    position: np.ndarray      # (3,) world
    rotation: np.ndarray      # (3, 3) world_from_optical

    @classmethod
    def from_yaw_pitch(cls, x, y, height, yaw, pitch):
        """A level camera at (x, y, height) heading ``yaw`` (rad, CCW from world x), tilted down
        by ``pitch`` (rad)."""
        cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
        cos_pitch, sin_pitch = math.cos(pitch), math.sin(pitch)
        forward = np.array([cos_yaw * cos_pitch, sin_yaw * cos_pitch, -sin_pitch])
        right = np.array([sin_yaw, -cos_yaw, 0.0])
        down = np.cross(forward, right)
        return cls(np.array([x, y, height], dtype=float), np.stack([right, down, forward], 1))

    def to_optical(self, points_world):
        """World points (N, 3) -> camera optical frame (N, 3)."""
        return (np.asarray(points_world, dtype=float) - self.position) @ self.rotation


@dataclass(frozen=True)
class ObjectTruth:
    """What a perfect detector and a perfect depth sensor would say about one visible object.

    ``box`` holds inclusive pixel indices (u_min, v_min, u_max, v_max) of the object's visible
    pixels, so it is clipped to the image and shrinks when the object is partly hidden.
    """

    object_id: str
    class_name: str
    box: Tuple[int, int, int, int]
    visible_fraction: float          # visible pixels / pixels it would cover with nothing in front
    center_camera: Tuple[float, float, float]   # box volume centre, optical frame (m)
    size: Tuple[float, float, float]

    def center_size(self):
        """(center_u, center_v, size_u, size_v) in pixels, as vision_msgs BoundingBox2D has it
        (pixel centres at integer coordinates)."""
        u_min, v_min, u_max, v_max = self.box
        return ((u_min + u_max) / 2.0, (v_min + v_max) / 2.0,
                float(u_max - u_min + 1), float(v_max - v_min + 1))


@dataclass
class SyntheticFrame:
    index: int
    rgb: np.ndarray                  # (H, W, 3) uint8
    depth: np.ndarray                # (H, W) float32 metres, optical-frame z
    objects: List[ObjectTruth]
    pose: CameraPose
    intrinsics: Intrinsics = field(repr=False)


def generate_objects(config: SceneConfig):
    """The seeded object layout: non-overlapping upright boxes inside the camera's path."""
    rng = np.random.default_rng([config.seed, 1])
    path_x, path_y = _path_semi_axes(config)
    objects = []
    for attempt in range(200 * max(config.object_count, 1)):
        if len(objects) == config.object_count:
            break
        class_index = len(objects) % len(_OBJECT_CLASSES)
        class_name, *ranges = _OBJECT_CLASSES[class_index]
        size = tuple(float(rng.uniform(*limits)) for limits in ranges)
        # Inside an ellipse well within the path, so the camera never drives through an object.
        radius, angle = math.sqrt(rng.uniform(0.0, 1.0)) * 0.5, rng.uniform(0, 2 * math.pi)
        center = (radius * path_x * math.cos(angle), radius * path_y * math.sin(angle))
        footprint = math.hypot(size[0], size[1]) / 2.0
        if any(math.dist(center, other.center) < footprint + math.hypot(*other.size[:2]) / 2.0
               + 0.3 for other in objects):
            continue
        color = tuple(float(c) for c in rng.uniform(0.15, 0.95, 3))
        objects.append(SceneObject(f'{class_name}_{len(objects)}', class_name, center, size,
                                   float(rng.uniform(-math.pi, math.pi)), color))
    return tuple(objects)


def _path_semi_axes(config):
    return config.room_size[0] / 2.0 - 1.3, config.room_size[1] / 2.0 - 1.1


def _tiling_noise(rng, size):
    """Seamless 1/f noise in [0, 1]: filtered white noise, periodic because it is built by FFT."""
    spectrum = np.fft.rfft2(rng.standard_normal((size, size)))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    spectrum /= np.maximum(np.hypot(fx, fy), 1.0 / size) ** 1.1
    noise = np.fft.irfft2(spectrum, s=(size, size))
    noise -= noise.min()
    return (noise / noise.max()).astype(np.float32)


class SyntheticScene:
    """Renders frames of one scene; ``render(index)`` is a pure function of config and index.

    ``objects`` (default: the seeded layout) and ``path`` (index -> CameraPose; default: the
    looping drive around the room) can be replaced, e.g. to place a test object exactly.
    """

    def __init__(self, config: SceneConfig = SceneConfig(), objects=None,
                 path: Optional[Callable[[int], CameraPose]] = None):
        self.config = config.validate()
        self.objects = generate_objects(config) if objects is None else tuple(objects)
        self.intrinsics = Intrinsics.from_fov(config.width, config.height, config.hfov_deg)
        self._path = path or self._default_path
        rng = np.random.default_rng([config.seed, 2])
        self._noise = _tiling_noise(rng, _TEXTURE_SIZE)
        self._noise = 0.65 + 0.5 * self._noise     # texture as a brightness factor
        self._face_gain = self._face_gains()
        # Rays through every pixel centre with optical z = 1, so a hit's ray parameter t is its
        # depth. They are separable (x depends on the column, y on the row), which makes their
        # rotation into the world three broadcast sums per frame.
        intr = self.intrinsics
        self._ray_x = ((np.arange(intr.width, dtype=np.float32) - intr.cx) / intr.fx)[None, :]
        self._ray_y = ((np.arange(intr.height, dtype=np.float32) - intr.cy) / intr.fy)[:, None]
        shape = (intr.height, intr.width)
        self._dirs = np.empty((3,) + shape, np.float32)   # world ray directions, planar
        self._depth = np.empty(shape, np.float32)
        self._face = np.empty(shape, np.int16)
        self._tex_u = np.empty(shape, np.float32)
        self._tex_v = np.empty(shape, np.float32)

    def _face_gains(self):
        """Albedo x Lambert shading x 255 of every face: (faces, 3) float32.

        The light is fixed in the world and objects do not move, so this is computed once."""
        room_albedo = [(0.80, 0.78, 0.70), (0.72, 0.76, 0.80), (0.82, 0.74, 0.66),
                       (0.70, 0.80, 0.72), (0.62, 0.50, 0.38), (0.92, 0.92, 0.90)]
        axes = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]],
                        dtype=float)
        albedo, normals = list(room_albedo), [-axes]   # room faces are seen from inside
        for obj in self.objects:
            cos, sin = math.cos(obj.yaw), math.sin(obj.yaw)
            rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
            albedo.extend([obj.color] * _FACES_PER_OBJECT)
            normals.append(axes @ rotation.T)
        lambert = _AMBIENT + (1.0 - _AMBIENT) * np.clip(np.vstack(normals) @ _LIGHT, 0.0, 1.0)
        gains = np.array(albedo) * lambert[:, None] * 255.0
        return np.ascontiguousarray(gains, np.float32)

    def _default_path(self, index):
        """One lap of an ellipse per ``loop_frames``, heading along it, turned towards the middle
        and panning gently, so objects cross the view at changing distances."""
        cfg = self.config
        phase = 2.0 * math.pi * (index % cfg.loop_frames) / cfg.loop_frames
        semi_x, semi_y = _path_semi_axes(cfg)
        x, y = semi_x * math.cos(phase), semi_y * math.sin(phase)
        heading = math.atan2(semi_y * math.cos(phase), -semi_x * math.sin(phase))
        yaw = heading + math.radians(65.0) + math.radians(15.0) * math.sin(3.0 * phase)
        return CameraPose.from_yaw_pitch(x, y, cfg.camera_height, yaw,
                                         math.radians(cfg.camera_pitch_deg))

    def camera_pose(self, index) -> CameraPose:
        return self._path(int(index))

    def render(self, index) -> SyntheticFrame:
        """Frame ``index``: the same arrays for the same config and index, in any process."""
        return self.render_pose(self.camera_pose(index), index)

    def render_pose(self, pose: CameraPose, index=-1) -> SyntheticFrame:
        """Render the scene seen from ``pose``; returned arrays are new (safe to keep)."""
        rotation = pose.rotation.astype(np.float32)
        for axis in range(3):
            np.add(self._ray_y * rotation[axis, 1] + rotation[axis, 2],
                   self._ray_x * rotation[axis, 0], out=self._dirs[axis])
        self._cast_room(pose.position)
        silhouettes = [self._cast_object(k, obj, pose) for k, obj in enumerate(self.objects)]
        truths = [truth for k, obj in enumerate(self.objects)
                  if (truth := self._object_truth(k, obj, pose, silhouettes[k])) is not None]
        return SyntheticFrame(index, self._shade(), self._depth.copy(), truths, pose,
                              self.intrinsics)

    # -- ray casting --------------------------------------------------------------------------

    def _cast_room(self, origin):
        """Exit point of every ray from the room (an axis-aligned box seen from inside).

        Selections are arithmetic blends with 0/1 masks: on full frames they are several times
        faster than ``np.where`` or boolean indexing."""
        size = self.config.room_size
        behind = (origin[0] + size[0] / 2.0, origin[1] + size[1] / 2.0, origin[2])
        ahead = (size[0] / 2.0 - origin[0], size[1] / 2.0 - origin[1], size[2] - origin[2])
        exits, sides = [], []
        with np.errstate(divide='ignore'):
            for axis in range(3):
                d = self._dirs[axis]
                # The camera is inside, so both wall distances are positive and a ray parallel
                # to a pair of walls gets +inf.
                forward = d >= 0
                gap = forward * np.float32(ahead[axis] - behind[axis])
                gap += np.float32(behind[axis])
                exits.append(np.divide(gap, np.abs(d), out=gap))
                sides.append(forward)
        depth = self._depth
        np.minimum(exits[0], exits[1], out=depth)
        on_y = (exits[1] < exits[0]).astype(np.int16)
        on_z = (exits[2] < depth).astype(np.int16)
        np.minimum(depth, exits[2], out=depth)
        # Face = 2 * axis + (ray going towards +axis).
        face, face_y = self._face, sides[1] + np.int16(2)
        np.add(sides[0], on_y * (face_y - sides[0]), out=face, casting='unsafe')
        face += on_z * (sides[2] + np.int16(4) - face)
        # Texture coordinates: the two world coordinates spanning the face.
        hit = [origin[axis] + depth * self._dirs[axis] for axis in range(3)]
        on_x = (face < 2).astype(np.float32)
        np.add(hit[0], on_x * (hit[1] - hit[0]), out=self._tex_u)
        np.add(hit[2], on_z * (hit[1] - hit[2]), out=self._tex_v)

    def _pixel_window(self, obj, pose, near=0.01):
        """Rows and columns (slices) that can show ``obj``: the bounds of its projection, clipped
        by the plane ``z = near`` in front of the camera; empty when it is all behind."""
        intr = self.intrinsics
        corners = pose.to_optical(obj.corners())
        z = corners[:, 2]
        if np.all(z < near):
            return slice(0, 0), slice(0, 0)
        # Where box edges cross the near plane (corner indices differ in one bit per edge).
        first, second = zip(*[(i, i | bit) for bit in (1, 2, 4) for i in range(8) if not i & bit])
        a, b = corners[list(first)], corners[list(second)]
        crossing = (a[:, 2] < near) != (b[:, 2] < near)
        fraction = (near - a[crossing, 2]) / (b[crossing, 2] - a[crossing, 2])
        points = np.vstack([corners[z >= near],
                            a[crossing] + fraction[:, None] * (b[crossing] - a[crossing])])
        u = intr.fx * points[:, 0] / points[:, 2] + intr.cx
        v = intr.fy * points[:, 1] / points[:, 2] + intr.cy
        u0 = int(np.clip(math.floor(u.min()), 0, intr.width))
        u1 = int(np.clip(math.ceil(u.max()) + 1, u0, intr.width))
        v0 = int(np.clip(math.floor(v.min()), 0, intr.height))
        v1 = int(np.clip(math.ceil(v.max()) + 1, v0, intr.height))
        return slice(v0, v1), slice(u0, u1)

    def _cast_object(self, k, obj, pose):
        """Slab test of the rays in the object's window; nearer hits win the z-buffer.

        Returns (window, pixel count of the object with nothing in front of it)."""
        rows, cols = self._pixel_window(obj, pose)
        if rows.start == rows.stop or cols.start == cols.stop:
            return (rows, cols), 0
        cos, sin = math.cos(obj.yaw), math.sin(obj.yaw)
        dx, dy = self._dirs[0, rows, cols], self._dirs[1, rows, cols]
        local_dirs = (cos * dx + sin * dy, cos * dy - sin * dx, self._dirs[2, rows, cols])
        offset = pose.position - obj.centroid()
        local_origin = (cos * offset[0] + sin * offset[1], cos * offset[1] - sin * offset[0],
                        offset[2])
        t_near = np.full(dx.shape, -np.inf, np.float32)
        t_far = np.full(dx.shape, np.inf, np.float32)
        entry_axis = np.zeros(dx.shape, np.int16)
        with np.errstate(divide='ignore', invalid='ignore'):
            for axis in range(3):
                inverse = np.float32(1.0) / local_dirs[axis]
                half = obj.size[axis] / 2.0
                t_low = np.float32(-half - local_origin[axis]) * inverse
                t_high = np.float32(half - local_origin[axis]) * inverse
                # fmin/fmax: a NaN (ray parallel to and on a slab boundary) does not decide.
                t_in = np.fmin(t_low, t_high)
                entering = t_in > t_near
                np.copyto(t_near, t_in, where=entering)
                entry_axis[entering] = axis
                np.fmin(t_far, np.fmax(t_low, t_high), out=t_far)
        hit = (t_near <= t_far) & (t_near > 0)
        depth = self._depth[rows, cols]
        nearer = hit & (t_near < depth)
        t = t_near[nearer]
        depth[nearer] = t
        axis = entry_axis[nearer]
        local_hit = [local_origin[i] + t * local_dirs[i][nearer] for i in range(3)]
        # Entering through the face whose normal opposes the ray along the entry axis.
        entry_side = np.choose(axis, [d[nearer] for d in local_dirs]) < 0
        self._face[rows, cols][nearer] = (_ROOM_FACES + _FACES_PER_OBJECT * k) + 2 * axis \
            + entry_side
        self._tex_u[rows, cols][nearer] = np.where(axis == 0, local_hit[1], local_hit[0])
        self._tex_v[rows, cols][nearer] = np.where(axis == 2, local_hit[1],
                                                   local_hit[2] + obj.size[2] / 2.0)
        return (rows, cols), int(np.count_nonzero(hit))

    def _object_truth(self, k, obj, pose, silhouette):
        (rows, cols), unoccluded = silhouette
        if unoccluded == 0:
            return None
        first = _ROOM_FACES + _FACES_PER_OBJECT * k
        faces = self._face[rows, cols]
        visible = (faces >= first) & (faces < first + _FACES_PER_OBJECT)
        count = int(np.count_nonzero(visible))
        if count < self.config.min_visible_pixels:
            return None
        visible_rows = np.flatnonzero(visible.any(axis=1)) + rows.start
        visible_cols = np.flatnonzero(visible.any(axis=0)) + cols.start
        box = (int(visible_cols[0]), int(visible_rows[0]), int(visible_cols[-1]),
               int(visible_rows[-1]))
        centre = tuple(float(c) for c in pose.to_optical(obj.centroid()[None])[0])
        return ObjectTruth(obj.object_id, obj.class_name, box, count / unoccluded, centre,
                           obj.size)

    # -- shading ------------------------------------------------------------------------------

    def _shade(self):
        """Albedo x Lambert shading x procedural texture, as uint8 RGB."""
        mask = _TEXTURE_SIZE - 1
        iu = (self._tex_u * _TEXELS_PER_METRE).astype(np.int32)
        iv = (self._tex_v * _TEXELS_PER_METRE).astype(np.int32)
        np.bitwise_and(iu, mask, out=iu)        # two's complement: negative coordinates wrap too
        np.bitwise_and(iv, mask, out=iv)
        iv *= _TEXTURE_SIZE
        iv += iu
        pattern = np.take(self._noise, iv)
        # Floor tiles: 0.5 m squares in two tones with dark grout lines; computed everywhere and
        # blended in with a 0/1 mask (cheaper than indexing the floor pixels).
        tile_u, tile_v = self._tex_u * 2.0, self._tex_v * 2.0
        cell_u, cell_v = np.floor(tile_u), np.floor(tile_v)
        odd = ((cell_u.astype(np.int32) + cell_v.astype(np.int32)) & 1).astype(np.float32)
        grout = ((tile_u - cell_u) < 0.04) | ((tile_v - cell_v) < 0.04)
        floor_gain = np.float32(1.0) - np.float32(0.2) * odd
        floor_gain -= grout * (floor_gain - np.float32(0.45))
        pattern *= np.float32(1.0) + (self._face == _FLOOR) * (floor_gain - np.float32(1.0))
        # Walls: a dark skirting board and vertical panel seams every 1.5 m.
        panel = self._tex_u * np.float32(1.0 / 1.5)
        trim = (self._tex_v < 0.12) | (panel - np.floor(panel) < 0.01)
        pattern *= np.float32(1.0) - np.float32(0.5) * (trim & (self._face < _FLOOR))
        channels = [np.take(self._face_gain[:, c], self._face) for c in range(3)]
        return cv2.merge([cv2.convertScaleAbs(channel * pattern) for channel in channels])
