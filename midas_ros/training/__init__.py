"""Fine-tuning and evaluating depth networks on a robot's own RGB-D recordings (ROS-free).

* ``rgbd_bag``: image + depth pairs from rosbag2 MCAP files (pairing by stamp, invalid depth);
* ``split``: the train / validation split in contiguous time blocks with a gap;
* ``losses``: the training losses (Ranftl et al. 2020 for relative inverse depth; a
  scale-invariant log loss in metres for metric models) and which one a model trains with;
* ``metrics``: AbsRel, RMSE, delta1 after per-frame scale-and-shift alignment;
* ``trainer``: the training loop, atomic checkpoints in the official layout, resume.

The commands are ``python -m midas_ros finetune`` and ``python -m midas_ros evaluate``
(``midas_ros.tools``).
"""


class DatasetError(ValueError):
    """Bad input (recording, topics, pairs, split, weights): one line that says what to do."""
