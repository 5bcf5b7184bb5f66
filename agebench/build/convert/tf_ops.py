"""TensorFlow/Keras arithmetic that both Keras converters reproduce, defined once.

* 'same' padding as TensorFlow computes it: output ``ceil(size / stride)``, and the odd pixel
  of padding goes *after* (PyTorch's symmetric padding would shift a stride-2 sampling grid by
  one pixel);
* BatchNormalization at inference as ``y = x * scale + shift``, and that affine folded into the
  convolution before it (in float64, rounded once to float32 by the caller);
* Keras' HWIO convolution kernels in PyTorch's OIHW order;
* the float64 NumPy kernels of the converters' source-framework references (NHWC, as Keras
  lays tensors out): convolution and softmax.
"""

from __future__ import annotations

import numpy as np

#: (top, bottom, left, right) zero padding of an NHWC image, TensorFlow's convention
Pads = tuple[int, int, int, int]


def same_output(size: int, stride: int) -> int:
    """The length TensorFlow's 'same' padding gives an axis of ``size`` at ``stride``."""
    return -(-size // stride)


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow 'same': (before, after) padding; the odd pixel goes after."""
    out = same_output(size, stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def batchnorm_affine(
    gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNormalization as ``y = x * scale + shift``: ``(scale, shift)``, float64."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + epsilon)
    return scale, np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale


def fold_affine_into_conv(
    weight_oihw: np.ndarray, bias: np.ndarray | None, scale: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The (weight, bias) of ``conv(x) * scale + shift`` per output channel, float64."""
    weight = np.asarray(weight_oihw, np.float64) * scale[:, None, None, None]
    if bias is None:
        return weight, shift
    return weight, np.asarray(bias, np.float64) * scale + shift


def oihw_from_hwio(kernel: np.ndarray) -> np.ndarray:
    """A Keras convolution kernel (height, width, in, out) as PyTorch's (out, in, height, width)."""
    return np.asarray(kernel).transpose(3, 2, 0, 1)


def conv2d_nhwc(
    x: np.ndarray,
    kernel: np.ndarray,
    *,
    strides: tuple[int, ...],
    pads: Pads,
    dilation: tuple[int, ...] = (1, 1),
    groups: int = 1,
    depthwise: bool = False,
) -> np.ndarray:
    """Float64 NHWC convolution with a Keras kernel, one product per kernel tap.

    ``kernel`` is HWIO: (kh, kw, in / groups, out), or for ``depthwise`` (kh, kw, in,
    multiplier), whose output channel ``c * multiplier + m`` reads input channel ``c``.
    """
    kh, kw = kernel.shape[:2]
    sh, sw = strides
    dh, dw = dilation
    top, bottom, left, right = pads
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, height, width, cin = x.shape
    oh = (height - (kh - 1) * dh - 1) // sh + 1
    ow = (width - (kw - 1) * dw - 1) // sw + 1
    cout = cin * kernel.shape[3] if depthwise else kernel.shape[3]
    out = np.zeros((n * oh * ow, cout), dtype=np.float64)
    for i in range(kh):
        rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
        for j in range(kw):
            cols = slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)
            patch = x[:, rows, cols].reshape(-1, cin)
            tap = kernel[i, j].astype(np.float64)
            if depthwise:
                out += (patch[:, :, None] * tap).reshape(-1, cout)
            elif groups == 1:
                out += patch @ tap
            else:  # output channel o reads input group o // (cout / groups)
                k = tap.reshape(cin // groups, groups, cout // groups)
                p = patch.reshape(-1, groups, cin // groups)
                out += np.einsum("ngc,cgo->ngo", p, k).reshape(-1, cout)
    return out.reshape(n, oh, ow, cout)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax over ``axis`` (Keras' default: the last), shifted by the maximum for range."""
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)
