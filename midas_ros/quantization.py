"""int8 on the CPU with measured accuracy: calibrate, quantize, compare with fp32, then decide.

``inference.precision: int8`` makes ``DepthEstimator`` start on its backend's fp32 graph and
hand an ``Int8Calibrator`` (one per network, shared by the estimator and its replicas, i.e.
the pipeline's lanes) the network inputs it runs:

1. *Calibration inputs*: with the live source (``inference.calibration`` empty) the first
   ``calibration_frames`` frames the estimator is given (warm-up frames excluded) of one network
   input size: with several cameras (depth_node's ``cameras``, all feeding one network) the
   frames of every camera count, kept apart by network input size, and the first size to have
   ``calibration_frames`` of them is quantized. With a folder or recording
   (``calibration_images``) its images, preprocessed once the first frame (in depth_node the
   warm-up at ``inference.warmup_size``) shows the network input size (they must give the same
   size: an error otherwise). An int8 graph is quantized and measured for that one input size
   (``size``); the estimators run frames of other sizes (a camera of another aspect ratio) on
   the fp32 graph.
2. Every ``HELD_OUT_EVERY``-th input is held out; the others calibrate the quantization
   (``backends.quantize``: NNCF for OpenVINO, static QDQ for ONNX Runtime), cached by variant,
   input size, weights and the calibration data's digest.
3. The int8 graph and the fp32 graph run the held-out inputs; ``compare_relative`` measures the
   int8 output against fp32 as what MiDaS outputs is used: relative inverse depth, aligned by a
   per-frame least-squares scale and shift, then the median and 95th percentile of the relative
   error and delta1 (fraction of pixels within a factor 1.25).
4. Accepted when the 95th percentile is at most ``max_error``: each estimator swaps its fp32
   runner for an int8 one at its next frame. Otherwise (or when quantization fails: missing
   nncf, a graph the quantizer rejects) fp32 stays, with one warning saying why.

Steps 2-4 run in a background thread by default while fp32 keeps serving (they take seconds to
a minute and load the CPU meanwhile); ``background=False`` runs them inside the frame that
completes the calibration set (tools, tests), and so does a folder or recording met during
``DepthEstimator.warmup`` (the node's configure), so that the node serves int8 from its first
frame. The result is logged once and kept in
``state``, ``reason`` and ``accuracy`` (what /diagnostics shows).
"""
import logging
import threading
from dataclasses import dataclass

import numpy as np
import torch

from midas_ros.backends import ArtefactCache, BackendError, runner_class
from midas_ros.backends.quantize import CalibrationSet, create_int8_runner
from midas_ros.calibration_images import CalibrationError, load_calibration_images

HELD_OUT_EVERY = 4          # every 4th calibration input measures accuracy, the rest calibrate
DELTA1_RATIO = 1.25
# Pixels more than 1 / FAR_FRACTION times as far as the nearest percent of the frame (fp32
# inverse depth below FAR_FRACTION x its 99th percentile) are left out of the figures: the sky
# and far field have an inverse depth of ~0, where any absolute error is an unbounded relative
# one, and in most scenes they lie beyond a robot's depth.max anyway.
FAR_FRACTION = 0.05
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Accuracy:
    """int8 against fp32 over held-out frames (fractions; relative inverse depth, each frame
    aligned by scale and shift): median and 95th percentile of |int8 - fp32| / fp32, and
    delta1, the fraction of pixels where max(int8/fp32, fp32/int8) < 1.25; over the pixels at
    most 20 times as far as the frame's nearest percent (``FAR_FRACTION``)."""

    median: float
    p95: float
    delta1: float
    frames: int

    def describe(self):
        return (f'median relative error {self.median:.2%}, 95th percentile {self.p95:.2%}, '
                f'delta1 {self.delta1:.4f} over {self.frames} held-out frames')


def align_scale_shift(prediction, reference):
    """``s * prediction + t`` with (s, t) the least-squares fit to ``reference`` (same shape).

    The standard alignment of relative inverse depth (MiDaS's evaluation), because its scale
    and shift are arbitrary per frame anyway.
    """
    p = prediction.astype(np.float64).ravel()
    r = reference.astype(np.float64).ravel()
    p_mean, r_mean = p.mean(), r.mean()
    variance = np.dot(p - p_mean, p - p_mean)
    scale = np.dot(p - p_mean, r - r_mean) / variance if variance > 0 else 0.0
    return (scale * (prediction.astype(np.float64) - p_mean) + r_mean)


