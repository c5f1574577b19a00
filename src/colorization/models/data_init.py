"""Data-dependent initialization (Kraehenbuehl et al., ICLR 2016), as the authors used it (PAPER.md).

``kmeans_init`` is the within-layer step of their ``magic_init.py -t kmeans -nit 10`` (``model.init=kmeans``): layer
by layer, in the order the forward pass reaches them, on a few batches of training images,
1. the layer's weights are k-means centres of its whitened input patches: patches centred, PCA-whitened on the
   top min(out, fan-in) components (eigenvalues below 1e-6 dropped, 1 / sqrt(s + 1e-3) otherwise), each whitened
   patch scaled to unit length, k-means with one centre per output channel (scikit-learn's MiniBatchKMeans, batch
   10 x the centres, as magic_init), the centres mapped back through the whitening and scaled so each filter's
   response to the patches has standard deviation 1;
2. then each output channel is scaled to standard deviation 1 over the batches and its bias set so that its mean
   is ``bias`` (0.1, magic_init's ``-b`` default).
magic_init gathers the patches as responses to random filters (an oversampled random basis); taking the patches
themselves (``unfold``) is the same computation without the random basis. Grouped convolutions are initialized
group by group. A transposed convolution (ECCV16's ``model8.0``), which magic_init does not support, gets
Gaussian weights (magic_init's ``elwise``) and step 2. BatchNorm layers normalize with the batch statistics, as in
training (magic_init ran the Caffe net in its TRAIN phase); their running statistics are left untouched. Patches
are subsampled to at most ``max_bytes`` per layer (magic_init's ``--mem-limit``, 500 MB).

``calibrate_gradient_ratio`` is the between-layer step (magic_init ``-cs``), which the authors applied only after
training, to the net they probed (``train_alexnet/postprocess_model.sh``): every layer is rescaled (weights and
biases, keeping the function up to a positive factor per layer for ReLU nets) until the ratio of gradient to
weight magnitude is the same in every layer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

INIT_METHODS = ("default", "kmeans")
PARAMETRIC = (nn.Conv2d, nn.ConvTranspose2d)
MEM_LIMIT = 500 * 2**20  # magic_init's --mem-limit default: 500 MB of patches per layer
EIGEN_FLOOR, WHITEN_EPS = 1e-6, 1e-3  # magic_init's initializeWeight


class _Stop(Exception):
    """Raised by a hook to end a forward pass at the layer being initialized."""


def parametric_layers(net: nn.Module, sample: torch.Tensor) -> list[nn.Module]:
    """The convolutions of ``net`` in the order its forward pass calls them (one pass on ``sample``)."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: order.append(m)) for m in net.modules() if isinstance(m, PARAMETRIC)
    ]
    try:
        with torch.no_grad():
            net(sample)
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(order))  # first call order, each once


def at_layer(net: nn.Module, layer: nn.Module, x: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], None]):
    """Run ``net`` on ``x`` until ``layer`` has run; call ``fn(layer_input, layer_output)``; stop there."""

    def hook(module, inputs, output):
        fn(inputs[0], output)
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        net(x)
    except _Stop:
        pass
    finally:
        handle.remove()


def whitened_kmeans_filters(patches: torch.Tensor, n_out: int, seed: int = 0) -> torch.Tensor:
    """(N, fan_in) float64 patches -> (n_out, fan_in) filters: k-means centres of the whitened patches (step 1)."""
    from sklearn.cluster import MiniBatchKMeans

    n, fan_in = patches.shape
    generator = torch.Generator().manual_seed(seed)
    if n < n_out:  # magic_init: "Not enough data ... using elwise"
        return torch.randn(n_out, fan_in, generator=generator, dtype=torch.float64).to(patches.device)
    D = patches - patches.mean(0, keepdim=True)
    s, V = torch.linalg.eigh(D.T @ D)  # ascending
    r = min(n_out, fan_in)
    s, V = s[-r:], V[:, -r:]
    scale = torch.where(s >= EIGEN_FLOOR, 1 / torch.sqrt(s.clamp_min(0) + WHITEN_EPS), torch.zeros_like(s))
    whiten = V * scale  # D @ whiten: the whitened patches (N, r)
    wD = D @ whiten
    norms = wD.norm(dim=1, keepdim=True)
    wD = (wD / norms.clamp_min(1e-30))[norms[:, 0] > 0]
    if len(wD) < n_out:
        return torch.randn(n_out, fan_in, generator=generator, dtype=torch.float64).to(patches.device)
    km = MiniBatchKMeans(n_clusters=n_out, batch_size=10 * n_out, n_init=3, random_state=seed)
    centres = torch.from_numpy(km.fit(wD.cpu().numpy()).cluster_centers_).to(D)
    filters = centres @ whiten.T  # back to patch space: the response to a patch is its whitened dot product
    return filters / (D @ filters.T).std(0, correction=0).clamp_min(1e-30)[:, None]  # numpy std, as magic_init


