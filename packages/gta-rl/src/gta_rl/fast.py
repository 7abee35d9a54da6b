"""Runs training steps eagerly, through torch.compile, or as replays of captured CUDA graphs.

A step (batch sampling with the counter-based streams, every loss, every Adam update, Polyak
averaging, the step counter) never reads a value back to the host, so it can be captured whole. One
graph is captured per kind of step (with and without the actor update, for TD3's policy delay) after a
few eager warm-up steps, which are ordinary training steps. Metrics are accumulated on the device and
read back only every N steps (:class:`MetricAccumulator`).

``compile`` alone lets dynamo break the step's graph at every ``torch.autograd.grad`` (the losses' backward
passes run between compiled pieces); ``fullgraph`` also traces those calls
(``torch._dynamo.config.trace_autograd_ops``), so the whole step (sampling, losses, gradients, Adam, Polyak)
is one inductor graph. ``autotune`` (which implies ``compile``) compiles with inductor's max-autotune (slow
to compile: every matmul shape is benchmarked).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gta_rl.base import Agent
from gta_rl.buffer import OfflineData


def describe_error(exc: BaseException, limit: int = 500) -> str:
    """'Type: first line' of an exception, unwrapping torch's compiler wrappers (InductorError,
    BackendCompilerFailed: their ``inner_exception`` is the real failure, and the latter's own first line is
    only a "backend=... raised:" banner)."""
    inner = getattr(exc, "inner_exception", None) or exc
    first = next((ln.strip() for ln in str(inner).splitlines() if ln.strip()), "")
    return (f"{type(inner).__name__}: {first}" if first else type(inner).__name__)[:limit]


def inductor_options(autotune: bool = False) -> dict[str, bool]:
    """Inductor settings of a compiled step.

    Loop reordering after fusion is off: in torch 2.11 on CUDA it fails an assertion
    (``reorder_loops_by_dep_pair``) while fusing the one-seed CQL and MCQ fullgraph steps, and turning it off
    left TD3+BC's compiled step as fast (docs/benchmarks-log.md). ``autotune`` is the "max-autotune-no-cudagraphs" mode: Triton matmul templates
    (with fused bias/activation epilogues) timed against cuBLAS for every matmul shape, without inductor's own
    CUDA graphs, as the runner captures the step itself."""
    options = {"loop_ordering_after_fusion": False}
    if autotune:
        options |= torch._inductor.list_mode_options("max-autotune-no-cudagraphs")
    return options


class StepRunner:
    def __init__(
        self,
        agent: Agent,
        data: OfflineData,
        batch_size: int,
        *,
        compile: bool = False,
        cuda_graph: bool = False,
        compile_backend: str = "inductor",
        fullgraph: bool = False,
        autotune: bool = False,
        warmup: int = 3,
    ) -> None:
        if cuda_graph and agent.step.device.type != "cuda":
            raise ValueError("--cuda-graph needs a CUDA device")
        self.agent, self.data, self.batch_size = agent, data, batch_size
        self.fn = agent.train_step
        if fullgraph and not hasattr(torch._dynamo.config, "trace_autograd_ops"):
            raise ValueError(f"--fullgraph needs a torch whose dynamo traces torch.autograd.grad "
                             f"(torch._dynamo.config.trace_autograd_ops); torch {torch.__version__} has none")
        if autotune and compile_backend != "inductor":
            raise ValueError(f"autotune is an inductor mode; the {compile_backend!r} backend has none")
        if compile or fullgraph or autotune:
            compiled = torch.compile(agent.train_step, backend=compile_backend, fullgraph=fullgraph, dynamic=False,
                                     options=inductor_options(autotune) if compile_backend == "inductor" else None)
            self.fn = compiled
            if fullgraph:
                def traced(*args, **kwargs):  # the setting must hold while dynamo traces (first calls)
                    with torch._dynamo.config.patch(trace_autograd_ops=True):
                        return compiled(*args, **kwargs)

                self.fn = traced
        self.cuda_graph = cuda_graph
        self.warmup = warmup
        self._eager_runs: dict[bool, int] = {}
        self._graphs: dict[bool, tuple[torch.cuda.CUDAGraph, dict[str, Tensor]]] = {}

    @property
    def captured(self) -> bool:
        """No graph capture is left to do (always, without --cuda-graph). A capture records the work of
        every thread on the device, so other threads must not launch kernels until then."""
        kinds = {self.agent.is_actor_step(s) for s in range(max(1, self.agent.update_period))}
        return not self.cuda_graph or kinds <= self._graphs.keys()

    def __call__(self, step: int) -> dict[str, Tensor]:
        actor = self.agent.is_actor_step(step)
        if not self.cuda_graph:
            return self.fn(self.data, self.batch_size, actor_step=actor)
        if actor in self._graphs:
            graph, out = self._graphs[actor]
            graph.replay()
            return out
        runs = self._eager_runs.get(actor, 0)
        if runs < self.warmup:
            # Warm up on a side stream (cuBLAS workspaces, compile caches) as torch.cuda.graphs advises.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.fn(self.data, self.batch_size, actor_step=actor)
            torch.cuda.current_stream().wait_stream(side)
            self._eager_runs[actor] = runs + 1
            return out
        # Each graph keeps its own memory pool: the two kinds of step alternate in an order that differs
        # from the capture order, which pool sharing would not allow.
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(self.data, self.batch_size, actor_step=actor)
        self._graphs[actor] = (graph, out)
        graph.replay()  # capture only records the kernels: run this step now
        return out


class MetricAccumulator:
    """Sums per-seed metric tensors on the device; :meth:`pop` returns means as numpy and resets."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, Tensor]) -> None:
        for key, value in metrics.items():
            if key in self.sums:
                self.sums[key].add_(value)
            else:
                self.sums[key] = value.detach().clone().float()
            self.counts[key] = self.counts.get(key, 0) + 1

    def pop(self) -> dict[str, list[float]]:
        out = {k: (v / self.counts[k]).cpu().tolist() for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        return out
