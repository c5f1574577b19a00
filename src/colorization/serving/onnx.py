"""The colorizer as ONNX: one graph from the uint8 photo's L at the network's size to ab (annealed mean at a fixed T),
checked by onnxruntime against PyTorch in the tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from colorization.api import Colorizer
from colorization.color.targets import AB_SCALE
from colorization.errors import require_extra

ONNX_FILE = "model.onnx"
ONNX_OPSET = 17


class ONNXColorizer(nn.Module):
    """The colorizer as one graph: L (B, 1, H, W) in [0, 100] and T (a scalar) -> ab (B, 2, H, W).

    The network, the annealed mean at T (softmax(logits / T) times the bins; an l2 model's regression output
    ignores T) and the bilinear upsampling to H x W, as ``Colorizer.join`` does before adding L back."""

    def __init__(self, colorizer: Colorizer):
        super().__init__()
        self.net = colorizer.model.net
        self.classification = colorizer.classification
        self.register_buffer("bins", colorizer.model.bins.float().clone())

    def forward(self, L: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        out = self.net(L).float()
        if self.classification:
            probs = torch.softmax(out / temperature, dim=1)
            ab = torch.einsum("bqhw,qc->bchw", probs, self.bins)
        else:
            ab = AB_SCALE * out + 0 * temperature  # T kept as an input, so every export has the same signature
        return F.interpolate(ab, size=L.shape[-2:], mode="bilinear", align_corners=False)


def export_onnx(colorizer: Colorizer, path: Path, temperature: float | None = None) -> Path:
    """Write the whole colorizer as ONNX: inputs ``L`` (batch, 1, height, width) float32 in [0, 100] and
    ``temperature`` (a float32 scalar, default the model's T: the graph also holds it as an initializer, so a
    runtime may leave it out), output ``ab`` (batch, 2, height, width); batch, height and width are dynamic.

    torch's TorchScript-based exporter (``dynamo=False``): the torch.export one needs onnxscript, not a dependency."""
    require_extra("export", "onnx")
    import onnx
    from onnx import numpy_helper

    t = colorizer.temperature if temperature is None else float(temperature)
    graph = ONNXColorizer(colorizer).cpu().eval()
    example = (torch.full((1, 1, 64, 64), 50.0), torch.tensor(t, dtype=torch.float32))
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(
            graph,
            example,
            str(path),
            dynamo=False,
            input_names=["L", "temperature"],
            output_names=["ab"],
            dynamic_axes={"L": axes, "ab": axes},
            opset_version=ONNX_OPSET,
        )
    model = onnx.load(str(path))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 2  # ab: the exporter leaves the channels unnamed
    # an initializer named like a graph input is that input's default value (ONNX IR >= 4)
    model.graph.initializer.append(numpy_helper.from_array(example[1].numpy(), name="temperature"))
    model.doc_string = f"colorization: L (B, 1, H, W) in [0, 100], temperature (default {t:g}) -> ab (B, 2, H, W)"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
