"""gta-pixel's DrQ+BC and latent pipeline against an independent float64 transcription of V-D4RL's code.

The classes and functions in the first part of this file are conglu1997/v-d4rl (commit 1ceaf22) ``drqbc/drqv2.py``,
``drqbc/utils.py`` and ``drqbc/numpy_replay_buffer.py`` copied line for line; the only edits (marked ``# edit``)
take the random draws as arguments instead of drawing them (the same draws are then given to ours), compute in
float64, and return a few internal values with the metrics. Each test builds the reference from the same
episodes and weights as ours and compares batches, loss terms, gradients (through recording SGD optimizers, so
every parameter's gradient is compared, not only its Adam step), parameters after updates and actions.
"""

from __future__ import annotations

import re
from collections import deque
from enum import IntEnum
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import distributions as pyd

from gta_data import TrajectoryStore, write_store
from gta_pixel.drqbc import DrQBC, DrQBCConfig, DrQBCNets, draw_noise
from gta_pixel.drqbc_fast import DrQBCStack
from gta_pixel.encode import frame_stacks, latent_transitions, latents
from gta_pixel.finetune import ACTOR_NOISE_STREAM, ROW_STREAM, TARGET_NOISE_STREAM, HeadTuner, LatentReplay
from gta_pixel.pixelstore import PixelData
from gta_pixel.replay import PixelReplay

DTYPE = torch.float64
TINY = DrQBCConfig(hidden_dim=32, batch_size=12, std_duration=20)  # std moves within a few updates
SIZE, ACT = 20, 3


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny CPU updates: more threads only contend


# =================================================================================================
# V-D4RL, transcribed (conglu1997/v-d4rl @1ceaf22)
# =================================================================================================

# -- drqbc/utils.py ---------------------------------------------------------------------------------


def soft_update_params(net, target_net, tau):  # utils.py:46-49
    for param, target_param in zip(net.parameters(), target_net.parameters(), strict=True):  # edit: strict
        target_param.data.copy_(tau * param.data +
                                (1 - tau) * target_param.data)


class TruncatedNormal(pyd.Normal):  # utils.py:109-130
    def __init__(self, loc, scale, low=-1.0, high=1.0, eps=1e-6):
        super().__init__(loc, scale, validate_args=False)
        self.low = low
        self.high = high
        self.eps = eps

    def _clamp(self, x):
        clamped_x = torch.clamp(x, self.low + self.eps, self.high - self.eps)
        x = x - x.detach() + clamped_x.detach()
        return x

    def sample(self, clip=None, sample_shape=torch.Size(), *, normal=None):  # edit: the N(0, 1) draws given
        shape = self._extended_shape(sample_shape)
        eps = normal.to(self.loc.dtype).reshape(shape).clone()  # edit: was _standard_normal(shape, ...)
        eps *= self.scale
        if clip is not None:
            eps = torch.clamp(eps, -clip, clip)
        x = self.loc + eps
        return self._clamp(x)


def schedule(schdl, step):  # utils.py:133-153 (the linear case)
    try:
        return float(schdl)
    except ValueError:
        match = re.match(r'linear\((.+),(.+),(.+)\)', schdl)
        if match:
            init, final, duration = [float(g) for g in match.groups()]
            mix = np.clip(step / duration, 0.0, 1.0)
            return (1.0 - mix) * init + mix * final
    raise NotImplementedError(schdl)


class StepType(IntEnum):  # dm_env.StepType
    FIRST = 0
    MID = 1
    LAST = 2


class ExtendedTimeStep(NamedTuple):  # dmc.py:37-54
    step_type: Any
    reward: Any
    discount: Any
    observation: Any
    action: Any

    def first(self):
        return self.step_type == StepType.FIRST


step_type_lookup = {0: StepType.FIRST, 1: StepType.MID, 2: StepType.LAST}  # utils.py:156-160


def add_offline_data_to_buffer(offline_data: dict, replay_buffer, framestack: int = 3):  # utils.py:182-197
    offline_data_length = offline_data['reward'].shape[0]
    for v in offline_data.values():
        assert v.shape[0] == offline_data_length
    for idx in range(offline_data_length):
        time_step = get_timestep_from_idx(offline_data, idx)
        if not time_step.first():
            # stacked_frames: bound at the episode's first row (below)
            stacked_frames.append(time_step.observation)  # noqa: F821
            time_step_stack = time_step._replace(observation=np.concatenate(stacked_frames, axis=0))  # noqa: F821
            replay_buffer.add(time_step_stack)
        else:
            stacked_frames = deque(maxlen=framestack)
            while len(stacked_frames) < framestack:
                stacked_frames.append(time_step.observation)
            time_step_stack = time_step._replace(observation=np.concatenate(stacked_frames, axis=0))
            replay_buffer.add(time_step_stack)


def get_timestep_from_idx(offline_data: dict, idx: int):  # utils.py:200-207
    return ExtendedTimeStep(
        step_type=step_type_lookup[offline_data['step_type'][idx]],
        reward=offline_data['reward'][idx],
        observation=offline_data['observation'][idx],
        discount=offline_data['discount'][idx],
        action=offline_data['action'][idx]
    )


