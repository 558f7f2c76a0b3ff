"""RLG queue refusal: the node that carries a queue-time refusal of an RLG node (nodes/graph_checks.py).

ComfyUI ignores an exception raised in an on-prompt handler, so a refusal found there is made a validation error:
the server's queue-time step (server_hooks.refuse_graphs) puts this node in the refused RLG node's place, under the
same node id, with the reason as its one input. Validation then fails on that id: the front-end marks the user's RLG
node and shows the reason, and an HTTP client gets it in node_errors; nothing runs. Hidden from the node library
(deprecated), as nobody adds it by hand.
"""

from __future__ import annotations

from comfy_api.latest import io

from .errors import RLGInputError

NODE_ID = "RLGQueueRefusal"


class RLGQueueRefusal(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="RLG (refused when queued)",
            category="model_patches/rlg",
            description="Stands in for an RLG node whose graph RLG refuses when the prompt is queued; never runs.",
            inputs=[io.String.Input("refusal", tooltip="Why RLG refuses this graph, and what to do instead.")],
            outputs=[io.Model.Output()],
            is_deprecated=True,
        )

    @classmethod
    def validate_inputs(cls, refusal=None):
        return str(refusal or "RLG refused this graph when it was queued.")

    @classmethod
    def execute(cls, refusal) -> io.NodeOutput:
        raise RLGInputError(str(refusal))


NODES = [RLGQueueRefusal]
