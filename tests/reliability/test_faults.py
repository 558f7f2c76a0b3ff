"""Faults a long-lived server meets while RLG samples: POST /interrupt mid-prompt, an RL model whose forward raises.
After each, the server keeps serving, the base it caches is untouched, and the next prompts equal a fresh process.
(POST /free is in test_cache.py: what it frees depends on the cache.)"""

from __future__ import annotations

import pytest

from harness import reliability as rel
from harness.server import messages

server_test = pytest.mark.server


@server_test
@pytest.mark.parametrize("form", ["separate", "lora", "peft"])
def test_interrupt_mid_prompt(server, form):
    """POST /interrupt while an RLG prompt samples: the server stays up and loses nothing."""
    long = rel.graph(form, scale=2.0, steps=10000, seed=server.seed(), prefix="rel/interrupted")
    prompt_id, step = server.srv.interrupt_during(long, node="6", after_steps=5)
    entry = server.srv.wait(forget=True, prompt_id=prompt_id)
    interrupted = messages(entry, "execution_interrupted")
    assert interrupted and interrupted[0]["node_type"] == "KSampler", entry["status"]
    assert server.srv.proc.poll() is None
    server.next_prompts_are_right(form, f"after an interrupt at step {step} ({form})")
    rel.RESULTS["faults"].append(f"interrupt at step {step}/10000 ({form})")


@server_test
@pytest.mark.parametrize("form", ["separate", "lora"])
def test_rl_forward_that_raises_leaves_the_base_untouched(server, form):
    prompt = rel.graph(form, scale=1.5, seed=server.seed(), prefix="rel/raises")
    prompt["11"] = {"class_type": "RLGTestFailingModel", "inputs": {"model": ["2", 0], "fail_at": 3}}
    prompt["3"]["inputs"]["rl_model"] = ["11", 0]
    entry = server.srv.run(forget=True, prompt=prompt)
    err = messages(entry, "execution_error")
    assert entry["status"]["status_str"] == "error" and err, entry["status"]
    assert err[0]["node_type"] == "KSampler" and "fails on purpose" in err[0]["exception_message"], err[0]
    server.next_prompts_are_right(form, f"after the RL model's forward raised ({form})")
    rel.RESULTS["faults"].append(f"RL forward raised mid-sampling ({form})")