# -- drqbc/numpy_replay_buffer.py ---------------------------------------------------------------------


class EfficientReplayBuffer:  # numpy_replay_buffer.py:19-118
    '''Fast + efficient replay buffer implementation in numpy.'''

    def __init__(self, buffer_size, batch_size, nstep, discount, frame_stack,
                 data_specs=None, sarsa=False):
        self.buffer_size = buffer_size
        self.data_dict = {}
        self.index = -1
        self.traj_index = 0
        self.frame_stack = frame_stack
        self._recorded_frames = frame_stack + 1
        self.batch_size = batch_size
        self.nstep = nstep
        self.discount = discount
        self.full = False
        self.discount_vec = np.power(discount, np.arange(nstep))  # n_step - first dim should broadcast
        self.next_dis = discount ** nstep
        self.sarsa = sarsa

    def _initial_setup(self, time_step):
        self.index = 0
        self.obs_shape = list(time_step.observation.shape)
        self.ims_channels = self.obs_shape[0] // self.frame_stack
        self.act_shape = time_step.action.shape

        self.obs = np.zeros([self.buffer_size, self.ims_channels, *self.obs_shape[1:]], dtype=np.uint8)
        self.act = np.zeros([self.buffer_size, *self.act_shape], dtype=np.float32)
        self.rew = np.zeros([self.buffer_size], dtype=np.float32)
        self.dis = np.zeros([self.buffer_size], dtype=np.float32)
        self.valid = np.zeros([self.buffer_size], dtype=np.bool_)

    def add_data_point(self, time_step):
        first = time_step.first()
        latest_obs = time_step.observation[-self.ims_channels:]
        if first:
            end_index = self.index + self.frame_stack
            end_invalid = end_index + self.frame_stack + 1
            if end_invalid > self.buffer_size:
                if end_index > self.buffer_size:
                    end_index = end_index % self.buffer_size
                    self.obs[self.index:self.buffer_size] = latest_obs
                    self.obs[0:end_index] = latest_obs
                    self.full = True
                else:
                    self.obs[self.index:end_index] = latest_obs
                end_invalid = end_invalid % self.buffer_size
                self.valid[self.index:self.buffer_size] = False
                self.valid[0:end_invalid] = False
            else:
                self.obs[self.index:end_index] = latest_obs
                self.valid[self.index:end_invalid] = False
            self.index = end_index
            self.traj_index = 1
        else:
            np.copyto(self.obs[self.index], latest_obs)  # Check most recent image
            np.copyto(self.act[self.index], time_step.action)
            self.rew[self.index] = time_step.reward
            self.dis[self.index] = time_step.discount
            self.valid[(self.index + self.frame_stack) % self.buffer_size] = False
            if self.traj_index >= self.nstep:
                self.valid[(self.index - self.nstep + 1) % self.buffer_size] = True
            self.index += 1
            self.traj_index += 1
            if self.index == self.buffer_size:
                self.index = 0
                self.full = True

    def add(self, time_step):
        if self.index == -1:
            self._initial_setup(time_step)
        self.add_data_point(time_step)

    def gather_nstep_indices(self, indices):
        n_samples = indices.shape[0]
        all_gather_ranges = np.stack([np.arange(indices[i] - self.frame_stack, indices[i] + self.nstep)
                                      for i in range(n_samples)], axis=0) % self.buffer_size
        gather_ranges = all_gather_ranges[:, self.frame_stack:]  # bs x nstep
        obs_gather_ranges = all_gather_ranges[:, :self.frame_stack]
        nobs_gather_ranges = all_gather_ranges[:, -self.frame_stack:]

        all_rewards = self.rew[gather_ranges]

        # Could implement below operation as a matmul in pytorch for marginal additional speed improvement
        rew = np.sum(all_rewards * self.discount_vec, axis=1, keepdims=True)

        obs = np.reshape(self.obs[obs_gather_ranges], [n_samples, *self.obs_shape])
        nobs = np.reshape(self.obs[nobs_gather_ranges], [n_samples, *self.obs_shape])

        act = self.act[indices]
        dis = np.expand_dims(self.next_dis * self.dis[nobs_gather_ranges[:, -1]], axis=-1)

        return (obs, act, rew, dis, nobs)


# -- drqbc/drqv2.py -----------------------------------------------------------------------------------


class RandomShiftsAug(nn.Module):  # drqv2.py:14-45
    def __init__(self, pad=4):
        super().__init__()
        self.pad = pad

    def forward(self, x, shift_draws):  # edit: the integer shifts [n, 2] given
        n, c, h, w = x.size()
        assert h == w
        padding = tuple([self.pad] * 4)
        x = F.pad(x, padding, 'replicate')
        eps = 1.0 / (h + 2 * self.pad)
        arange = torch.linspace(-1.0 + eps,
                                1.0 - eps,
                                h + 2 * self.pad,
                                device=x.device,
                                dtype=x.dtype)[:h]
        arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
        base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2)
        base_grid = base_grid.unsqueeze(0).repeat(n, 1, 1, 1)

        shift = shift_draws.to(x.dtype).reshape(n, 1, 1, 2).clone()  # edit: was torch.randint(0, 2 pad + 1, ...)
        shift *= 2.0 / (h + 2 * self.pad)

        grid = base_grid + shift
        return F.grid_sample(x,
                             grid,
                             padding_mode='zeros',
                             align_corners=False)


