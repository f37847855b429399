"""Training losses, and which one a model trains with.

Relative models (MiDaS, Depth Anything V2 relative) predict inverse depth up to an unknown scale
and shift. They train with the losses of Ranftl et al. 2020 ("Towards Robust Monocular Depth
Estimation: Mixing Datasets for Zero-shot Cross-dataset Transfer", TPAMI), as the authors'
released loss code computes them:

* scale-and-shift-invariant loss: per image, the prediction is aligned to the true inverse depth
  by the closed-form least-squares (s, t) = argmin sum M (s d + t - d*)^2 (the 2x2 normal
  equations), then L_ssi = sum M (s d + t - d*)^2 / (2 sum M) over the batch;
* multi-scale gradient matching: with R = M (s d + t - d*), L_grad = sum over 4 scales (the
  images subsampled by 1, 2, 4, 8) of sum (|dx R| Mx + |dy R| My) / sum M, where Mx, My are the
  masks of pixel pairs that are both valid;
* total: L_ssi + alpha L_grad with alpha = 0.5.

Metric models (Depth Anything V2 metric) predict metres and train, as their authors' metric
fine-tuning does, with the scale-invariant log loss of Eigen et al. 2014:
L = sqrt(mean(g^2) - lambda mean(g)^2), g = log d - log d*, lambda = 0.5, over valid pixels.

Shapes: prediction, target and mask are Bx H x W tensors; mask is bool (True = valid truth).
"""
import torch

# The registry's output kinds (``ModelConfig.output``).
RELATIVE_INVERSE_DEPTH = 'relative'
METRIC_DEPTH = 'metric'
GRADIENT_SCALES = 4
GRADIENT_WEIGHT = 0.5
SILOG_LAMBDA = 0.5


def model_output(cfg):
    """What a zoo model predicts, from its registry row (``ModelConfig.output``):
    RELATIVE_INVERSE_DEPTH (MiDaS, Depth Anything V2 relative) or METRIC_DEPTH (the metric
    Depth Anything V2 checkpoints). ValueError for any other kind.
    """
    output = cfg.output
    if output not in (RELATIVE_INVERSE_DEPTH, METRIC_DEPTH):
        raise ValueError(f"model '{cfg.name}' has an unknown output kind '{output}'")
    return output


def scale_and_shift(prediction, target, mask):
    """Per image (s, t) minimizing sum M (s p + t - target)^2: two B tensors.

    Images whose normal equations are singular (fewer than 2 distinct valid values) get
    s = t = 0, so they contribute their target's spread and no gradient.
    """
    mask = mask.to(prediction.dtype)
    a_00 = torch.sum(mask * prediction * prediction, (1, 2))
    a_01 = torch.sum(mask * prediction, (1, 2))
    a_11 = torch.sum(mask, (1, 2))
    b_0 = torch.sum(mask * prediction * target, (1, 2))
    b_1 = torch.sum(mask * target, (1, 2))
    det = a_00 * a_11 - a_01 * a_01
    valid = det > 1e-12 * torch.clamp(a_00 * a_11, min=1e-30)
    safe = torch.where(valid, det, torch.ones_like(det))
    scale = torch.where(valid, (a_11 * b_0 - a_01 * b_1) / safe, torch.zeros_like(det))
    shift = torch.where(valid, (-a_01 * b_0 + a_00 * b_1) / safe, torch.zeros_like(det))
    return scale, shift


def ssi_mse_loss(aligned, target, mask):
    """sum M (aligned - target)^2 / (2 sum M), over the whole batch."""
    mask = mask.to(aligned.dtype)
    count = torch.clamp(torch.sum(mask), min=1.0)
    return torch.sum(mask * (aligned - target) ** 2) / (2.0 * count)


def gradient_loss(aligned, target, mask):
    """sum (|dx R| Mx + |dy R| My) / sum M at one scale, R = M (aligned - target)."""
    mask = mask.to(aligned.dtype)
    residual = mask * (aligned - target)
    grad_x = torch.abs(residual[:, :, 1:] - residual[:, :, :-1]) * mask[:, :, 1:] * mask[:, :, :-1]
    grad_y = torch.abs(residual[:, 1:, :] - residual[:, :-1, :]) * mask[:, 1:, :] * mask[:, :-1, :]
    count = torch.clamp(torch.sum(mask), min=1.0)
    return (torch.sum(grad_x) + torch.sum(grad_y)) / count


def multiscale_gradient_loss(aligned, target, mask, scales=GRADIENT_SCALES):
    """The gradient loss summed over ``scales`` subsamplings by 1, 2, 4, ..."""
    total = aligned.new_zeros(())
    for scale in range(scales):
        step = 2 ** scale
        total = total + gradient_loss(aligned[:, ::step, ::step], target[:, ::step, ::step],
                                      mask[:, ::step, ::step])
    return total


def ssi_loss(prediction, target_inverse_depth, mask, alpha=GRADIENT_WEIGHT,
             scales=GRADIENT_SCALES):
    """Ranftl et al. 2020: L_ssi + alpha L_grad on the least-squares aligned prediction.

    ``prediction``: the network's relative inverse depth; ``target_inverse_depth``: 1 / metres
    where ``mask``, anything elsewhere. Invariant to any positive or negative scale and any
    shift of ``prediction`` (the alignment absorbs them).
    """
    target = torch.where(mask, target_inverse_depth, torch.zeros_like(target_inverse_depth))
    scale, shift = scale_and_shift(prediction, target, mask)
    aligned = scale.view(-1, 1, 1) * prediction + shift.view(-1, 1, 1)
    loss = ssi_mse_loss(aligned, target, mask)
    if alpha > 0:
        loss = loss + alpha * multiscale_gradient_loss(aligned, target, mask, scales)
    return loss


def silog_loss(predicted_metres, target_metres, mask, lam=SILOG_LAMBDA, eps=1e-6):
    """Scale-invariant log loss sqrt(mean(g^2) - lam mean(g)^2), g = log d - log d*, over the
    valid pixels of the whole batch (metres in, unitless out). With lam = 1 it is invariant to
    a global scale of the prediction; lam = 0.5 (Depth Anything V2's metric training) keeps
    half the penalty on scale, so the model learns metres."""
    valid = mask & (target_metres > 0)
    g = torch.log(torch.clamp(predicted_metres[valid], min=eps)) - torch.log(target_metres[valid])
    if g.numel() == 0:
        return predicted_metres.sum() * 0.0
    variance = torch.mean(g * g) - lam * torch.mean(g) ** 2
    return torch.sqrt(torch.clamp(variance, min=0.0) + 1e-12)


def training_loss(output_kind, prediction, depth_metres, mask):
    """The loss of a model whose output is ``output_kind`` (see :func:`model_output`) against
    true depth in metres (``mask`` True where valid)."""
    if output_kind == METRIC_DEPTH:
        return silog_loss(prediction, depth_metres, mask)
    inverse = torch.where(mask, 1.0 / torch.where(mask, depth_metres, torch.ones_like(
        depth_metres)), torch.zeros_like(depth_metres))
    return ssi_loss(prediction, inverse, mask)
