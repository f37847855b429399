"""The PyTorch runner: eager (or ``torch.compile``d) network on the estimator's device."""
import torch

_HALF_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}


class TorchRunner:
    """The network seam for eager/compiled PyTorch: 1x3xHxW float32 in, NxHxW out.

    Moves ``model`` to ``device`` (in place) and, with ``channels_last``, to that memory format.

    fp16/bf16 run under autocast, which keeps precision-sensitive ops (softmax, norms,
    reductions) in fp32. With ``half_weights`` (variants measured safe in half precision) the
    weights are also *stored* in that type: autocast would otherwise cast every fp32 weight again
    on every frame (about 2 GB of memory traffic per frame for the 344 M-parameter models) and
    keep both copies alive; stored in half they take half the memory and autocast's casts of
    them are no-ops.

    ``compile``: ``torch.compile``; for each new input size the eager model runs once first, so
    that caches the model fills on its first call at a size (BEiT's relative position index,
    LeViT's attention biases) exist before tracing: otherwise the compiled graph guards on the
    empty cache and recompiles on the second frame.
    """

    name = 'torch'
    batched = True      # takes Nx3xHxW inputs (``base.run_batch``)

    def __init__(self, model, device, precision='fp32', channels_last=True, compile=False,
                 half_weights=False):
        self.device = device
        self.dtype = _HALF_DTYPES.get(precision)
        self.half_weights = bool(half_weights and self.dtype is not None)
        model = model.eval().to(device)
        model.requires_grad_(False)
        if self.half_weights:
            model = model.to(self.dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.eager = model
        # torch.compile specializes on input shapes; a new image size compiles once more.
        self.model = torch.compile(model) if compile else model
        self._traced_sizes = set()

    def __call__(self, net_input):
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            if self.model is not self.eager:
                size = tuple(net_input.shape)
                if size not in self._traced_sizes:
                    self.eager(net_input)   # fills the model's per-size caches (see above)
                    self._traced_sizes.add(size)
            return self.model(net_input)