class Encoder(nn.Module):  # drqv2.py:56-75 (edit: repr_dim computed for small test frames)
    def __init__(self, obs_shape):
        super().__init__()

        assert len(obs_shape) == 3
        self.repr_dim = 32 * ((obs_shape[1] - 3) // 2 + 1 - 6) ** 2  # 32 * 35 * 35 at 84 px

        self.convnet = nn.Sequential(nn.Conv2d(obs_shape[0], 32, 3, stride=2),
                                     nn.ReLU(), nn.Conv2d(32, 32, 3, stride=1),
                                     nn.ReLU(), nn.Conv2d(32, 32, 3, stride=1),
                                     nn.ReLU(), nn.Conv2d(32, 32, 3, stride=1),
                                     nn.ReLU())

    def forward(self, obs):
        obs = obs / 255.0 - 0.5
        h = self.convnet(obs)
        h = h.view(h.shape[0], -1)
        return h


class Actor(nn.Module):  # drqv2.py:78-101
    def __init__(self, repr_dim, action_shape, feature_dim, hidden_dim):
        super().__init__()

        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim),
                                   nn.LayerNorm(feature_dim), nn.Tanh())

        self.policy = nn.Sequential(nn.Linear(feature_dim, hidden_dim),
                                    nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, hidden_dim),
                                    nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, action_shape[0]))

    def forward(self, obs, std):
        h = self.trunk(obs)

        mu = self.policy(h)
        mu = torch.tanh(mu)
        std = torch.ones_like(mu) * std

        dist = TruncatedNormal(mu, std)
        return dist


class Critic(nn.Module):  # drqv2.py:104-129
    def __init__(self, repr_dim, action_shape, feature_dim, hidden_dim):
        super().__init__()

        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim),
                                   nn.LayerNorm(feature_dim), nn.Tanh())

        self.Q1 = nn.Sequential(
            nn.Linear(feature_dim + action_shape[0], hidden_dim),
            nn.ReLU(inplace=True), nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True), nn.Linear(hidden_dim, 1))

        self.Q2 = nn.Sequential(
            nn.Linear(feature_dim + action_shape[0], hidden_dim),
            nn.ReLU(inplace=True), nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True), nn.Linear(hidden_dim, 1))

    def forward(self, obs, action):
        h = self.trunk(obs)
        h_action = torch.cat([h, action], dim=-1)
        q1 = self.Q1(h_action)
        q2 = self.Q2(h_action)

        return q1, q2


