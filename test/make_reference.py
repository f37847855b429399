#!/usr/bin/env python3
"""Write official-equivalent reference depth maps for the robot-dependencies parity test.

Run by an interpreter with timm 0.6.13 (the release the official MiDaS code and checkpoints were
made with); test_robot_parity.py runs it as a subprocess and checks, in its own environment
(another timm, numpy, OpenCV), that ``infer`` reproduces the depth from the same checkpoint:

    python test/make_reference.py OUT_DIR MODEL [MODEL ...]

For each model: ``OUT_DIR/MODEL.pt``, a checkpoint in the official layout with seeded random
weights, saved from the timm 0.6.13 reference model (``timm_reference.reference_model``);
``OUT_DIR/MODEL.npy``, its depth for ``OUT_DIR/image.png`` through the official pipeline (OpenCV
resize and normalization, forward, bicubic upsampling to the image size). ``OUT_DIR/versions.json``
records the libraries that made them.
"""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midas_ros.models.registry import get_config  # noqa: E402
from midas_ros.models.transforms import reference_preprocess  # noqa: E402
from timm_reference import reference_model  # noqa: E402

IMAGE_SIZE = (60, 80)   # rows, columns
SEED = 7


def test_image():
    """A textured rgb8 image with a disc: edges and gradients in every channel."""
    rng = np.random.default_rng(SEED)
    height, width = IMAGE_SIZE
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x ^ y) & 255], axis=-1)
    image[(x - width / 3) ** 2 + (y - height / 2) ** 2 < (height / 4) ** 2] = (250, 30, 90)
    return np.clip(image + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)


def random_official_weights(model, seed):
    """Seeded noise on every learned tensor (so no initialization pattern can hide a
    difference); the last conv's bias lifts the depth above the final ReLU's zero."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if tensor.is_floating_point() and 'attn_mask' not in name \
                    and 'running_var' not in name:
                tensor.add_(0.02 * torch.randn(tensor.shape, generator=generator))
        state['scratch.output_conv.4.bias'].fill_(1.0)
    return state


def main(out_dir, names):
    import timm
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rgb = test_image()
    cv2.imwrite(str(out_dir / 'image.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    for index, name in enumerate(names):
        cfg = get_config(name)
        torch.manual_seed(SEED)
        model = reference_model(cfg)
        state = random_official_weights(model, SEED + index)
        torch.save(state, out_dir / f'{name}.pt')
        with torch.inference_mode():
            prediction = model(torch.from_numpy(reference_preprocess(rgb, cfg)))
            depth = F.interpolate(prediction.unsqueeze(1), size=IMAGE_SIZE, mode='bicubic',
                                  align_corners=False)[0, 0].numpy()
        np.save(out_dir / f'{name}.npy', depth)
        del model, state
    (out_dir / 'versions.json').write_text(json.dumps({
        'timm': timm.__version__, 'numpy': np.__version__, 'opencv': cv2.__version__,
        'torch': torch.__version__}))


if __name__ == '__main__':
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
