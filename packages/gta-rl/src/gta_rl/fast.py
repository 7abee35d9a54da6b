"""The offline RL training step run eagerly, through torch.compile, or as replays of captured CUDA graphs
(gta-data's shared :mod:`gta_data.accel.cuda_graph`), and its metrics accumulated on the device.

A step (batch sampling with the counter-based streams, every loss, every Adam update, Polyak averaging, the
step counter) never reads a value back to the host, so it can be captured whole. One graph is captured per
kind of step (with and without the actor update, for TD3's policy delay) after a few eager warm-up steps,
which are ordinary training steps. Metrics are accumulated on the device and read back only every N steps
(:class:`MetricAccumulator`). ``compile`` lets dynamo break the graph at the backward passes; ``fullgraph``
traces them too, so the whole step is one inductor graph; ``autotune`` (which implies ``compile``) compiles
with inductor's max-autotune (:func:`gta_data.accel.cuda_graph.compile_step`).
"""

from __future__ import annotations

from torch import Tensor

from gta_data.accel.cuda_graph import CudaGraphRunner, compile_step
from gta_rl.base import Agent
from gta_rl.buffer import OfflineData


class StepRunner:
    """``runner(step)`` runs training step ``step`` of ``agent`` on ``data`` and returns its per-seed metrics
    (tensors that a CUDA graph's next replay overwrites: accumulate, do not keep)."""

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
        self.agent, self.data, self.batch_size = agent, data, batch_size
        self.fn = agent.train_step
        if compile or fullgraph or autotune:
            self.fn = compile_step(agent.train_step, backend=compile_backend, fullgraph=fullgraph, autotune=autotune)
        self.graphs = CudaGraphRunner(self.fn, cuda_graph=cuda_graph, device=agent.step.device, warmup=warmup)

    @property
    def captured(self) -> bool:
        """No graph capture is left to do (always, without --cuda-graph). A capture records the work of
        every thread on the device, so other threads must not launch kernels until then."""
        return self.graphs.captured({self.agent.is_actor_step(s) for s in range(max(1, self.agent.update_period))})

    def __call__(self, step: int) -> dict[str, Tensor]:
        actor = self.agent.is_actor_step(step)  # the two kinds of step launch different kernels: a graph each
        return self.graphs(self.data, self.batch_size, actor_step=actor, graph_key=actor)


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