class DrQV2Agent:  # drqv2.py:132-292, offline (offline=True, use_bc=True), the settings of cfgs/
    def __init__(self, obs_shape, action_shape, device, lr, feature_dim,
                 hidden_dim, critic_target_tau, num_expl_steps,
                 update_every_steps, stddev_schedule, stddev_clip, use_tb,
                 offline=False, bc_weight=2.5, augmentation=RandomShiftsAug(pad=4),
                 use_bc=True, optimizer=torch.optim.Adam, dtype=DTYPE):  # edit: optimizer class, dtype
        self.device = device
        self.dtype = dtype
        self.critic_target_tau = critic_target_tau
        self.update_every_steps = update_every_steps
        self.use_tb = use_tb
        self.num_expl_steps = num_expl_steps
        self.stddev_schedule = stddev_schedule
        self.stddev_clip = stddev_clip
        self.offline = offline
        self.bc_weight = bc_weight
        self.use_bc = use_bc

        # models
        self.encoder = Encoder(obs_shape).to(device, dtype)  # edit: float64 (or V-D4RL's float32)
        self.actor = Actor(self.encoder.repr_dim, action_shape, feature_dim,
                           hidden_dim).to(device, dtype)

        self.critic = Critic(self.encoder.repr_dim, action_shape, feature_dim,
                             hidden_dim).to(device, dtype)
        self.critic_target = Critic(self.encoder.repr_dim, action_shape,
                                    feature_dim, hidden_dim).to(device, dtype)
        self.critic_target.load_state_dict(self.critic.state_dict())

        # optimizers
        self.encoder_opt = optimizer(self.encoder.parameters(), lr=lr)
        self.actor_opt = optimizer(self.actor.parameters(), lr=lr)
        self.critic_opt = optimizer(self.critic.parameters(), lr=lr)

        # data augmentation
        self.aug = augmentation

    def act(self, obs, step, eval_mode):
        obs = torch.as_tensor(obs, device=self.device)
        obs = self.encoder(obs.unsqueeze(0).to(self.dtype))  # edit: dtype (uint8 / 255.0 is float32)
        stddev = schedule(self.stddev_schedule, step)
        dist = self.actor(obs, stddev)
        assert eval_mode
        action = dist.mean
        return action.cpu().numpy()[0]

    def update_critic(self, obs, action, reward, discount, next_obs, step, draws):
        metrics = dict()

        with torch.no_grad():
            stddev = schedule(self.stddev_schedule, step)
            dist = self.actor(next_obs, stddev)
            next_action = dist.sample(clip=self.stddev_clip, normal=draws["target_eps"])
            target_Q1, target_Q2 = self.critic_target(next_obs, next_action)
            target_V = torch.min(target_Q1, target_Q2)
            target_Q = reward.to(self.dtype) + (discount.to(self.dtype) * target_V)  # edit: was reward.float()

        Q1, Q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(Q1, target_Q) + F.mse_loss(Q2, target_Q)

        metrics['critic_loss'] = critic_loss.item()
        metrics['critic_q1'] = Q1.mean().item()

        # optimize encoder and critic
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()

        return metrics

    def update_actor(self, obs, step, behavioural_action, draws):
        metrics = dict()

        stddev = schedule(self.stddev_schedule, step)
        dist = self.actor(obs, stddev)
        action = dist.sample(clip=self.stddev_clip, normal=draws["actor_eps"])
        Q1, Q2 = self.critic(obs, action)
        Q = torch.min(Q1, Q2)

        actor_policy_improvement_loss = -Q.mean()

        actor_loss = actor_policy_improvement_loss

        # offline BC Loss
        if self.offline:
            actor_bc_loss = F.mse_loss(action, behavioural_action)
            # Eq. 5 of arXiv:2106.06860
            lam = self.bc_weight / Q.detach().abs().mean()
            if self.use_bc:
                actor_loss = actor_policy_improvement_loss * lam + actor_bc_loss
            else:
                actor_loss = actor_policy_improvement_loss * lam

        # optimize actor
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        metrics['actor_loss'] = actor_loss.item()  # edit: the whole loss (V-D4RL logs its first term)
        metrics['actor_bc_loss'] = actor_bc_loss.item()
        metrics['lambda'] = lam.item()  # edit: logged
        return metrics

    def update(self, batch, step, draws):  # edit: the batch and this update's draws given
        metrics = dict()

        if step % self.update_every_steps != 0:
            return metrics

        obs, action, reward, discount, next_obs = (torch.as_tensor(x, device=self.device) for x in batch)

        # augment
        obs = self.aug(obs.to(self.dtype), draws["obs_shifts"])  # edit: dtype (was obs.float())
        next_obs = self.aug(next_obs.to(self.dtype), draws["next_shifts"])
        # encode
        obs = self.encoder(obs)
        with torch.no_grad():
            next_obs = self.encoder(next_obs)

        # update critic
        metrics.update(
            self.update_critic(obs, action.to(self.dtype), reward, discount, next_obs, step, draws))

        # update actor
        metrics.update(self.update_actor(obs.detach(), step, action.detach().to(self.dtype), draws))

        # update critic target
        soft_update_params(self.critic, self.critic_target,
                           self.critic_target_tau)

        return metrics


def vd4rl_agent(nets: DrQBCNets, obs_shape, optimizer=torch.optim.Adam, dtype=DTYPE) -> DrQV2Agent:
    """V-D4RL's agent with the offline settings (cfgs/config.yaml, algo/drqv2.yaml, task/offline_dmc.yaml, with
    the test's small widths and schedule) and the weights of ``nets``."""
    agent = DrQV2Agent(obs_shape, (ACT,), "cpu", lr=TINY.lr, feature_dim=TINY.feature_dim,
                       hidden_dim=TINY.hidden_dim, critic_target_tau=0.01, num_expl_steps=2000,
                       update_every_steps=2, stddev_schedule=f"linear(1.0,0.1,{TINY.std_duration})",
                       stddev_clip=0.3, use_tb=True, offline=True, bc_weight=2.5,
                       augmentation=RandomShiftsAug(pad=4), use_bc=True, optimizer=optimizer, dtype=dtype)
    state = {k: v.to(dtype) for k, v in nets.state_dict().items()}
    for name in ("encoder", "actor", "critic", "critic_target"):
        getattr(agent, name).load_state_dict({k[len(name) + 1:]: v for k, v in state.items()
                                              if k.startswith(name + ".")})
    return agent


# =================================================================================================
# Test data and recording optimizers
# =================================================================================================


def episodes_data(lengths=(7, 2, 9, 5, 1, 6), seed=0) -> PixelData:
    """Episodes in the pixel store's convention (random frames, distinct actions, one terminal)."""
    rng = np.random.default_rng(seed)
    n, e = sum(lengths), len(lengths)
    ends = np.cumsum(lengths).astype(np.int64)
    discounts = np.ones(n, np.float32)
    discounts[ends[2] - 1] = 0.0  # episode 2 ends in a terminal
    terminals = discounts == 0.0
    return PixelData(frames=rng.integers(0, 256, (n + e, 3, SIZE, SIZE), dtype=np.uint8),
                     actions=rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
                     rewards=rng.normal(size=n).astype(np.float32), discounts=discounts, terminals=terminals,
                     timeouts=~terminals & np.isin(np.arange(n), ends - 1), episode_ends=ends)


