"""In-process sampling through the real ComfyUI: tiny models loaded as UNETLoader would, KSampler, probes."""

from __future__ import annotations

import functools

import comfy.lora
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.sd
import comfy.utils
import torch

from . import tiny_models as tm
from .weights import max_diff, tolerance

__all__ = ["max_diff", "tolerance"]  # with the helpers below, what tests use as h.*

# Filled by the identity tests, printed at the end of the run by conftest.
IDENTITY_DIFFS: dict[str, float] = {}


@functools.cache
def _state_dict(family: str, seed: int, rl_seed: int | None) -> dict:
    base = tm.tiny_sd3_state_dict(seed) if family == "sd3" else tm.tiny_sd15_state_dict(seed)
    return tm.perturbed(base, rl_seed) if rl_seed is not None else base


def load_model(family: str = "sd3", seed: int = 0, rl_seed: int | None = None):
    """A freshly loaded ModelPatcher (its own module), as UNETLoader would give."""
    return comfy.sd.load_diffusion_model_state_dict(dict(_state_dict(family, seed, rl_seed)))


def with_lora(model, lora_seed: int = 7, strength: float = 1.0, match: str = "attn", like: dict | None = None):
    """model -> LoraLoaderModelOnly, the stock way: a clone sharing the module.

    The LoRA's size follows the model's weights, or those of `like` (the float weights of a quantized model).
    """
    sd = like if like is not None else {k: v for k, v in model.model.diffusion_model.state_dict().items()}
    lora = tm.lora_for(sd, lora_seed, match=match)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    patches = comfy.lora.load_lora(lora, key_map)
    patched = model.clone()
    loaded = patched.add_patches(patches, strength)
    assert loaded, "the test LoRA matched no key"
    return patched


def conds(family: str = "sd3", batch: int = 1, seed: int = 0):
    """(positive, negative) without a text encoder; the server tests' test node makes the same."""
    return tm.tiny_conds(family, batch, seed)


def latent(family: str = "sd3", batch: int = 1, size: int = 8) -> torch.Tensor:
    channels = tm.SD3_LATENT_CHANNELS if family == "sd3" else tm.SD15_LATENT_CHANNELS
    return torch.zeros(batch, channels, size, size)


def ksample(model, family="sd3", batch=1, cfg=3.0, sampler="euler", scheduler="simple", steps=4,
            seed=42, denoise_mask=None, latent_image=None, positive=None, negative=None):
    """What the KSampler node does (comfy.sample.sample), returning the latent."""
    if positive is None:
        positive, negative = conds(family, batch)
    latent_image = latent(family, batch) if latent_image is None else latent_image
    noise = comfy.sample.prepare_noise(latent_image, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative,
                               latent_image, denoise=1.0, noise_mask=denoise_mask, disable_pbar=True, seed=seed)


class ForwardCounter:
    """Counts model forwards run with one patcher's options (an APPLY_MODEL wrapper: every model runs it)."""

    def __init__(self):
        self.calls = 0
        self.rows = 0
        self.sigmas: list[float] = []  # the sigma of each forward
        self.schedule: list[float] = []  # the sampling run's schedule (sample_sigmas) as the forwards saw it

    def __call__(self, executor, *args, **kwargs):
        self.calls += 1
        self.rows += args[0].shape[0]
        self.sigmas.append(float(args[1].flatten()[0]))
        options = args[5] if len(args) > 5 else kwargs.get("transformer_options") or {}
        if options.get("sample_sigmas") is not None:
            self.schedule = [float(s) for s in options["sample_sigmas"].flatten()]
        return executor(*args, **kwargs)

    def attach(self, patcher):
        patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_counter", self)
        return patcher


def rlg_wrapper(patched):
    """The RLG wrapper a patched model carries (its terms, forms and options)."""
    (wrapper,) = [w for w in patched.get_all_wrappers(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH)
                  if type(w).__name__ == "RLGCondBatchWrapper"]
    return wrapper


def probe_predictions(model, xs: list[torch.Tensor], sigmas: torch.Tensor, positive, negative, cfg: float,
                      seed: int = 0) -> list[torch.Tensor]:
    """The guided denoised prediction at fixed (x_i, sigma_i) points, through the real sampler path.

    A KSAMPLER whose sampler function only evaluates the model: CFGGuider -> sampling_function
    -> calc_cond_batch (with every wrapper) -> CFG, at the states we choose, so two models can be
    compared step by step on identical inputs.
    """
    outputs: list[torch.Tensor] = []

    def probe(model_k, noise, sigmas_, extra_args=None, callback=None, disable=None):
        extra_args = {} if extra_args is None else extra_args
        for x, sigma in zip(xs, sigmas_[:-1], strict=True):
            outputs.append(model_k(x, sigma * x.new_ones([x.shape[0]]), **extra_args).clone())
        return noise

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    noise = torch.zeros_like(xs[0])
    guider.sample(noise, torch.zeros_like(xs[0]), comfy.samplers.KSAMPLER(probe), sigmas,
                  disable_pbar=True, seed=seed)
    return outputs


def schedule(model, steps: int = 4, scheduler: str = "simple") -> torch.Tensor:
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps).cpu()


def rlg(model, rl_model, rlg_scale, start_percent=0.0, end_percent=1.0, batched=None, schedule="constant",
        end_scale=None, rl_cfg=None, outside_window="RL model", rl_every=1):
    """RLG Apply's one RL model, through the pack's one entry (attach_rlg), with RLG Apply's defaults.

    The settings are the node's, as values: rl_cfg None is the sampler's cfg (the widget's 0).
    """
    from comfyui_rlg.nodes.apply import attach_rlg
    from comfyui_rlg.nodes.settings import RLBranchCFG, RLGSettings

    settings = RLGSettings(rlg_scale, start_percent, end_percent, schedule, end_scale, RLBranchCFG(rl_cfg),
                           outside_window, rl_every)
    return attach_rlg(model, [(rl_model, settings)], batched=batched)
