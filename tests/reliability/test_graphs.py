"""Graphs with more than one RLG node: each node's output equals the node alone, bit for bit, and a fresh process."""

from __future__ import annotations

import pytest
import torch

from harness import reliability as rel
from harness.weights import max_diff, tolerance


@pytest.mark.server
@pytest.mark.parametrize("a, b", [("lora", "peft"), ("lora", "lora2_separate"), ("peft", "separate")])
def test_two_rlg_nodes_in_one_graph_each_equal_the_node_alone(server, a, b):
    seed = server.seed()

    def single(form, scale):
        if form == "lora2_separate":  # the MLP LoRA: a second, different RL LoRA
            prompt = rel.graph("lora", scale=scale, seed=seed, prefix="rel/two")
            prompt["2"]["inputs"]["lora_name"] = rel.LORA2
            return prompt
        return rel.graph(form, scale=scale, seed=seed, prefix="rel/two")

    srv = server.srv
    alone_a, alone_b = single(a, 1.5), single(b, 2.5)
    both = rel.two_rlg_graph(alone_a, alone_b)
    ticket = server.refs.submit(both)
    together = srv.latents(rel.run_ok(srv, both))
    by_itself = {"7a": srv.latents(rel.run_ok(srv, alone_a))["7"], "7b": srv.latents(rel.run_ok(srv, alone_b))["7"]}
    assert torch.equal(together["7a"], by_itself["7a"]) and torch.equal(together["7b"], by_itself["7b"]), (
        max_diff(together, by_itself))
    want = server.refs.result(ticket)
    assert max_diff(together, want) <= tolerance(want)
    assert max_diff({"x": together["7a"]}, {"x": together["7b"]}) > 1e-3
    rel.RESULTS["two_nodes"].append(f"{a} + {b}")