def hdf5_rows(data: PixelData) -> dict[str, np.ndarray]:
    """The same episodes as V-D4RL's hdf5 rows (dm_env convention: a step's action, reward and discount on the
    row of the frame it produced; row 0 of an episode is its reset frame, action 0, reward 0, discount 1)."""
    rows = {k: [] for k in ("observation", "action", "reward", "discount", "step_type")}
    start = 0
    for e, end in enumerate(data.episode_ends):
        frames = data.frames[start + e:end + e + 1]
        for t, frame in enumerate(frames):
            rows["observation"].append(frame)
            rows["action"].append(np.zeros(ACT, np.float32) if t == 0 else data.actions[start + t - 1])
            rows["reward"].append(0.0 if t == 0 else data.rewards[start + t - 1])
            rows["discount"].append(1.0 if t == 0 else data.discounts[start + t - 1])
            rows["step_type"].append(0 if t == 0 else (2 if t == len(frames) - 1 else 1))
        start = end
    return {k: np.asarray(v, dtype={"reward": np.float32, "discount": np.float32, "step_type": np.int64}.get(k))
            for k, v in rows.items()}


def vd4rl_buffer(data: PixelData, nstep: int) -> EfficientReplayBuffer:
    buf = EfficientReplayBuffer(1000, TINY.batch_size, nstep, TINY.discount, TINY.frame_stack)
    add_offline_data_to_buffer(hdf5_rows(data), buf, framestack=TINY.frame_stack)
    return buf


def buffer_index_of_rows(buf: EfficientReplayBuffer, replay: PixelReplay) -> np.ndarray:
    """[M] the buffer position holding each of our replay rows (matched by the step's distinct action)."""
    where = {buf.act[i].tobytes(): i for i in np.flatnonzero(buf.valid)}
    return np.array([where[a.tobytes()] for a in replay.actions.numpy()])


class RecordingSGD(torch.optim.SGD):
    """torch.optim.SGD that keeps each step's gradients (V-D4RL's and the readable DrQBC's optimizers)."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.grads = []

    def step(self, closure=None):
        self.grads.append([None if p.grad is None else p.grad.detach().clone()
                           for g in self.param_groups for p in g["params"]])
        return super().step(closure)


class RecordingStackedSGD:
    """The same for the stacked agents' optimizers (``params``, ``step(grads)``)."""

    def __init__(self, params, lr):
        self.params, self.lr, self.grads = list(params), lr, []

    @torch.no_grad()
    def step(self, grads):
        grads = [g.detach().clone() for g in grads]
        self.grads.append(grads)
        torch._foreach_add_(self.params, grads, alpha=-self.lr)


def assert_grads_close(ours: list[torch.Tensor], ref: list[torch.Tensor], names: list[str], rel=2e-5) -> None:
    """Float32 gradients against the reference's, each within ``rel`` of its tensor's largest entry."""
    assert len(ours) == len(ref) == len(names)
    for g, r, name in zip(ours, ref, names, strict=True):
        assert g.shape == r.shape, name
        scale = r.abs().max().item()
        assert scale > 0, f"{name}: no gradient reaches it"
        err = (g.to(r.dtype) - r).abs().max().item()
        assert err <= rel * scale, f"{name}: max error {err:.3g} of {scale:.3g}"


def assert_adam_close(ours: dict, ref: dict, steps: int) -> None:
    """Adam's first steps move each weight by ~lr sign(g): a float32 and a float64 gradient of sign-ambiguous
    size (|g| ~ eps) may move a rare element differently by O(lr); everything else agrees to 2e-5."""
    for name, value in ref.items():
        diff = (ours[name].to(value.dtype) - value).abs()
        assert (diff > 2e-5).double().mean() < 2e-3 and diff.max() <= 2 * steps * TINY.lr, name


# =================================================================================================
# Tests
# =================================================================================================


