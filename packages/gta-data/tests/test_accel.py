"""The shared execution layer (gta_data.accel): device names, the whole-step CUDA-graph runner, compiled steps.

The CPU tests cover the eager paths and the checks; the graph replays themselves are checked against eager
steps on a GPU (``gpu`` marker, skipped without CUDA)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from gta_data.accel.cuda_graph import CudaGraphRunner, compile_step, describe_error  # noqa: E402
from gta_data.accel.devices import resolve_device, strict_fp32  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


class ToyError(ValueError):
    pass


def test_resolve_device_names_and_errors():
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == auto and resolve_device("auto") == auto
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ToyError, match=r"unknown device 'nosuch' \(auto, cpu, cuda, cuda:N\)"):
        resolve_device("nosuch", ToyError)
    with pytest.raises(ToyError, match="unknown device"):
        resolve_device("", ToyError)
    if not torch.cuda.is_available():
        with pytest.raises(ToyError, match="requested but CUDA is not available"):
            resolve_device("cuda:0", ToyError)
    else:
        with pytest.raises(ToyError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}", ToyError)


class Toy:
    """A step that reads everything that changes from device tensors and a generator: a noisy update of
    ``w`` with a learning rate refreshed before each step, an extra term on the steps of key True."""

    def __init__(self, device: str) -> None:
        self.w = torch.zeros(5, device=device)
        self.lr = torch.zeros((), device=device)
        self.count = torch.zeros((), dtype=torch.int64, device=device)
        self.gen = torch.Generator(device=device).manual_seed(7)

    def step(self, extra: bool) -> torch.Tensor:
        noise = torch.randn(5, generator=self.gen, device=self.w.device)
        self.w.add_(self.lr * noise)
        if extra:
            self.w.mul_(0.5)
        self.count.add_(1)
        return self.w.sum() * 1.0


def test_strict_fp32_turns_tf32_off_and_restores_the_settings_even_after_an_error():
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,  # noqa: E731
                     torch.backends.cudnn.deterministic)
    before = flags()
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = True, False  # torch's defaults
    try:
        with strict_fp32():
            assert flags() == (False, False, True)
        assert flags() == (before[0], True, False)
        with pytest.raises(RuntimeError), strict_fp32():
            raise RuntimeError("inside")
        assert flags() == (before[0], True, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = before


def test_runner_without_graphs_calls_the_step():
    toy = Toy("cpu")
    runner = CudaGraphRunner(toy.step)
    assert runner.captured([True, False])
    outs = [float(runner(i % 3 == 0, graph_key=i % 3 == 0)) for i in range(4)]
    ref = Toy("cpu")
    assert outs == [float(ref.step(i % 3 == 0)) for i in range(4)]
    assert int(toy.count) == 4


def test_runner_checks():
    with pytest.raises(ToyError, match="--cuda-graph needs a CUDA device"):
        CudaGraphRunner(lambda: None, cuda_graph=True, device="cpu", error=ToyError)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        CudaGraphRunner(lambda: None, cuda_graph=True)
    with pytest.raises(ValueError, match="warmup"):
        CudaGraphRunner(lambda: None, warmup=-1)


def test_compile_step_matches_the_step_and_checks_its_options():
    x = torch.linspace(-1, 1, 7, requires_grad=True)

    def step(scale: float) -> torch.Tensor:
        (grad,) = torch.autograd.grad((x.sin() * scale).sum(), x)
        return grad

    for fullgraph in (False, True):
        compiled = compile_step(step, backend="eager", fullgraph=fullgraph)
        torch.testing.assert_close(compiled(2.0), step(2.0), rtol=0, atol=0)
    with pytest.raises(ToyError, match="autotune is an inductor mode"):
        compile_step(step, backend="eager", autotune=True, error=ToyError)


def test_describe_error_unwraps_compiler_wrappers():
    class Wrapper(RuntimeError):
        def __init__(self, inner):
            super().__init__("backend='inductor' raised:\nlong story")
            self.inner_exception = inner

    assert describe_error(Wrapper(TypeError("x\nmore"))) == "TypeError: x"
    assert describe_error(ValueError("")) == "ValueError"
    assert describe_error(ValueError("a" * 50), limit=20) == "ValueError: " + "a" * 8


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("warmup", [0, 3])
def test_graph_replays_equal_eager_steps_on_gpu(warmup):
    keys = [False, True, False, False, True, True, False, False, True, False]
    eager, graphed = Toy("cuda"), Toy("cuda")
    captures = []
    runner = CudaGraphRunner(graphed.step, cuda_graph=True, device="cuda", warmup=warmup,
                             generators=[graphed.gen], before_capture=lambda: captures.append(1))
    for i, key in enumerate(keys):
        for toy in (eager, graphed):
            toy.lr.fill_(0.1 * (i + 1))  # a scheduled value, refreshed before every step
        want = eager.step(key).clone()
        got = runner(key, graph_key=key).clone()
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert runner.captured([False, True]) and len(captures) == 2
    torch.testing.assert_close(graphed.w, eager.w, rtol=0, atol=0)
    assert int(graphed.count) == int(eager.count) == len(keys)
    # The generator advanced with every replay: the next draws agree (checkpoints of its state are exact).
    assert torch.equal(graphed.gen.get_state(), eager.gen.get_state())
