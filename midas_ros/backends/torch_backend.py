"""The PyTorch runner: eager (or ``torch.compile``d) network on the estimator's device."""
import torch

_AUTOCAST_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}


class TorchRunner:
    """The network seam for eager/compiled PyTorch: 1x3xHxW float32 in, NxHxW out.

    Moves ``model`` to ``device`` (in place) and, with ``channels_last``, to that memory format;
    fp16/bf16 run under autocast, so the weights stay fp32.
    """

    name = 'torch'

    def __init__(self, model, device, precision='fp32', channels_last=True, compile=False):
        self.device = device
        self._autocast_dtype = _AUTOCAST_DTYPES.get(precision)
        model = model.eval().to(device)
        model.requires_grad_(False)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        # torch.compile specializes on input shapes; a new image size recompiles once.
        self.model = torch.compile(model) if compile else model

    def __call__(self, net_input):
        with torch.autocast(self.device.type, dtype=self._autocast_dtype or torch.float32,
                            enabled=self._autocast_dtype is not None):
            return self.model(net_input)