@pytest.mark.parametrize("nstep", [1, 3])
def test_replay_rows_are_vd4rl_buffer_samples(nstep):
    """Every row PixelReplay samples is a transition V-D4RL's buffer samples and vice versa, with the same
    stacked frames (uint8, exact), action, n-step reward, bootstrap discount and next stacked frames."""
    data = episodes_data()
    buf = vd4rl_buffer(data, nstep)
    replay = PixelReplay.from_data(data, frame_stack=3, nstep=nstep, discount=TINY.discount)
    valid = np.flatnonzero(buf.valid)
    assert replay.num_rows == len(valid) == sum(max(0, n - nstep + 1) for n in np.diff(data.episode_ends,
                                                                                      prepend=0))
    index = buffer_index_of_rows(buf, replay)
    assert sorted(index.tolist()) == valid.tolist()  # a bijection onto V-D4RL's sampleable positions
    obs, act, rew, dis, nobs = buf.gather_nstep_indices(index)
    batch = replay.batch(torch.arange(replay.num_rows))
    np.testing.assert_array_equal(batch.obs.numpy(), obs)
    np.testing.assert_array_equal(batch.next_obs.numpy(), nobs)
    np.testing.assert_array_equal(batch.actions.numpy(), act)
    np.testing.assert_allclose(batch.rewards.numpy(), rew[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(batch.discounts.numpy(), dis[:, 0], rtol=1e-6)
    assert (dis == 0).any() and (dis > 0).any()  # the terminal's discount reached a bootstrap


def test_std_schedule_is_vd4rls_at_its_loop_step():
    """V-D4RL calls update() at every loop step and updates at even ones (update_every_steps 2): update k runs at
    loop step 2k, where schedule('linear(1.0,0.1,250000)') is read."""
    cfg = DrQBCConfig()
    loop_steps = [s for s in range(0, 600_001, 250) if s % 2 == 0]
    for k, step in enumerate(loop_steps[::7]):
        update = step // 2
        assert cfg.stddev(update) == pytest.approx(schedule("linear(1.0,0.1,250000)", step), abs=1e-12), k
        assert cfg.stddev_tensor(torch.tensor(update)).item() == pytest.approx(cfg.stddev(update), abs=1e-6)


def _setup(seeds=(3,)):
    data = episodes_data()
    replay = PixelReplay.from_data(data, frame_stack=3, nstep=TINY.nstep, discount=TINY.discount)
    buf = vd4rl_buffer(data, TINY.nstep)
    return replay, buffer_index_of_rows(buf, replay), buf


def _draws(noise, k):
    return {"obs_shifts": noise.obs_shifts[k], "next_shifts": noise.next_shifts[k],
            "target_eps": noise.target_eps[k], "actor_eps": noise.actor_eps[k]}


GROUPS = {"critic": ("critic_opt", "critic"), "encoder": ("encoder_opt", "encoder"), "actor": ("actor_opt", "actor")}


def _one_sgd_update(seed, agent, replay, index, buf, noise, k, dtype, lr):
    """V-D4RL's update at loop step 6 (our update 3) with recording SGD optimizers, from seed ``seed``'s initial
    networks; ``agent``: that seed's DrQBC, updated too (its optimizers swapped likewise), or None."""
    nets = agent.nets if agent is not None else DrQBCNets(replay.obs_shape, ACT, TINY, seed=seed)
    ref = vd4rl_agent(nets, replay.obs_shape, optimizer=RecordingSGD, dtype=dtype)
    for attr in ("encoder_opt", "actor_opt", "critic_opt"):
        setattr(ref, attr, RecordingSGD(getattr(ref, attr).param_groups[0]["params"], lr))
        if agent is not None:
            setattr(agent, attr, RecordingSGD(getattr(agent, attr).param_groups[0]["params"], lr))
    rows = noise.rows[k]
    ref_metrics = ref.update(buf.gather_nstep_indices(index[rows.numpy()]), 6, _draws(noise, k))
    our_metrics = None if agent is None else agent.update(replay.batch(rows), noise.seed(k), update=3)
    return ref, ref_metrics, our_metrics


METRIC_NAMES = (("critic_loss", "critic_loss"), ("actor_loss", "actor_loss"), ("bc_mse", "actor_bc_loss"),
                ("lambda", "lambda"), ("q_mean", "critic_q1"))


def _assert_same_update(ref, ref_metrics, metrics, grads, target_state):
    """Metrics, the gradients each optimizer received (``grads``: group -> list) and the Polyak target."""
    for name, ref_name in METRIC_NAMES:
        assert metrics[name] == pytest.approx(ref_metrics[ref_name], rel=1e-5, abs=1e-6), name
    for group, (opt, module) in GROUPS.items():
        ref_grads = getattr(ref, opt).grads
        assert len(ref_grads) == 1  # one step each: the encoder's too (critic loss only; the actor's is detached)
        assert_grads_close(grads[group], ref_grads[0], [n for n, _ in getattr(ref, module).named_parameters()])
    for name, value in ref.critic_target.state_dict().items():
        torch.testing.assert_close(target_state[name].to(value.dtype), value, atol=1e-6, rtol=1e-5)


def test_one_update_matches_vd4rl_gradient_for_gradient():
    """One update at V-D4RL's loop step 6 (std 0.73) against its code: the gradients each optimizer receives
    (critic: critic loss; encoder: the critic loss only; actor: BC + lambda-scaled min Q of the noisy clipped
    sample, on detached features, through the critic after its step), the metrics and the Polyak target.

    The readable DrQBC shifts frames as V-D4RL does (float32 ``grid_sample``, which is off the whole-pixel value
    by up to ~1e-3 grey levels) and is held to V-D4RL computing as it does, in float32; the stacked path gathers
    exact whole-pixel shifts and is held to the float64 reference (float32's grid_sample error is enough to flip
    a ReLU whose input is ~1e-7 and change an encoder gradient by percents, either way)."""
    replay, index, buf = _setup()
    seeds = [3, 8]
    lr = 0.05  # large enough that the actor's step sees a visibly different critic
    stack = DrQBCStack(replay.obs_shape, ACT, seeds, TINY)
    stack.step.fill_(3)  # update 3 = V-D4RL's loop step 6
    stack.optimizers = {k: RecordingStackedSGD(o.params, lr) for k, o in stack.optimizers.items()}
    noise = draw_noise(stack.rng(), replay.num_rows, TINY.batch_size, ACT, TINY.pad)
    stack_metrics = stack.train_step(replay, TINY.batch_size)
    for k, seed in enumerate(seeds):
        ours = DrQBC(replay.obs_shape, ACT, TINY, seed=seed)
        ref32, ref32_metrics, metrics = _one_sgd_update(seed, ours, replay, index, buf, noise, k, torch.float32, lr)
        _assert_same_update(ref32, ref32_metrics, metrics, {g: getattr(ours, o).grads[0] for g, (o, _) in
                                                            GROUPS.items()},
                            {k2[len("critic_target."):]: v for k2, v in ours.nets.state_dict().items()
                             if k2.startswith("critic_target.")})
        ref64, ref64_metrics, _ = _one_sgd_update(seed, None, replay, index, buf, noise, k, torch.float64, lr)
        _assert_same_update(ref64, ref64_metrics, {n: v[k].item() for n, v in stack_metrics.items()},
                            {g: [x[k] for x in stack.optimizers[g].grads[0]] for g in GROUPS},
                            {k2[len("critic_target."):]: v for k2, v in stack.seed_state(k).items()
                             if k2.startswith("critic_target.")})
        for _, ref_name in METRIC_NAMES:  # and V-D4RL's float32 arithmetic agrees with its float64
            assert ref32_metrics[ref_name] == pytest.approx(ref64_metrics[ref_name], rel=1e-5, abs=1e-6)


def test_adam_updates_match_vd4rls_training_loop():
    """Three updates with Adam, V-D4RL driven by its offline loop (update() at every loop step 0..5, acting at the
    even ones), ours by update index: the metrics of each update and every parameter at the end."""
    replay, index, buf = _setup()
    seed = 5
    ours = DrQBC(replay.obs_shape, ACT, TINY, seed=seed)
    stack = DrQBCStack(replay.obs_shape, ACT, [seed], TINY)
    ref = vd4rl_agent(ours.nets, replay.obs_shape)
    for loop_step in range(6):
        noise = draw_noise(stack.rng(), replay.num_rows, TINY.batch_size, ACT, TINY.pad)
        batch = buf.gather_nstep_indices(index[noise.rows[0].numpy()])
        ref_metrics = ref.update(batch, loop_step, _draws(noise, 0))
        if loop_step % 2:
            assert ref_metrics == {}
            continue
        update = loop_step // 2
        our_metrics = ours.update(replay.batch(noise.rows[0]), noise.seed(0), update=update)
        stack_metrics = stack.train_step(replay, TINY.batch_size)
        for name, ref_name in (("critic_loss", "critic_loss"), ("actor_loss", "actor_loss"),
                               ("bc_mse", "actor_bc_loss"), ("lambda", "lambda")):
            assert our_metrics[name] == pytest.approx(ref_metrics[ref_name], rel=2e-3, abs=1e-4), (update, name)
            assert stack_metrics[name][0].item() == pytest.approx(ref_metrics[ref_name], rel=2e-3, abs=1e-4)
    ref_state = {f"{m}.{k}": v for m in ("encoder", "actor", "critic", "critic_target")
                 for k, v in getattr(ref, m).state_dict().items()}
    assert_adam_close(ours.nets.state_dict(), ref_state, steps=3)
    assert_adam_close(stack.seed_state(0), ref_state, steps=3)
    # Evaluation: V-D4RL's act(eval_mode=True) is the TruncatedNormal's mean on the unshifted stack.
    obs = replay.batch(torch.arange(4)).obs
    with torch.no_grad():  # train.py:103
        ref_actions = np.stack([ref.act(o, 6, eval_mode=True) for o in obs])
    np.testing.assert_allclose(ours.act(obs).numpy(), ref_actions, atol=2e-4)
    np.testing.assert_allclose(stack.act(obs[None]).numpy()[0], ref_actions, atol=2e-4)


def _latent_store(tmp_path, data: PixelData, agent: DrQBCStack) -> TrajectoryStore:
    """``gta-pixel encode``'s store of ``data`` under ``agent`` (its steps without the run directory)."""
    z = latents(agent, torch.as_tensor(data.frames), frame_stacks(data.episode_ends, 3), batch_size=7)
    return write_store(tmp_path / "latent.zarr", latent_transitions(data, z), data.episode_ends, env_id="pixel:t")


def test_latent_rows_are_the_trunks_of_vd4rls_stacks(tmp_path):
    """encode + LatentReplay: each row whose n steps lie inside its episode (the rows V-D4RL samples) holds
    [actor trunk, critic trunk] of V-D4RL's stacked observation, its action, n-step reward and discount, and
    the latents of V-D4RL's n-step next observation. The store keeps the other rows too (nearer an episode's end:
    finetune's truncated n-step targets, by hand in test_latent_pipeline)."""
    data = episodes_data()
    agent = DrQBCStack((9, SIZE, SIZE), ACT, [2], TINY)
    nets = DrQBCNets((9, SIZE, SIZE), ACT, TINY, seed=2)
    ref = vd4rl_agent(nets, (9, SIZE, SIZE))
    store = _latent_store(tmp_path, data, agent)
    replay = LatentReplay([store], nstep=3, discount=TINY.discount, device=torch.device("cpu"))
    buf = vd4rl_buffer(data, 3)
    ours = PixelReplay.from_data(data, frame_stack=3, nstep=3, discount=TINY.discount)
    index = buffer_index_of_rows(buf, ours)
    obs, act, rew, dis, nobs = buf.gather_nstep_indices(index)
    # our latent rows of the V-D4RL samples: rows whose action matches
    row_of = {a.tobytes(): i for i, a in enumerate(replay.actions.numpy())}
    rows = np.array([row_of[a.tobytes()] for a in act])

    def trunks(stacked):
        with torch.no_grad():
            f = ref.encoder(torch.as_tensor(stacked).to(DTYPE))
            return torch.cat([ref.actor.trunk(f), ref.critic.trunk(f)], -1).numpy()

    np.testing.assert_allclose(replay.observations[rows].numpy(), trunks(obs), atol=2e-5)
    np.testing.assert_allclose(replay.next_observations[rows].numpy(), trunks(nobs), atol=2e-5)
    np.testing.assert_allclose(replay.rewards[rows].numpy(), rew[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(replay.discounts[rows].numpy(), dis[:, 0], rtol=1e-6)
    assert replay.num_rows == data.num_steps > len(rows)  # the truncated rows too (finetune's design)


def test_head_update_is_vd4rls_update_with_encoder_and_trunks_frozen(tmp_path):
    """finetune's update = V-D4RL's update on unshifted observations with the encoder and both trunks frozen and
    the target critic's heads on the online critic trunk's latent (finetune's documented design): same metrics,
    same gradients of the policy head and the twin Q heads; nothing else receives one."""
    data = episodes_data()
    seed, lr = 4, 0.05
    agent = DrQBCStack((9, SIZE, SIZE), ACT, [seed], TINY)
    agent.step.fill_(7)  # the pretraining's update count: the std schedule continues from it
    nets = DrQBCNets((9, SIZE, SIZE), ACT, TINY, seed=seed)
    # A pretrained target critic differs from the online one: make it so (finetune reads only its heads).
    with torch.no_grad():
        for p in nets.critic_target.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    agent.load_seed_states([nets.state_dict()])
    store = _latent_store(tmp_path, data, agent)
    replay = LatentReplay([store], nstep=1, discount=TINY.discount, device=torch.device("cpu"))
    tuner = HeadTuner(agent)
    tuner.step.fill_(2)
    tuner.optimizers = {k: RecordingStackedSGD(o.params, lr) for k, o in tuner.optimizers.items()}
    rng = tuner.rng()
    rows = rng.randint(ROW_STREAM, replay.num_rows, (TINY.batch_size,))[0]
    draws = {"target_eps": rng.normal(TARGET_NOISE_STREAM, (TINY.batch_size, ACT))[0],
             "actor_eps": rng.normal(ACTOR_NOISE_STREAM, (TINY.batch_size, ACT))[0]}
    metrics = tuner.train_step(replay, TINY.batch_size)

    ref = vd4rl_agent(nets, (9, SIZE, SIZE), optimizer=RecordingSGD)
    ref.critic_target.trunk.load_state_dict(ref.critic.trunk.state_dict())  # the design: online critic latent
    for module in (ref.encoder, ref.actor.trunk, ref.critic.trunk, ref.critic_target.trunk):
        module.requires_grad_(False)
    ref.actor_opt = RecordingSGD(ref.actor.policy.parameters(), lr)
    ref.critic_opt = RecordingSGD([*ref.critic.Q1.parameters(), *ref.critic.Q2.parameters()], lr)
    # V-D4RL's one-step samples of the same transitions: stacks, reward, gamma x discount
    buf = vd4rl_buffer(data, 1)
    where = {buf.act[i].tobytes(): i for i in np.flatnonzero(buf.valid)}
    obs, action, reward, discount, nobs = (torch.as_tensor(x).to(DTYPE) for x in buf.gather_nstep_indices(
        np.array([where[a.tobytes()] for a in replay.actions[rows].numpy()])))
    step = 2 * (7 + 2)  # V-D4RL's loop step of the schedule
    with torch.no_grad():
        f, f_next = ref.encoder(obs), ref.encoder(nobs)
    ref_metrics = ref.update_critic(f, action, reward, discount, f_next, step, draws)
    ref_metrics.update(ref.update_actor(f, step, action, draws))
    assert all(g is None for g in ref.encoder_opt.grads[0])  # the frozen parts get no gradient there either
    for name, ref_name in (("critic_loss", "critic_loss"), ("actor_loss", "actor_loss"),
                           ("bc_mse", "actor_bc_loss"), ("lambda", "lambda"), ("q_mean", "critic_q1")):
        assert metrics[name][0].item() == pytest.approx(ref_metrics[ref_name], rel=1e-5, abs=1e-6), name
    names = [f"Q1.{n}" for n, _ in ref.critic.Q1.named_parameters()] + \
            [f"Q2.{n}" for n, _ in ref.critic.Q2.named_parameters()]
    assert_grads_close([g[0] for g in tuner.optimizers["q"].grads[0]], ref.critic_opt.grads[0], names)
    assert_grads_close([g[0] for g in tuner.optimizers["policy"].grads[0]], ref.actor_opt.grads[0],
                       [n for n, _ in ref.actor.policy.named_parameters()])
    assert len(tuner.optimizers["q"].params) == 12 and len(tuner.optimizers["policy"].params) == 6
