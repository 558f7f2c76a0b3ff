"""Train the demo's base model and its RL-tuned twin, deterministically from a seed.

* Base: flow matching (SD3's parameterisation: x_s = (1 - s) x0 + s eps, the network predicts
  eps - x0) on the synthetic mixture, conditioned on the demo prompt.
* RL model: a LoRA on every linear layer, fine-tuned from the base by reward-weighted flow
  matching on the base model's own samples. The maximiser of E_p[r] - beta KL(p || p_base) is
  p_base exp(r / beta) / Z, and weighted maximum likelihood with weights exp(r / beta) on base
  samples targets exactly that distribution (reward-weighted regression). Here the weighting is
  done by resampling the base samples in proportion to exp(r / beta).
* Second RL model: a second LoRA, fine-tuned the same way from the same base for the second reward
  (1 for the blue cross, synthetic.REWARDS_2), from its own seed.

Both are saved the way ComfyUI loads them: the base and the merged RL model as diffusion-model
files (bare MMDiT keys, UNETLoader), the RL LoRAs in ComfyUI's generic LoRA format
(diffusion_model.<layer>.lora_up/lora_down/alpha, LoraLoaderModelOnly). The merged full model
and base + LoRA are the same network, so both forms sample the same images.

The same files on every x86-64 CPU. Float32 training is chaotic: a difference in the last bit of one
product grows, over the steps, into other weights and so into other figures. What a CPU changes in
torch's arithmetic is which code its libraries pick for it and how many threads split a sum, so
`make demo` trains in a process of its own (train_in_process, the command below) with all of that
pinned: PINNED_ENV before torch starts, pin_numerics() once it has. demo/cpu_check.py checks it.

    python -m demo.train --config '<TrainConfig as JSON>' --out DIR [--native] [--quiet]

writes DIR/{base,rl,lora,lora2}.safetensors and DIR/stats.json; --native leaves the numerics to the
CPU (for demo/cpu_check.py's comparison).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from demo import synthetic
from harness import host, tiny_sd3
from harness.weights import seeded_state_dict

# Set before torch starts (the training process's environment): each picks the code every x86-64 CPU runs alike.
PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "default",  # torch's own kernels: its portable build, not the AVX2 / AVX-512 ones
    "MKL_CBWR": "COMPATIBLE",  # MKL's matrix products: the branch that gives the same bits on every x86-64 CPU
    "OMP_NUM_THREADS": "1",  # one thread: no sum is split by the number of cores
    "MKL_NUM_THREADS": "1",
}
FILES = ("base", "rl", "lora", "lora2")  # what the training process writes: <name>.safetensors, and stats.json


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    base_steps: int = 1200
    base_batch: int = 128
    base_lr: float = 2e-3
    rl_samples: int = 2048  # base samples the reward is computed on
    rl_sample_steps: int = 24  # Euler steps to draw them
    rl_steps: int = 800
    rl_batch: int = 128
    rl_lr: float = 4e-3
    lora_rank: int = 8
    beta: float = 2.0 / 3.0  # KL coefficient: the RL model is the base tilted by exp(r / beta)

    def as_dict(self) -> dict:
        return asdict(self)


Progress = Callable[[str, int, int, float], None]


def _no_progress(stage: str, step: int, total: int, loss: float) -> None:
    pass


def _conditioning(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    context, pooled = synthetic.prompt_conditioning()
    return context.expand(batch, -1, -1), pooled.expand(batch, -1)


def predict(net: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The network's velocity (eps - x0) at noise level sigma, as ComfyUI calls it (t = 1000 sigma)."""
    context, pooled = _conditioning(x.shape[0])
    return net(x, sigma * 1000.0, context=context, y=pooled)


