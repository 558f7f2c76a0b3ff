"""GGUF files of the tiny models, written with the registry's `gguf` package, loaded through ComfyUI-GGUF itself.

A file is written the way ComfyUI-GGUF's tools/convert.py writes one: each tensor of two or more dimensions and more
than 1,024 values in the chosen format, the rest (norms, biases, small tensors) in F32, and tensors whose last
dimension does not fit the format's block kept F32 too. SD3's pos_embed stays F32, as in the published files (the
loader's shape handling fails on a quantized one). The models are then loaded by the pack's own UnetLoaderGGUF /
UnetLoaderGGUFAdvanced (the tiny SD3 is one ComfyUI detects), so they come back as GGUFModelPatcher with GGMLOps
layers, dequant_dtype and patch_on_device included.

dequantized(): the same weights as plain float tensors (what the GGUF file holds, dequantized by the `gguf` package),
the reference a GGUF model must match.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import thirdparty

# What the registry's gguf package writes and ComfyUI-GGUF reads back (checked in tests/test_gguf.py).
FORMATS = ("F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
KEEP_F32 = ("pos_embed",)


def _qtype(name: str):
    import gguf

    return gguf.GGMLQuantizationType[name]


def tensor_format(key: str, value: torch.Tensor, fmt: str) -> str:
    """The format a tensor is stored in, in a file of format `fmt`."""
    import gguf

    block = gguf.GGML_QUANT_SIZES[_qtype(fmt)][0]
    if value.ndim < 2 or value.numel() <= 1024 or value.shape[-1] % block or any(k in key for k in KEEP_F32):
        return "F32"
    return fmt


def write(path: Path, state_dict: dict[str, torch.Tensor], fmt: str, arch: str = "sd3") -> Path:
    """A GGUF file of state_dict in format fmt (see the module)."""
    import gguf

    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in state_dict.items():
        qtype = _qtype(tensor_format(key, value, fmt))
        writer.add_tensor(key, gguf.quants.quantize(value.float().numpy(), qtype), raw_dtype=qtype)
    writer.write_header_to_file(path=str(path))
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def dequantized(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors as float32 values, dequantized by the gguf package (not by the pack under test)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for tensor in reader.tensors:
        shape = tuple(int(v) for v in reversed(tensor.shape))
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        out[tensor.name] = torch.from_numpy(values.copy()).float().reshape(shape)
    return out


def load(path: Path, dequant_dtype: str = "default", patch_on_device: bool = False):
    """The file through ComfyUI-GGUF's own loader node (UnetLoaderGGUFAdvanced), as a workflow loads it.

    The file must lie in a folder ComfyUI lists for diffusion models (register_folder).
    """
    nodes = thirdparty.submodule(thirdparty.GGUF, "nodes")
    (model,) = nodes.UnetLoaderGGUFAdvanced().load_unet(Path(path).name, dequant_dtype=dequant_dtype,
                                                        patch_dtype="default", patch_on_device=patch_on_device)
    return model


def register_folder(folder: Path) -> None:
    """Make ComfyUI list the files of `folder` as diffusion models (and so ComfyUI-GGUF's unet_gguf)."""
    import folder_paths

    if str(folder) not in folder_paths.get_folder_paths("diffusion_models"):
        folder_paths.add_model_folder_path("diffusion_models", str(folder))
