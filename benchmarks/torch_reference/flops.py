"""FLOPs of a torch twin's training step, counted with torch's own
``FlopCounterMode``, on fer_jax's convention for convolutions.

torch's counter counts matmuls (mm, addmm, bmm, ...) and convolutions
(forward, and the input and weight gradients of ``convolution_backward``)
and nothing else. For a convolution it counts every kernel tap at every
output position, taps on padding included. ``benchmarks/flop_count.py``
counts only the taps that read a real input element, as XLA's cost
analysis does. So the default counts differ by the padding taps (a 3x3
conv on a 7x7 map: 49 x 9 taps counted against 169 real ones, +30%).

``count`` therefore passes ``custom_mapping`` formulas for the convolution
ops that count real taps with flop_count's own ``_valid_taps``; both
gradients of a convolution touch the same (output, tap) pairs as its
forward, so each costs what the forward does. Matmuls keep torch's
formula, 2 M N K, which is flop_count's for dot_general. With this the
twin's count and fer_jax's jaxpr count of the same step are the same
number (tests/test_torch_reference.py).
"""

from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import FlopCounterMode

import flop_count

aten = torch.ops.aten


def _pairs(x_shape, w_shape, out_shape, stride, padding, dilation,
           transposed):
  """Real (output, tap) pairs per (batch, in-channel, out-channel): the
  product over spatial dimensions."""
  spatial = len(x_shape) - 2
  total = 1
  for d in range(spatial):
    k = w_shape[2 + d]
    if not transposed:
      total *= flop_count._valid_taps(  # pylint: disable=protected-access
          x_shape[2 + d], out_shape[2 + d], k, stride[d], padding[d], 1,
          dilation[d])
    else:
      # Input i and tap t write output i*s + t*dil - p, counted when it is
      # inside the output (the same pairs as the forward of the conv this
      # transposes).
      n_in, n_out, s, p, dil = (x_shape[2 + d], out_shape[2 + d], stride[d],
                                padding[d], dilation[d])
      total *= sum(1 for i in range(n_in) for t in range(k)
                   if 0 <= i * s + t * dil - p < n_out)
  return total


def _conv_flop(x_shape, w_shape, _bias, stride, padding, dilation,
               transposed, *args, out_shape=None, **kwargs) -> int:
  """Forward convolution, real taps only."""
  del args, kwargs
  b = x_shape[0]
  if transposed:  # weight (C_in, C_out / groups, k...)
    c_in, c_out = w_shape[0], w_shape[1]
  else:  # weight (C_out, C_in / groups, k...)
    c_out, c_in = w_shape[0], w_shape[1]
  return 2 * b * c_in * c_out * _pairs(x_shape, w_shape, out_shape, stride,
                                       padding, dilation, transposed)


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, stride,
                        padding, dilation, transposed, _output_padding,
                        _groups, output_mask, out_shape=None, **kwargs):
  """Each requested gradient (input, weight) costs the forward's count."""
  del kwargs, out_shape
  fwd_out = grad_out_shape
  forward = _conv_flop(x_shape, w_shape, None, stride, padding, dilation,
                       transposed, out_shape=fwd_out)
  return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _conv_overload(x_shape, w_shape, bias, stride, padding, dilation,
                   transposed, output_padding, groups, *args,
                   out_shape=None, **kwargs):
  return _conv_flop(x_shape, w_shape, bias, stride, padding, dilation,
                    transposed, out_shape=out_shape)


def _cudnn_conv(x_shape, w_shape, padding, stride, dilation, *args,
                out_shape=None, **kwargs):
  return _conv_flop(x_shape, w_shape, None, stride, padding, dilation,
                    False, out_shape=out_shape)


REAL_TAP_MAPPING = {
    aten.convolution: _conv_overload,
    aten._convolution: _conv_overload,  # pylint: disable=protected-access
    aten.cudnn_convolution: _cudnn_conv,
    aten.convolution_backward: _conv_backward_flop,
}


def count(fn, *args, real_taps: bool = True) -> tuple[float, dict]:
  """(FLOPs of ``fn(*args)``, per-op counts) as FlopCounterMode counts
  them; ``real_taps`` False keeps torch's own convolution formula."""
  mode = FlopCounterMode(display=False,
                         custom_mapping=REAL_TAP_MAPPING if real_taps else None)
  with mode:
    fn(*args)
  per_op = {str(k): v for k, v in
            mode.get_flop_counts().get("Global", {}).items()}
  return float(mode.get_total_flops()), per_op


def ratio(a: float, b: float) -> float:
  return a / b if b else math.nan