def compare_relative(predictions, references):
    """``Int8Accuracy`` of ``predictions`` against ``references`` (sequences of HxW arrays)."""
    errors, ratios = [], []
    for prediction, reference in zip(predictions, references):
        aligned = align_scale_shift(prediction, reference)
        reference = reference.astype(np.float64)
        valid = reference > FAR_FRACTION * max(float(np.percentile(reference, 99)), 0.0)
        if not valid.any():
            continue
        a, r = aligned[valid], reference[valid]
        errors.append(np.abs(a - r) / r)
        positive = np.maximum(a, 1e-12)
        ratios.append(np.maximum(positive / r, r / positive))
    if not errors:
        raise ValueError('no held-out frame has a positive fp32 output to compare with')
    errors, ratios = np.concatenate(errors), np.concatenate(ratios)
    return Int8Accuracy(float(np.median(errors)), float(np.percentile(errors, 95)),
                        float(np.mean(ratios < DELTA1_RATIO)), len(predictions))


def split_held_out(inputs):
    """(calibration, held out): every ``HELD_OUT_EVERY``-th input held out, at least one of
    each; needs two inputs."""
    if len(inputs) < 2:
        raise CalibrationError(f'int8 calibration needs at least 2 frames, got {len(inputs)}')
    held = set(range(HELD_OUT_EVERY - 1, len(inputs), HELD_OUT_EVERY)) or {len(inputs) - 1}
    return ([x for i, x in enumerate(inputs) if i not in held],
            [x for i, x in enumerate(inputs) if i in held])


