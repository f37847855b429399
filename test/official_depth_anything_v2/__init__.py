# Vendored, unmodified, from https://github.com/DepthAnything/Depth-Anything-V2 at commit
# a561b849ebae10a6f5ef49e26c83cbbcd36c71bf (Apache License 2.0, see LICENSE in this folder;
# the DINOv2 files carry Meta's Apache-2.0 headers). Only what building the networks and the
# official preprocessing need: depth_anything_v2/{dinov2.py, dinov2_layers/, dpt.py,
# util/blocks.py, util/transform.py}; dpt_metric.py is metric_depth/depth_anything_v2/dpt.py
# (the metric model: sigmoid x max_depth). The test oracle of test_depth_anything_v2.py: it is
# never imported by the package. Excluded from flake8 to stay byte-identical to upstream.
