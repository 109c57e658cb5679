"""Built-in models beyond LeNet, built in Python with deterministic weights in Knet layout:
`porting convert --example cnn-bn|resnet --verify`.

- `cnn_bn()`: Knet's cifar10 `cnn_batchnorm` shape, small: (conv 3x3 - batchnorm - relu -
  pool 2) x2, conv - batchnorm - relu, dense without bias - batchnorm - relu, dense; on
  16x16x3 inputs.
- `resnet()`: a CIFAR ResNet in small: stem conv - batchnorm - relu, a basic block with an
  identity shortcut, a stride-2 block with a projection shortcut (1x1 conv stride 2 +
  batchnorm), `relu(shortcut + main)`, global mean pool, dense; batchnorm after every conv.

Weights are Knet's `xavier_uniform` drawn in Julia's column-major order from a seeded
generator (as `porting.examples.lenet`); batchnorm moments are plausible running statistics
(means near 0, variances in [0.5, 1.5]) and `bnparams` `[scale; bias]` with scales near 1,
so that verification checks every path.

>>> cnn_bn().output_sizes[-1], resnet().output_sizes[-1]
((10,), (10,))
"""

from __future__ import annotations

import numpy as np

from porting.examples.lenet import _julia_rand, _xavier

__all__ = ["EXAMPLES", "cnn_bn", "resnet", "example_input"]

F32 = np.float32


def _bn(rng, c: int, name: str):
    from porting.model import BatchNorm

    mean = F32(0.2) * _julia_rand(rng, (1, 1, c, 1), F32) - F32(0.1)
    var = F32(0.5) + _julia_rand(rng, (1, 1, c, 1), F32)
    params = np.concatenate(
        [F32(0.5) + _julia_rand(rng, (c,), F32), F32(0.2) * _julia_rand(rng, (c,), F32) - F32(0.1)]
    )
    return BatchNorm(mean, var, params, name=name)


def cnn_bn(seed: int = 3):
    """Knet's cifar10 cnn_batchnorm model, small (16x16x3 inputs, 8/16/16 channels)."""
    from porting.model import Activation, Conv, Dense, KnetModel, Mat, Pool

    rng = np.random.default_rng(seed)
    layers = [
        Conv(_xavier(rng, (3, 3, 3, 8), F32), padding=1, name="conv1"),
        _bn(rng, 8, "bn1"),
        Activation("relu", name="relu1"),
        Pool(window=2, name="pool1"),
        Conv(_xavier(rng, (3, 3, 8, 16), F32), padding=1, name="conv2"),
        _bn(rng, 16, "bn2"),
        Activation("relu", name="relu2"),
        Pool(window=2, name="pool2"),
        Conv(_xavier(rng, (3, 3, 16, 16), F32), padding=1, name="conv3"),
        _bn(rng, 16, "bn3"),
        Activation("relu", name="relu3"),
        Mat(name="mat1"),
        Dense(_xavier(rng, (32, 4 * 4 * 16), F32), name="dense1"),
        _bn(rng, 32, "bn4"),
        Activation("relu", name="relu4"),
        Dense(_xavier(rng, (10, 32), F32), np.zeros(10, F32), name="dense2"),
    ]
    return KnetModel(layers, input_size=(16, 16, 3), name="cnn_bn")


def resnet(seed: int = 4):
    """A small CIFAR ResNet: identity and projection shortcuts, batchnorm after every conv."""
    from porting.model import Activation, Add, Conv, Dense, KnetModel, Mat, Pool

    rng = np.random.default_rng(seed)

    def conv(k, cin, cout, name, **kw):
        return Conv(_xavier(rng, (k, k, cin, cout), F32), name=name, **kw)

    layers = [
        conv(3, 3, 8, "stem", padding=1),
        _bn(rng, 8, "stem_bn"),
        Activation("relu", name="stem_relu"),
        conv(3, 8, 8, "a1", padding=1),
        _bn(rng, 8, "a1_bn"),
        Activation("relu", name="a1_relu"),
        conv(3, 8, 8, "a2", padding=1),
        _bn(rng, 8, "a2_bn"),
        Add(["a2_bn", "stem_relu"], activation="relu", name="a_out"),
        conv(3, 8, 16, "b1", padding=1, stride=2),
        _bn(rng, 16, "b1_bn"),
        Activation("relu", name="b1_relu"),
        conv(3, 16, 16, "b2", padding=1),
        _bn(rng, 16, "b2_bn"),
        conv(1, 8, 16, "proj", stride=2),
        _bn(rng, 16, "proj_bn"),
        Add(["b2_bn", "proj_bn"], activation="relu", name="b_out"),
        Pool(window=8, mode=1, name="gap"),
        Mat(name="flat"),
        Dense(_xavier(rng, (10, 16), F32), np.zeros(10, F32), name="fc"),
    ]
    return KnetModel(layers, input_size=(16, 16, 3), name="resnet", inputs={"proj": "a_out"})


def example_input(model, seed: int = 5, batch: int = 2) -> np.ndarray:
    """Deterministic images in [0, 1), Julia size (input_size..., batch); token indices for a
    model that starts with an embedding (porting.examples.rnn_models)."""
    if hasattr(model.layers[0], "default_input"):
        from porting.examples.rnn_models import token_input

        return token_input(model, seed)
    rng = np.random.default_rng([seed, 1])
    return np.asfortranarray(_julia_rand(rng, (*model.input_size, batch), F32))


EXAMPLES = {
    "cnn-bn": (cnn_bn, "built-in example: Knet's cifar10 cnn_batchnorm model (small)"),
    "resnet": (resnet, "built-in example: a small CIFAR ResNet (identity + projection shortcuts)"),
}


def _add_rnn_examples() -> None:
    from porting.examples.rnn_models import RNN_EXAMPLES

    EXAMPLES.update(RNN_EXAMPLES)


_add_rnn_examples()