def _patches(layer: nn.Conv2d, x: torch.Tensor, rows: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``rows`` random input patches of ``layer`` from x, as (rows, in_channels * kh * kw) float64."""
    picked = []
    for chunk in x.split(4):  # unfold a few images at a time: the patch matrix of a batch can be GBs
        cols = F.unfold(chunk.float(), layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        take = min(len(cols), math.ceil(rows * len(chunk) / len(x)))
        index = torch.randperm(len(cols), generator=generator)[:take].to(cols.device)
        picked.append(cols.index_select(0, index).double())
    return torch.cat(picked)


@torch.no_grad()
def _set_weights(net: nn.Module, layer: nn.Module, batches: Sequence[torch.Tensor], max_bytes: int, seed: int):
    """Step 1 for one layer (the bias is zeroed; step 2 sets it)."""
    generator = torch.Generator().manual_seed(seed)
    if layer.bias is not None:
        layer.bias.zero_()
    if isinstance(layer, nn.ConvTranspose2d):
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator).to(layer.weight))
        return
    fan_in = layer.weight[0].numel() * layer.groups
    rows_per_batch = max(1, max_bytes // (4 * fan_in) // len(batches))  # as magic_init counts (float32)
    collected: list[torch.Tensor] = []
    for x in batches:
        at_layer(net, layer, x, lambda inp, out: collected.append(_patches(layer, inp, rows_per_batch, generator)))
    patches = torch.cat(collected)
    groups, out_per_group = layer.groups, layer.out_channels // layer.groups
    width = patches.shape[1] // groups
    filters = [
        whitened_kmeans_filters(patches[:, g * width : (g + 1) * width], out_per_group, seed + g) for g in range(groups)
    ]
    layer.weight.copy_(torch.cat(filters).reshape(layer.weight.shape).to(layer.weight))


@torch.no_grad()
def _output_statistics(net: nn.Module, layer: nn.Module, batches: Sequence[torch.Tensor]):
    """Per output channel mean and (population) standard deviation of ``layer``'s output over the batches."""
    total = {"n": 0, "sum": 0.0, "sq": 0.0}

    def accumulate(inp, out):
        y = out.double().transpose(0, 1).flatten(1)  # (C, everything else)
        total["n"] += y.shape[1]
        total["sum"] = total["sum"] + y.sum(1)
        total["sq"] = total["sq"] + y.square().sum(1)

    for x in batches:
        at_layer(net, layer, x, accumulate)
    mean = total["sum"] / total["n"]
    std = (total["sq"] / total["n"] - mean.square()).clamp_min(0).sqrt()
    return mean, std


@torch.no_grad()
def _normalize(net: nn.Module, layer: nn.Module, batches: Sequence[torch.Tensor], bias: float) -> None:
    """Step 2: each output channel to standard deviation 1 and mean ``bias`` over the batches."""
    mean, std = _output_statistics(net, layer, batches)
    std = std.clamp_min(1e-12)
    channel_axis = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
    shape = [1] * layer.weight.ndim
    shape[channel_axis] = -1
    layer.weight.div_(std.view(shape).to(layer.weight))
    if layer.bias is not None:
        layer.bias.copy_((bias - mean / std).to(layer.bias))  # the bias was 0 while the statistics were taken


def _norm_buffers(net: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: buffer.clone()
        for module_name, module in net.named_modules()
        if isinstance(module, nn.modules.batchnorm._NormBase)
        for name, buffer in ((f"{module_name}.{n}", b) for n, b in module.named_buffers(recurse=False))
    }


def kmeans_init(
    net: nn.Module,
    batches: Sequence[torch.Tensor],
    bias: float = 0.1,
    max_bytes: int = MEM_LIMIT,
    seed: int = 0,
) -> list[dict]:
    """Initialize every convolution of ``net`` from ``batches`` of its input (L, (B, 1, H, W)); see the module
    docstring. Returns one record per layer (name, kind, output mean and std after initialization)."""
    names = {m: n for n, m in net.named_modules()}
    saved_norms, was_training = _norm_buffers(net), net.training
    net.train()  # BatchNorm with batch statistics, as in training
    records = []
    try:
        for i, layer in enumerate(parametric_layers(net, batches[0][:1])):
            _set_weights(net, layer, batches, max_bytes, seed + 1000 * i)
            _normalize(net, layer, batches, bias)
            mean, std = _output_statistics(net, layer, batches)
            kind = "gaussian" if isinstance(layer, nn.ConvTranspose2d) else "kmeans"
            records.append({"layer": names[layer], "kind": kind, "mean": mean.mean().item(), "std": std.mean().item()})
            log.info("model.init=kmeans: %s (%s): output mean %.3f, std %.3f", *records[-1].values())
    finally:
        net.train(was_training)
        state = net.state_dict()
        with torch.no_grad():
            for name, value in saved_norms.items():
                state[name].copy_(value)  # the init's forward passes must not count as training statistics
    return records


# ---- the between-layer step (after training, for probed nets) ---------------------------------------------
def _mean_abs_inputs(net: nn.Module, layers: list[nn.Module], x: torch.Tensor) -> list[float]:
    means: dict[nn.Module, float] = {}

    def record(module, inputs, output) -> None:  # returns None: a hook's return value replaces the output
        means.setdefault(module, inputs[0].abs().mean().item())

    hooks = [layer.register_forward_hook(record) for layer in layers]
    try:
        net(x)
    finally:
        for h in hooks:
            h.remove()
    return [means[layer] for layer in layers]


def _gradient_ratios(net: nn.Module, layers: list[nn.Module], x: torch.Tensor, generator) -> tuple[list[float], float]:
    """sqrt(mean(dW^2) / mean(W^2)) per layer for a random (normal) gradient at the output, and the output's std."""
    for layer in layers:
        layer.weight.grad = None
    with torch.enable_grad():
        out = net(x)
        top = torch.randn(out.shape, generator=generator).to(out)
        out.backward(top)
    ratios = [
        math.sqrt(layer.weight.grad.square().mean().item() / layer.weight.square().mean().item()) for layer in layers
    ]
    std = out.detach().transpose(0, 1).flatten(1).std(1).mean().item()
    return ratios, std


def calibrate_gradient_ratio(net: nn.Module, x: torch.Tensor, iterations: int = 10, seed: int = 0) -> list[float]:
    """magic_init's ``calibrateGradientRatio`` on ``net`` (a function of ``x`` with a tensor output): rescale every
    convolution so that all layers have the same gradient-to-weight ratio. Returns the final ratios."""
    generator = torch.Generator().manual_seed(seed)
    layers = parametric_layers(net, x[:1])
    params = [p for layer in layers for p in layer.parameters()]
    requires = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        with torch.no_grad():
            bottom = _mean_abs_inputs(net, layers, x)
            ratios, output_std = _gradient_ratios(net, layers, x, generator)
            for _ in range(iterations):
                target = math.exp(np.mean(np.log(ratios))) * output_std ** (1 / len(layers))
                if all(abs(math.log(r) / math.log(target) - 1) < 0.01 for r in ratios):
                    break
                for i, layer in enumerate(layers):
                    current = _mean_abs_inputs(net, layers, x)[i]  # the layers below have been rescaled
                    if layer.bias is not None:
                        layer.bias.mul_(current / bottom[i])
                    bottom[i] = current
                    scale = math.sqrt(ratios[i] / target)
                    for p in layer.parameters():
                        p.mul_(scale)
                ratios, output_std = _gradient_ratios(net, layers, x, generator)
    finally:
        for p, r in zip(params, requires, strict=True):
            p.requires_grad_(r)
            p.grad = None
    return ratios
