"""Fine-tuning a zoo model on image + depth pairs: data preparation, the loop, checkpoints.

* Inputs are preprocessed once, exactly as the nodes do it (``DevicePreprocessor``: the official
  resize rule, cubic kernel and normalization of the model), and kept as the network input
  tensors; horizontal flips commute with that preprocessing, so augmenting the stored tensor is
  the same as augmenting the image. Training depth is resampled (nearest) to the network size.
* Validation runs the network the way ``DepthEstimator`` does (prediction upsampled to the
  image with the node's kernel) and scores it against the full-size truth
  (``metrics.frame_metrics``), so ``evaluate`` on the same frames gives the same numbers.
* AdamW on every trainable parameter (the encoder, ``model.pretrained``, frozen on request),
  constant learning rate; BatchNorm statistics stay fixed, except from random weights
  (``set_train_mode``). On the CPU the
  network runs in channels-last layout (a third faster for EfficientNet's depthwise layers).
* Checkpoints are the model's ``state_dict`` alone, the official layout, which
  ``models.weights.load_weights`` (depth_node's ``model.weights``) loads strictly; the optimizer
  state and step for ``--resume`` go to ``<out>.resume`` beside it. Every file is written to a
  temporary name in the same folder and renamed into place (atomic on POSIX), so an interrupted
  run leaves the last complete checkpoint and never a partial file.
"""
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch

from midas_ros.models.transforms import DevicePreprocessor, upsample_prediction
from midas_ros.training import DatasetError
from midas_ros.training.losses import METRIC_DEPTH, model_output, training_loss
from midas_ros.training.metrics import MetricAverager, format_metrics, frame_metrics

RESUME_SUFFIX = '.resume'


@dataclass
class TrainOptions:
    """Hyper-parameters of one run (what OUT.json records under ``args``)."""

    steps: int = 0               # 0: from epochs
    epochs: float = 0.0
    batch: int = 4
    lr: float = 3e-4
    weight_decay: float = 1e-4
    freeze_encoder: bool = False
    val_every: int = 50          # steps between validations (and checkpoints)
    time_budget_s: float = 0.0   # 0: none; else stop (validate, save) once training took this
    seed: int = 0
    batch_norm: str = 'frozen'   # 'frozen' (trained weights) or 'batch' (random weights)
    min_depth: float = 0.1
    max_depth: float = 20.0


class PreparedData:
    """Training tensors and validation frames of one model's preprocessing.

    ``train_inputs`` N x 3 x h x w float32 (network inputs), ``train_depth`` N x h x w float32
    metres at the network size (NaN = invalid); ``val_inputs`` M x 3 x h x w and ``val_depth``
    the M full-size true depth maps (HxW metres).
    """

    def __init__(self, cfg, pairs, split):
        preprocess = DevicePreprocessor(cfg, 'cpu', channels_last=False)
        train_set, val_set = set(split.train), set(split.validation)
        train_inputs, train_depth, val_inputs, self.val_depth = [], [], [], []
        self.image_size = None
        for index, pair in enumerate(pairs):
            if index not in train_set and index not in val_set:
                continue
            height, width = pair.rgb.shape[:2]
            if self.image_size is None:
                self.image_size = (width, height)
            elif self.image_size != (width, height):
                raise DatasetError(f'images change size within the recording ({self.image_size}'
                                   f' then {(width, height)}); use one camera stream')
            net_input = preprocess(torch.from_numpy(pair.rgb), 'rgb')[0].clone()
            if index in train_set:
                net_h, net_w = net_input.shape[1:]
                train_inputs.append(net_input)
                train_depth.append(torch.from_numpy(cv2.resize(
                    pair.depth, (net_w, net_h), interpolation=cv2.INTER_NEAREST)))
            else:
                val_inputs.append(net_input)
                self.val_depth.append(pair.depth)
        self.train_inputs = torch.stack(train_inputs)
        self.train_depth = torch.stack(train_depth)
        self.val_inputs = torch.stack(val_inputs)


