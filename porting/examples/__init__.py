"""Built-in examples.

- `seed002()`: a real Knet-vs-TensorFlow mismatch report: one 3x3x3 kernel, a 5x5x3 image,
  Knet's `conv4(w, x; padding=1)` in Float64 against `tf.nn.conv2d(..., padding="SAME")` in
  float32. The outputs looked mirrored: Knet's default `mode=0` is true convolution.
  `porting verify-conv --example` runs it.
- `porting.examples.lenet`: the Knet tutorial's LeNet with deterministic weights in Knet
  layout, shipped as an export pair (`lenet.npz` + `lenet.json`).
  `porting convert --example lenet -o lenet.keras --verify` runs it.
- `porting.examples.models`: `cnn_bn()` (Knet's cifar10 batchnorm CNN, small) and `resnet()`
  (a small CIFAR ResNet with identity and projection shortcuts), built in Python with
  deterministic weights: `porting convert --example cnn-bn|resnet --verify`.
- `porting.examples.rnn_models`: `rnnlm()` (Knet's RNNLM: embedding, LSTM, dense over every
  step) and `tagger()` (embedding, bidirectional 2-layer LSTM, dense per step):
  `porting convert --example rnnlm|tagger --verify`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["seed002"]

# Kernel as printed by NumPy (float32, 8 significant digits); wdata[i, j, c] == testw[i+1, j+1, c+1].
_W002 = [
    [
        [0.4800154, 0.55037946, 0.42947057],
        [0.4085474, 0.44007453, 0.373467],
        [-0.06514555, -0.08138704, -0.06136011],
    ],
    [
        [0.31047726, 0.34573907, 0.27476987],
        [0.05020237, 0.04063221, 0.03868078],
        [-0.40338343, -0.45350131, -0.36722335],
    ],
    [
        [-0.05087169, -0.05863491, -0.05746817],
        [-0.28522751, -0.33066967, -0.26224968],
        [-0.41851634, -0.4850302, -0.35009676],
    ],
]
# Image rows (Julia's first index) per channel: rows 1-3, row 4, row 5.
_X002_ROWS = [(41.063, 42.063, 42.063), (55.221, 56.221, 56.221), (60.343, 61.343, 62.343)]
# Knet's printed output ydata[:, :, 1, 1] (6 significant digits).
_Y002_KNET = [
    [194.694, 120.055, 120.055, 120.055, -4.38531],
    [140.102, 0.368195, 0.368195, 0.368195, -115.278],
    [142.784, 2.84226, 2.84226, 2.84226, -114.264],
    [144.647, 3.42023, 3.42023, 3.42023, -115.046],
    [0.798015, -130.909, -130.909, -130.909, -171.574],
]
# TensorFlow's printed output part_conv_data[0, :, :, 0] (float32, 8 significant digits).
_Y002_TF = [
    [-168.01942444, -128.39241028, -128.39241028, -128.39241028, 0.46919155],
    [-115.27775574, 0.36819839, 0.36819839, 0.36819839, 140.10180664],
    [-117.4095459, -1.93058014, -1.93058014, -1.93058014, 139.05670166],
    [-119.1164856, -2.76397705, -2.76397705, -2.76397705, 139.79747009],
    [-4.79425049, 122.31194305, 122.31194305, 122.31194305, 198.7494812],
]


def seed002() -> dict:
    """The arrays of seed report 002, Julia-indexed, with the keywords the reporter used.

    Returns a dict with `w` (3, 3, 3, 1) and `x` (5, 5, 3, 1) in Float64 (Knet ran in Float64:
    `param(testw; atype=KnetArray{Float64})`), `kwargs` for `verify_conv4` (padding=1, the
    reporter's spatial mapping "keep", TensorFlow in float32), and the two printed outputs:
    `knet_printed` (Julia `[i, j]`, 6 significant digits) and `tf_printed` (`[0, i, j, 0]`,
    8 significant digits).

    >>> ex = seed002()
    >>> ex["w"].shape, ex["x"].shape
    ((3, 3, 3, 1), (5, 5, 3, 1))
    """
    w = np.asarray(_W002, dtype=np.float32).astype(np.float64)[..., None]
    x = np.zeros((5, 5, 3, 1))
    for c, (top, row4, row5) in enumerate(_X002_ROWS):
        x[:3, :, c, 0] = top
        x[3, :, c, 0] = row4
        x[4, :, c, 0] = row5
    return {
        "w": np.asfortranarray(w),
        "x": np.asfortranarray(x),
        "kwargs": {"padding": 1, "mode": 0, "spatial": "keep", "dtype": "float32"},
        "knet_printed": np.array(_Y002_KNET),
        "knet_digits": 6,
        "tf_printed": np.array(_Y002_TF),
        "tf_digits": 8,
    }