class Int8Calibrator:
    """Calibration, quantization and the accuracy gate of one network (see the module doc).

    ``backend``: 'openvino' or 'onnxruntime'; ``model``, ``cfg``: the torch network and its
    variant; ``cache_dir``: the artefact cache. ``source``: ``inference.calibration``; its
    images are loaded here, so a bad source raises CalibrationError at construction. ``frames``:
    how many calibration inputs; ``max_error``: the largest accepted 95th-percentile relative
    error; ``log``: has ``info``/``warning`` (a ``logging.Logger`` or an rclpy logger).

    ``state``: 'collecting' -> 'quantizing' -> 'int8' (accepted) or 'fp32' (refused or failed);
    ``reason`` says it in a line, ``accuracy`` is the ``Int8Accuracy`` once measured.
    """

    def __init__(self, backend, model, cfg, cache_dir=None, source='', frames=32,
                 max_error=0.1, background=True, log=None, random_weights=False):
        if frames < 2:
            raise CalibrationError(f'inference.calibration_frames must be at least 2, got '
                                   f'{frames}')
        self.backend, self.model, self.cfg = backend, model, cfg
        self.cache = ArtefactCache(cache_dir)
        self.source, self.frames, self.max_error = source, frames, max_error
        self.background = background
        self.random_weights = random_weights
        self.log = log or _log
        self.images = load_calibration_images(source, frames)
        self.state = 'collecting'
        self.reason = (f'fp32 until quantized; calibrating on the first {frames} frames'
                       if not self.images else
                       f'fp32 until quantized; calibrating on {len(self.images)} images of '
                       f'{source}')
        self.accuracy = None
        self.artefact = None
        self.size = None        # (net_w, net_h) the int8 graph is for, once quantizing
        self._inputs = {}       # live source: (net_h, net_w) -> the inputs of that size so far
        self._lock = threading.Lock()
        self._threads = {}      # id(estimator) -> intra-op threads of its sessions
        self._ready = {}        # id(estimator) -> int8 runner, taken at its next frame
        self._thread = None
        self.done = threading.Event()

    def register(self, estimator):
        """``estimator`` (in its constructing thread) will take an int8 runner if accepted."""
        self._threads[id(estimator)] = torch.get_num_threads()

    def observe(self, estimator, net_input, preprocess, warming_up):
        """A frame's network input (1x3xHxW float32 tensor) after ``estimator`` ran it.

        ``preprocess(image, channel_order)`` -> network input: the estimator's own, for the
        images of a folder or recording. Starts the quantization once the set is complete.
        """
        if self.state != 'collecting':
            return
        with self._lock:
            if self.state != 'collecting':
                return
            if self.images:
                inputs = self._preprocess_images(net_input, preprocess)
                if inputs is None:
                    return
            else:
                if warming_up:
                    return
                inputs = self._inputs.setdefault(tuple(net_input.shape[2:]), [])
                inputs.append(net_input.detach().cpu().numpy().copy())
                if len(inputs) < self.frames:
                    return
                self._inputs = {}
            self.size = (inputs[0].shape[3], inputs[0].shape[2])
            self.state = 'quantizing'
            self.reason = f'fp32 until quantized; quantizing on {len(inputs)} inputs'
        # A folder or recording met at warm-up quantizes right there: the node then serves int8
        # from its first frame (warm-up builds what is lazy; the graph is cached for the next
        # start). Live frames cannot wait: fp32 serves while a thread quantizes.
        if self.background and not (self.images and warming_up):
            self._thread = threading.Thread(target=self._quantize, args=(inputs,),
                                            name='int8-quantization', daemon=True)
            self._thread.start()
        else:
            self._quantize(inputs)

    def _preprocess_images(self, net_input, preprocess):
        size = tuple(net_input.shape[2:])
        inputs = []
        for label, image, order in self.images:
            x = preprocess(image, order)
            if tuple(x.shape[2:]) != size:
                h, w = image.shape[:2]
                self._refuse(
                    f'calibration image {label} ({w}x{h}) gives a {x.shape[3]}x{x.shape[2]} '
                    f'network input, the frames {size[1]}x{size[0]}: calibrate with images of '
                    "the camera's size")
                return None
            inputs.append(x.detach().cpu().numpy().copy())
        self.images = [(label, None, order) for label, _, order in self.images]  # free them
        return inputs

    def take(self, estimator):
        """The int8 runner made for ``estimator`` once accepted (once), else None."""
        if self.state != 'int8':
            return None
        return self._ready.pop(id(estimator), None)

    def wait(self, timeout=None):
        """Block until accepted or refused; True if decided within ``timeout`` seconds."""
        return self.done.wait(timeout)

    def _refuse(self, why):
        self.state = 'fp32'
        self.reason = f'int8 refused, running fp32: {why}'
        self.log.warning(self.reason)
        self.done.set()

    def _quantize(self, inputs):
        try:
            calibration, held_out = split_held_out(inputs)
            calibration = CalibrationSet.of(calibration)
            net_w, net_h = calibration.size
            threads = list(self._threads.values()) or [torch.get_num_threads()]
            cpu = torch.device('cpu')
            runner = create_int8_runner(self.backend, self.model, self.cfg, cpu, self.cache,
                                        calibration)
            runner.threads = threads[0]
            runner.prepare(net_w, net_h)
            reference = runner_class(self.backend)(self.model, self.cfg, cpu, 'fp32',
                                                   self.cache)
            reference.threads = threads[0]
            reference.prepare(net_w, net_h)
            int8_out, fp32_out = [], []
            with torch.inference_mode():
                for x in held_out:
                    x = torch.from_numpy(x)
                    int8_out.append(runner(x)[0].numpy().copy())
                    fp32_out.append(reference(x)[0].numpy().copy())
            del reference
            self.accuracy = compare_relative(int8_out, fp32_out)
            self.artefact = runner.artefact
        except (BackendError, CalibrationError, ValueError) as error:
            self._refuse(f'quantization failed: {error}')
            return
        if not self.accuracy.p95 <= self.max_error:
            self._refuse(f'{self.backend} int8 deviates from fp32 by {self.accuracy.describe()}'
                         f'; above inference.int8_max_error {self.max_error:.2%} (95th '
                         'percentile)' + (
                             '; random weights (model.pretrained false) give a mostly-zero '
                             'output that int8 cannot follow: raise inference.int8_max_error '
                             'to run int8 anyway, for speed tests' if self.random_weights
                             else ''))
            return
        try:
            ready = {}
            for index, (key, count) in enumerate(self._threads.items()):
                if index:   # another lane: its own session of the cached int8 graph
                    runner = create_int8_runner(self.backend, self.model, self.cfg, cpu,
                                                self.cache, calibration)
                    runner.threads = count
                    runner.prepare(net_w, net_h)
                ready[key] = runner
        except BackendError as error:
            self._refuse(f'loading the int8 graph failed: {error}')
            return
        self._ready = ready
        self.reason = (f'{self.backend} int8 calibrated on {len(calibration.inputs)} inputs of '
                       f'{net_w}x{net_h}, {self.accuracy.describe()} (limit '
                       f'{self.max_error:.2%}); network inputs of other sizes run fp32')
        self.state = 'int8'
        self.log.info(f'int8 accepted: {self.reason}; cached in {self.artefact}')
        self.done.set()

    def diagnostics(self):
        """{key: value} for /diagnostics."""
        values = {'int8': f'{self.state}: {self.reason}'}
        if self.accuracy is not None:
            values.update({
                'int8 median relative error': f'{self.accuracy.median:.4f}',
                'int8 p95 relative error': f'{self.accuracy.p95:.4f}',
                'int8 delta1': f'{self.accuracy.delta1:.4f}',
                'int8 max error (p95)': f'{self.max_error:.4f}'})
        return values