def _flow_matching_loss(net: torch.nn.Module, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x0.shape[0]
    # Logit-normal noise levels (as SD3 was trained), clamped away from the ends.
    sigma = torch.sigmoid(torch.randn(n, generator=gen)).clamp(1e-3, 1 - 1e-3)
    eps = torch.randn(x0.shape, generator=gen)
    s = sigma[:, None, None, None]
    x_s = (1 - s) * x0 + s * eps
    return torch.nn.functional.mse_loss(predict(net, x_s, sigma), eps - x0)


def _train(net, params, steps: int, lr: float, batches: Callable[[], torch.Tensor], gen, stage: str,
           progress: Progress) -> None:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    for step in range(steps):
        loss = _flow_matching_loss(net, batches(), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        progress(stage, step + 1, steps, loss.item())


@torch.no_grad()
def sample(net: torch.nn.Module, n: int, steps: int, gen: torch.Generator, batch: int = 512) -> torch.Tensor:
    """Euler on the flow ODE with SD3's shifted schedule (what KSampler euler/simple does)."""
    sigmas = tiny_sd3.flow_sigmas(steps)
    out = []
    for start in range(0, n, batch):
        x = torch.randn(min(batch, n - start), tiny_sd3.LATENT_CHANNELS, synthetic.SIZE, synthetic.SIZE, generator=gen)
        for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
            v = predict(net, x, s.expand(x.shape[0]))
            x = x + (s_next - s) * v
        out.append(x)
    return torch.cat(out)


def train_base(config: TrainConfig, progress: Progress = _no_progress) -> dict[str, torch.Tensor]:
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    net = tiny_sd3.build_mmdit()
    net.load_state_dict(seeded_state_dict(net, config.seed, std=0.02))
    net.train()
    _train(net, list(net.parameters()), config.base_steps, config.base_lr,
           lambda: synthetic.sample_data(config.base_batch, gen)[0], gen, "base", progress)
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


class _LoRA(torch.nn.Module):
    """weight + up @ down, as a parametrization of a Linear's weight."""

    def __init__(self, out_features: int, in_features: int, rank: int, gen: torch.Generator):
        super().__init__()
        self.down = torch.nn.Parameter(torch.randn(rank, in_features, generator=gen) / math.sqrt(in_features))
        self.up = torch.nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.up @ self.down


def train_rl(base_sd: dict[str, torch.Tensor], config: TrainConfig, progress: Progress = _no_progress,
             rewards_per_mode=synthetic.REWARDS, seed_offset: int = 1,
             stage: str = "rl") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """Fine-tune a LoRA towards a reward. Returns (full RL state dict, LoRA state dict, stats).

    rewards_per_mode: the reward of each pattern (reward 1 unless told). The run draws from seed
    config.seed + seed_offset: 1 for the first RL model, 2 for the second. stage: the progress label.
    """
    from torch.nn.utils import parametrize

    torch.manual_seed(config.seed + seed_offset)
    gen = torch.Generator().manual_seed(config.seed + seed_offset)
    net = tiny_sd3.build_mmdit()
    net.load_state_dict(base_sd)
    net.eval()
    base_samples = sample(net, config.rl_samples, config.rl_sample_steps, gen)
    rewards = synthetic.reward(base_samples, rewards_per_mode)
    weights = torch.exp(rewards / config.beta)
    stats = {"base_sample_reward": float(rewards.mean()), "base_sample_count": config.rl_samples}

    for p in net.parameters():
        p.requires_grad_(False)
    loras: dict[str, _LoRA] = {}
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Linear):
            lora = _LoRA(module.out_features, module.in_features, config.lora_rank, gen)
            parametrize.register_parametrization(module, "weight", lora)
            loras[name] = lora
    params = [p for lora in loras.values() for p in lora.parameters()]

    def batches() -> torch.Tensor:
        idx = torch.multinomial(weights, config.rl_batch, replacement=True, generator=gen)
        return base_samples[idx]

    net.train()
    _train(net, params, config.rl_steps, config.rl_lr, batches, gen, stage, progress)

    lora_sd: dict[str, torch.Tensor] = {}
    full_sd = {k: v.clone() for k, v in base_sd.items()}
    for name, lora in loras.items():
        up, down = lora.up.detach().clone(), lora.down.detach().clone()
        key = f"diffusion_model.{name}"
        lora_sd[f"{key}.lora_up.weight"] = up.contiguous()
        lora_sd[f"{key}.lora_down.weight"] = down.contiguous()
        lora_sd[f"{key}.alpha"] = torch.tensor(float(config.lora_rank))  # alpha / rank = 1
        full_sd[f"{name}.weight"] = (base_sd[f"{name}.weight"] + up @ down).contiguous()
    return full_sd, lora_sd, stats


# ---------------------------------------------------------------- the training process

def pin_numerics() -> None:
    """In the training process, once torch has started under PINNED_ENV: one thread, and no oneDNN (its
    convolutions are compiled at run time for the CPU at hand; without it they run through MKL)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "DEFAULT":
        raise RuntimeError(f"torch runs its {capability} kernels, not the portable ones: start this process with "
                           f"{PINNED_ENV} set (demo.train.train_in_process does).")
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False


def train_all(config: TrainConfig, progress: Progress = _no_progress) -> tuple[dict[str, dict], dict]:
    """The base and both RL models: ({name in FILES: state dict}, {"stats": ..., "stats_2": ...})."""
    base_sd = train_base(config, progress)
    full_sd, lora_sd, stats = train_rl(base_sd, config, progress)
    _, lora2_sd, stats_2 = train_rl(base_sd, config, progress, synthetic.REWARDS_2, seed_offset=2, stage="rl2")
    return dict(zip(FILES, (base_sd, full_sd, lora_sd, lora2_sd), strict=True)), {"stats": stats, "stats_2": stats_2}


def train_in_process(config: TrainConfig, out: Path, quiet: bool = False, native: bool = False,
                     env: dict[str, str] | None = None) -> dict:
    """Train in a fresh process with the numerics pinned (native=True: as the CPU has them), on this process's
    ComfyUI tree; env: more variables for it (demo/cpu_check.py's emulated CPUs). Returns stats.json."""
    extra = {**(env or {}), **({} if native else PINNED_ENV)}
    cmd = [sys.executable, "-m", "demo.train", "--config", json.dumps(config.as_dict()), "--out", str(out)]
    cmd += ["--native"] * native + ["--quiet"] * quiet
    subprocess.run(cmd, check=True, cwd=host.ROOT, env=host.child_env(extra))
    return json.loads((out / "stats.json").read_text())


def _progress_bars() -> Progress:
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}
    what = {"base": "training the base model (flow matching)",
            "rl": "fine-tuning RL LoRA 1, red disc (reward-weighted flow matching)",
            "rl2": "fine-tuning RL LoRA 2, blue cross (reward-weighted flow matching)"}

    def progress(stage: str, step: int, total: int, loss: float) -> None:
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=what[stage], unit="step", leave=True)
        bars[stage].update(1)
        bars[stage].set_postfix(loss=f"{loss:.4f}", refresh=False)
        if step == total:
            bars[stage].close()

    return progress


def main() -> None:
    import safetensors.torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the TrainConfig's fields as JSON")
    parser.add_argument("--out", type=Path, required=True, help="folder for the four files and stats.json")
    parser.add_argument("--native", action="store_true", help="leave the numerics to the CPU (no pins)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    host.use_comfy(cpu=True)
    if not args.native:
        pin_numerics()
    models, stats = train_all(TrainConfig(**json.loads(args.config)), _no_progress if args.quiet else _progress_bars())
    args.out.mkdir(parents=True, exist_ok=True)
    for name, state_dict in models.items():
        safetensors.torch.save_file(state_dict, args.out / f"{name}.safetensors")
    stats["numerics"] = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                         "mkldnn": torch.backends.mkldnn.enabled, "MKL_CBWR": os.environ.get("MKL_CBWR")}
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
