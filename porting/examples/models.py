"""Built-in models beyond LeNet, built in Python with deterministic weights in Knet layout:
`porting convert --example cnn-bn|resnet --verify`.

- `cnn_bn()`: Knet's cifar10 `cnn_batchnorm` shape, small: (conv 3x3 - batchnorm - relu -
  pool 2) x2, conv - batchnorm - relu, dense without bias - batchnorm - relu, dense; on
  16x16x3 inputs.
- `resnet()`: a CIFAR ResNet in small: stem conv - batchnorm - relu, a basic block with an
  identity shortcut, a stride-2 block with a projection shortcut (1x1 conv stride 2 +
  batchnorm), `relu(shortcut + main)`, global mean pool, dense; batchnorm after every conv.
- `dcgan()`: Knet's DCGAN generator, small: dense, reshape, deconv4 with batchnorm, tanh.
- `vae()`: Knet's conv VAE decoder, small: dense, reshape, deconv4 with relu, sigm.
- `layers21()`: a Layers21-style MobileNet block: asymmetric ZeroPad, cross-correlation convs
  without bias, a depthwise conv, batchnorm, relu6.

Weights are Knet's `xavier_uniform` drawn in Julia's column-major order from a seeded
generator (as `porting.examples.lenet`); batchnorm moments are plausible running statistics
(means near 0, variances in [0.5, 1.5]) and `bnparams` `[scale; bias]` with scales near 1,
so that verification checks every path.

>>> cnn_bn().output_sizes[-1], resnet().output_sizes[-1], dcgan().output_sizes[-1]
((10,), (10,), (28, 28, 1))
"""

from __future__ import annotations

import numpy as np

from porting.examples.lenet import _julia_rand, _xavier

__all__ = ["EXAMPLES", "cnn_bn", "dcgan", "layers21", "resnet", "vae", "example_input"]

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


def dcgan(seed: int = 6):
    """Knet's DCGAN generator (dcgan-mnist), small: dense-bn-relu x2 without biases, reshape
    (4, 4, 8), deconv4 2x2 stride 2 - bn (no activation), deconv4 5x5 - bn - relu, deconv4 2x2
    stride 2 - bn, deconv4 5x5 + one scalar bias - tanh; a 16-value latent in, 28x28x1 out (as MNIST)."""
    from porting.model import Activation, Deconv, Dense, KnetModel, Reshape

    rng = np.random.default_rng(seed)
    layers = [
        Dense(_xavier(rng, (32, 16), F32), name="fc1"),
        _bn(rng, 32, "bn1"),
        Activation("relu", name="relu1"),
        Dense(_xavier(rng, (4 * 4 * 8, 32), F32), name="fc2"),
        _bn(rng, 128, "bn2"),
        Activation("relu", name="relu2"),
        Reshape((4, 4, 8), name="reshape"),
        Deconv(_xavier(rng, (2, 2, 8, 8), F32), stride=2, name="deconv1"),
        _bn(rng, 8, "bn3"),
        Deconv(_xavier(rng, (5, 5, 8, 8), F32), name="deconv2"),
        _bn(rng, 8, "bn4"),
        Activation("relu", name="relu4"),
        Deconv(_xavier(rng, (2, 2, 4, 8), F32), stride=2, name="deconv3"),
        _bn(rng, 4, "bn5"),
        Deconv(
            _xavier(rng, (5, 5, 1, 4), F32),
            np.full((1, 1, 1, 1), 0.05, F32),
            activation="tanh",
            name="deconv4",
        ),
    ]
    return KnetModel(layers, input_size=(16,), name="dcgan")


