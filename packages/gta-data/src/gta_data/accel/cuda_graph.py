"""One training step run eagerly, through torch.compile, or as the replay of a captured CUDA graph.

At the small batches of offline RL and of the paper's denoiser a training step is launch-bound: hundreds of
small kernels (sampling, losses, backward, clipping, the optimizer, Polyak or EMA averaging), each too short
to hide its launch. Capturing the *whole* step once and replaying it launches them all at once.

A step can be captured when it never reads a value back to the host and reads everything that changes from
one step to the next from tensors it updates in place: parameters and optimizer state, a device step counter
(counter-based random streams), device tensors for scheduled values (learning rate, EMA weight) that the
caller refreshes before each call, and ``torch.Generator`` states registered with the graph (their offsets
then advance with every replay, so checkpoints of them stay exact). Then a replay computes what an eager call
would, and the step's eager path is the reference its equivalence tests compare against.

:class:`CudaGraphRunner` does the capture: a few eager warm-up calls on a side stream (cuBLAS workspaces,
compile caches; as ``torch.cuda.graphs`` advises), then one capture per *key*, then replays. Steps that differ
in what they launch (TD3's delayed actor update: with and without it) pass different keys; each key's graph
keeps its own memory pool, since the kinds alternate in an order that differs from the capture order.
:func:`compile_step` wraps a step in torch.compile with the settings the whole-step graphs need.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import torch

__all__ = ["CudaGraphRunner", "compile_step", "describe_error", "inductor_options"]

T = TypeVar("T")


class CudaGraphRunner(Generic[T]):
    """Calls ``fn`` eagerly (``cuda_graph`` False), or replays the CUDA graph of it captured after ``warmup``
    eager calls per key.

    ``runner(*args, graph_key=k, **kwargs)`` runs one step: eagerly, as a warm-up (an ordinary step, on a side
    stream), as the capture (recorded, then replayed once, so it is a step too), or as a replay. The arguments
    are passed to ``fn`` on the eager and capturing calls only: a replay repeats the captured call, so every
    call with one key must pass the same arguments (tensors read in place, not new ones). The returned value is
    the one the capture returned: its tensors are overwritten by every replay of that key (copy what must be
    kept). ``generators`` are registered with every graph; ``before_capture`` runs just before each capture
    (e.g. ``optimizer.zero_grad(set_to_none=True)`` so that gradients are allocated from the graph's pool).
    """

    def __init__(
        self,
        fn: Callable[..., T],
        *,
        cuda_graph: bool = False,
        device: torch.device | str | None = None,
        warmup: int = 3,
        generators: Sequence[torch.Generator] = (),
        before_capture: Callable[[], None] | None = None,
        error: type[Exception] = ValueError,
    ) -> None:
        self.device = torch.device(device) if device is not None else None
        if cuda_graph and (self.device is None or self.device.type != "cuda"):
            raise error("--cuda-graph needs a CUDA device")
        if warmup < 0:
            raise error(f"warmup must be >= 0, got {warmup}")
        self.fn, self.cuda_graph, self.warmup = fn, cuda_graph, warmup
        self.generators, self.before_capture = tuple(generators), before_capture
        self._eager_runs: dict[Hashable, int] = {}
        self._graphs: dict[Hashable, tuple[torch.cuda.CUDAGraph, T]] = {}

    def captured(self, keys: Iterable[Hashable] = (None,)) -> bool:
        """Whether no capture of these keys is left to do (always true without ``cuda_graph``). A capture
        records the work of every thread on the device, so other threads must launch no kernels until then."""
        return not self.cuda_graph or set(keys) <= self._graphs.keys()

    def __call__(self, *args: Any, graph_key: Hashable = None, **kwargs: Any) -> T:
        if not self.cuda_graph:
            return self.fn(*args, **kwargs)
        if graph_key in self._graphs:
            graph, out = self._graphs[graph_key]
            graph.replay()
            return out
        runs = self._eager_runs.get(graph_key, 0)
        if runs < self.warmup:
            current = torch.cuda.current_stream(self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                out = self.fn(*args, **kwargs)
            current.wait_stream(side)
            self._eager_runs[graph_key] = runs + 1
            return out
        if self.before_capture is not None:
            self.before_capture()
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        with torch.cuda.device(self.device), torch.cuda.graph(graph):
            out = self.fn(*args, **kwargs)
        self._graphs[graph_key] = (graph, out)
        graph.replay()  # capture only records the kernels: run this step now
        return out


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
    (``reorder_loops_by_dep_pair``) while fusing gta-rl's one-seed CQL and MCQ fullgraph steps, and turning it
    off costs the other steps nothing. ``autotune`` is the "max-autotune-no-cudagraphs" mode: Triton matmul
    templates (with fused bias/activation epilogues) timed against cuBLAS for every matmul shape, without
    inductor's own CUDA graphs, as :class:`CudaGraphRunner` captures the step itself."""
    options = {"loop_ordering_after_fusion": False}
    if autotune:
        options |= torch._inductor.list_mode_options("max-autotune-no-cudagraphs")
    return options


def compile_step(fn: Callable[..., T], *, backend: str = "inductor", fullgraph: bool = False,
                 autotune: bool = False, error: type[Exception] = ValueError) -> Callable[..., T]:
    """``fn`` through torch.compile with static shapes (a step's shapes never change).

    Without ``fullgraph`` dynamo breaks the step's graph at every ``torch.autograd.grad`` (the backward passes
    run between compiled pieces); ``fullgraph`` also traces those calls (``trace_autograd_ops``), so the whole
    step (sampling, losses, gradients, optimizer) is one inductor graph. ``autotune`` compiles with inductor's
    max-autotune (slow to compile: every matmul shape is benchmarked)."""
    if fullgraph and not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        raise error(f"--fullgraph needs a torch whose dynamo traces torch.autograd.grad "
                    f"(torch._dynamo.config.trace_autograd_ops); torch {torch.__version__} has none")
    if autotune and backend != "inductor":
        raise error(f"autotune is an inductor mode; the {backend!r} backend has none")
    compiled = torch.compile(fn, backend=backend, fullgraph=fullgraph, dynamic=False,
                             options=inductor_options(autotune) if backend == "inductor" else None)
    if not fullgraph:
        return compiled

    def traced(*args: Any, **kwargs: Any) -> T:  # the setting must hold while dynamo traces (first calls)
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            return compiled(*args, **kwargs)

    return traced