def validate(model, data, device, min_depth, max_depth, output_kind):
    """Frame-averaged aligned metrics of ``model`` on the validation frames (eval mode)."""
    width, height = data.image_size
    averager = MetricAverager()
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for net_input, truth in zip(data.val_inputs, data.val_depth):
            prediction = model(net_input[None].to(device)).float().cpu()
            relative = upsample_prediction(prediction, height, width)[0, 0].numpy()
            if output_kind == METRIC_DEPTH:   # aligned like relative models: inverse depth
                relative = 1.0 / np.maximum(relative, 1e-6)
            averager.add(frame_metrics(relative, truth, min_depth, max_depth))
    model.train(was_training)
    return averager.result()


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path, write):
    """Call ``write(temporary path)`` and rename the result to ``path`` once it is complete
    (fsynced); on any error or interrupt the temporary file is removed."""
    path = Path(path)
    partial = path.with_name(f'.{path.name}.partial-{os.getpid()}')
    try:
        write(partial)
        with open(partial, 'rb') as stream:
            os.fsync(stream.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def save_checkpoint(out, model, optimizer, step, report):
    """Write OUT.pt (state_dict), OUT.pt.resume (optimizer, step) and OUT.json, each atomic.

    The weights go last but are named by the other two: a resume file or report that belongs
    to another weights file is recognised by its ``weights_sha256``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous()
             for name, tensor in model.state_dict().items()}
    atomic_write(out, lambda p: torch.save(state, p))
    sha = file_sha256(out)
    resume = {'step': step, 'optimizer': optimizer.state_dict(), 'weights_sha256': sha}
    atomic_write(Path(str(out) + RESUME_SUFFIX), lambda p: torch.save(resume, p))
    report = dict(report, checkpoint={'path': str(out), 'step': step, 'weights_sha256': sha})
    atomic_write(out.with_suffix('.json'),
                 lambda p: Path(p).write_text(json.dumps(report, indent=2) + '\n'))


def load_resume_state(out):
    """(step, optimizer state) saved with OUT.pt, checked against its weights; DatasetError."""
    out = Path(out)
    resume_path = Path(str(out) + RESUME_SUFFIX)
    if not out.is_file() or not resume_path.is_file():
        raise DatasetError(f'--resume {out}: needs {out} and {resume_path.name} from an '
                           'earlier run of finetune')
    try:
        state = torch.load(resume_path, map_location='cpu', weights_only=True)
    except Exception as error:
        raise DatasetError(f'{resume_path}: unreadable ({type(error).__name__})') from None
    if state.get('weights_sha256') != file_sha256(out):
        raise DatasetError(f'{resume_path} belongs to another version of {out.name}')
    return int(state['step']), state['optimizer']


def trainable_parameters(model, freeze_encoder):
    """Parameters to optimize; with ``freeze_encoder`` the encoder (``model.pretrained``)
    gets no gradient."""
    if freeze_encoder:
        encoder = getattr(model, 'pretrained', None)
        if encoder is None:
            raise DatasetError('--freeze-encoder: this model has no encoder module (pretrained)')
        for parameter in encoder.parameters():
            parameter.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def set_train_mode(model, batch_norm='frozen', freeze_encoder=False):
    """Training mode. ``batch_norm='frozen'``: every BatchNorm layer stays in eval mode (its
    statistics kept and used as they are), the usual way to fine-tune trained weights: batches
    of a few images are too small for batch statistics, and training optimizes the very function
    depth_node runs. ``'batch'``: batch statistics (and running averages updated), what random
    weights need: their statistics mean nothing, and without normalization the signal of a
    random deep network fades to nothing. A frozen encoder stays entirely in eval mode."""
    from torch.nn.modules.batchnorm import _BatchNorm
    model.train()
    if batch_norm == 'frozen':
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                module.eval()
    if freeze_encoder:
        model.pretrained.eval()


class FinalActivationProbe:
    """The input of the network's final ReLU (its non-negative output), captured each forward.

    A ReLU output that is 0 passes no gradient: pixels the network predicts at or below 0 never
    learn again (from random weights, nearly all are). ``dead_output_loss`` turns the captured
    pre-activation into a hinge that lifts them back; it is 0 for a network whose output is
    positive everywhere (the official weights), so it does not change their training.
    """

    def __init__(self, model):
        self.value = None
        self.relu = final_relu(model)
        if self.relu is not None:
            self.relu.inplace = False     # the captured input must stay the pre-activation
            self.relu.register_forward_pre_hook(self._capture)

    def _capture(self, module, inputs):
        self.value = inputs[0] if module.training else None

    def dead_output_loss(self, mask):
        """mean over valid pixels of max(0, -pre-activation); 0 without a probe."""
        if self.value is None:
            return 0.0
        pre = self.value[:, 0] if self.value.dim() == 4 else self.value
        mask = mask.to(pre.dtype)
        return torch.sum(torch.relu(-pre) * mask) / torch.clamp(mask.sum(), min=1.0)


def final_relu(model):
    """The ReLU after the last convolution of the depth head (``scratch.output_conv``), if any."""
    head = getattr(getattr(model, 'scratch', None), 'output_conv', None)
    if head is None:
        return None
    layers = list(head.children())
    convolutions = [i for i, layer in enumerate(layers) if isinstance(layer, torch.nn.Conv2d)]
    if not convolutions:
        return None
    return next((layer for layer in layers[convolutions[-1] + 1:]
                 if isinstance(layer, torch.nn.ReLU)), None)


def _duration(seconds):
    seconds = int(max(0, seconds))
    return f'{seconds // 60}m{seconds % 60:02d}s'


class Trainer:
    """One fine-tuning run of ``model`` (its config ``cfg``) on ``data`` (``PreparedData``).

    ``run(out, report, say)`` trains, validates every ``val_every`` steps and at the end,
    writes a checkpoint after each validation and returns the report (OUT.json's content).
    KeyboardInterrupt propagates after the current step; what was saved stays.
    """

    def __init__(self, model, cfg, data, options: TrainOptions, device,
                 resume_step=0, optimizer_state=None):
        # channels_last changes the layout of conv weights in memory only: state_dict keys and
        # shapes (the checkpoint) are the same.
        self.model = model.to(device, memory_format=torch.channels_last)
        self.cfg, self.data, self.options = cfg, data, options
        self.device = device
        self.output_kind = model_output(cfg)
        parameters = trainable_parameters(model, options.freeze_encoder)
        self.optimizer = torch.optim.AdamW(parameters, lr=options.lr,
                                           weight_decay=options.weight_decay)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.step = resume_step
        count = len(data.train_inputs)
        self.total_steps = options.steps or max(1, int(math.ceil(
            options.epochs * count / options.batch)))
        self.generator = torch.Generator().manual_seed(options.seed + resume_step)
        self.probe = FinalActivationProbe(self.model)

    def _batch(self):
        count = len(self.data.train_inputs)
        index = torch.randint(count, (min(self.options.batch, count),),
                              generator=self.generator)
        inputs = self.data.train_inputs[index]
        depth = self.data.train_depth[index]
        flip = torch.rand(len(index), generator=self.generator) < 0.5
        inputs[flip] = inputs[flip].flip(-1)
        depth[flip] = depth[flip].flip(-1)
        mask = torch.isfinite(depth)
        inputs = inputs.to(self.device).contiguous(memory_format=torch.channels_last)
        return inputs, depth.to(self.device), mask.to(self.device)

    def train_step(self):
        """One optimizer step on a random batch; returns the loss."""
        inputs, depth, mask = self._batch()
        prediction = self.model(inputs)
        loss = training_loss(self.output_kind, prediction, depth, mask)
        loss = loss + self.probe.dead_output_loss(mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def validate(self):
        return validate(self.model, self.data, self.device, self.options.min_depth,
                        self.options.max_depth, self.output_kind)

    def run(self, out, report, say, before: Optional[dict] = None):
        options = self.options
        if before is None:
            before = self.validate()
        report['validation'] = {'before': before, 'after': None}
        say(f'validation before: {format_metrics(before)}')
        set_train_mode(self.model, options.batch_norm, options.freeze_encoder)
        started = time.monotonic()
        first_step, losses = self.step, []
        last = None
        while self.step < self.total_steps:
            losses.append(self.train_step())
            elapsed = time.monotonic() - started
            done = self.step - first_step
            per_step = elapsed / done
            out_of_time = options.time_budget_s and elapsed >= options.time_budget_s
            final = self.step >= self.total_steps or out_of_time
            if self.step % options.val_every == 0 or final:
                last = self.validate()
                set_train_mode(self.model, options.batch_norm, options.freeze_encoder)
                report['validation']['after'] = last
                report['training'] = {'steps_done': self.step, 'steps_planned': self.total_steps,
                                      'seconds': round(elapsed, 1),
                                      'last_loss': float(np.mean(losses[-options.val_every:])),
                                      'stopped_by_time_budget': bool(out_of_time)}
                save_checkpoint(out, self.model, self.optimizer, self.step, report)
            remaining = (self.total_steps - self.step) * per_step
            if options.time_budget_s:
                remaining = min(remaining, max(0.0, options.time_budget_s - elapsed))
            val = f"  val AbsRel {last['abs_rel']:.4f}" if last else ''
            say(f'step {self.step}/{self.total_steps}  loss {losses[-1]:.4f}'
                f'  (mean of 20: {np.mean(losses[-20:]):.4f}){val}  {per_step:.2f} s/step'
                f'  ETA {_duration(remaining)}')
            if out_of_time and self.step < self.total_steps:
                say(f'time budget of {options.time_budget_s:g} s reached at step {self.step}')
                break
        return report


def options_dict(options):
    return asdict(options)