def vae(seed: int = 8):
    """Knet's conv VAE decoder (vae_conv_mnist.jl), small: dense-relu x2 (with biases),
    reshape (7, 7, 8), deconv4 4x4 stride 2 padding 1 - relu, 3x3 padding 1 - relu, 4x4
    stride 2 padding 1 - relu, 3x3 padding 1 - sigm; an 8-value latent in, 28x28x1 out."""
    from porting.model import Deconv, Dense, KnetModel, Reshape

    rng = np.random.default_rng(seed)

    def bias(n):
        return F32(0.2) * _julia_rand(rng, (n,), F32) - F32(0.1)

    def deconv(k, cout, cin, name, act, **kw):
        b = (F32(0.2) * _julia_rand(rng, (1, 1, cout, 1), F32) - F32(0.1)).astype(F32)
        return Deconv(_xavier(rng, (k, k, cout, cin), F32), b, activation=act, name=name, **kw)

    layers = [
        Dense(_xavier(rng, (32, 8), F32), bias(32), activation="relu", name="fc1"),
        Dense(_xavier(rng, (7 * 7 * 8, 32), F32), bias(392), activation="relu", name="fc2"),
        Reshape((7, 7, 8), name="reshape"),
        deconv(4, 8, 8, "deconv1", "relu", stride=2, padding=1),
        deconv(3, 8, 8, "deconv2", "relu", padding=1),
        deconv(4, 4, 8, "deconv3", "relu", stride=2, padding=1),
        deconv(3, 1, 4, "deconv4", "sigm", padding=1),
    ]
    return KnetModel(layers, input_size=(8,), name="vae_decoder")


def layers21(seed: int = 7):
    """A Layers21-style (MobileNet) model: Ops21 convs are cross-correlation (`mode=1`) without
    bias; an asymmetric `ZeroPad` before a stride-2 conv, a depthwise conv (groups = channels),
    batchnorm, relu6 (`relu(x; max_value=6)`), a pointwise conv, global mean pool, dense."""
    from porting.model import Activation, Conv, Dense, KnetModel, Mat, Pool, ZeroPad

    rng = np.random.default_rng(seed)
    layers = [
        ZeroPad(((0, 1), (0, 1)), name="pad"),
        Conv(_xavier(rng, (3, 3, 3, 8), F32), stride=2, mode=1, name="stem"),
        _bn(rng, 8, "stem_bn"),
        Activation("relu", max_value=6.0, name="stem_relu6"),
        Conv(_xavier(rng, (3, 3, 1, 8), F32), padding=1, groups=8, mode=1, name="dw"),
        _bn(rng, 8, "dw_bn"),
        Activation("relu", max_value=6.0, name="dw_relu6"),
        Conv(_xavier(rng, (1, 1, 8, 16), F32), mode=1, name="pw"),
        _bn(rng, 16, "pw_bn"),
        Activation("relu", max_value=6.0, name="pw_relu6"),
        Pool(window=8, mode=1, name="gap"),
        Mat(name="flat"),
        Dense(_xavier(rng, (10, 16), F32), np.zeros(10, F32), name="fc"),
    ]
    return KnetModel(layers, input_size=(16, 16, 3), name="layers21")


def example_input(model, seed: int = 5, batch: int = 2) -> np.ndarray:
    """Deterministic images in [0, 1), Julia size (input_size..., batch); token indices for a
    model that starts with an embedding (porting.examples.rnn_models)."""
    if model.layers[0].integer_input:
        from porting.examples.rnn_models import token_input

        return token_input(model, seed)
    rng = np.random.default_rng([seed, 1])
    return np.asfortranarray(_julia_rand(rng, (*model.input_size, batch), F32))


EXAMPLES = {
    "cnn-bn": (cnn_bn, "built-in example: Knet's cifar10 cnn_batchnorm model (small)"),
    "resnet": (resnet, "built-in example: a small CIFAR ResNet (identity + projection shortcuts)"),
    "dcgan": (dcgan, "built-in example: Knet's DCGAN generator (dense, reshape, deconv4, bn)"),
    "vae": (vae, "built-in example: Knet's conv VAE decoder (dense, reshape, deconv4)"),
    "layers21": (
        layers21,
        "built-in example: a Layers21-style MobileNet block (asymmetric ZeroPad, depthwise conv)",
    ),
}


def _add_rnn_examples() -> None:
    from porting.examples.rnn_models import RNN_EXAMPLES

    EXAMPLES.update(RNN_EXAMPLES)


_add_rnn_examples()


def _add_flux_examples() -> None:
    from porting.examples.flux import FLUX_EXAMPLES

    EXAMPLES.update(FLUX_EXAMPLES)


_add_flux_examples()
