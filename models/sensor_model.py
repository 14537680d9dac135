"""The sensor model: an asset's window of readings -> DeepSeek-V3 backbone -> forecast and fault classifier.

Input (``streamer.encoding.sensors.stack``): ``values`` [B, T, S, C], the last T
readings of the asset's S sensors as numbers (C channels per sensor and step:
standardised value, leave-one-out residual, change, repeat flag), with
``sensor_ids`` [B, S] naming each sensor's embedding slot and masks for padded
sensors and steps.

- **One token per time step.** Each sensor's channels and its learned
  embedding go through a shared two-layer network; the results are pooled over
  the sensors (mean and max, so one sensor far off among fifty still shows).
  Each sensor also has its own learned projection of its channels (summed over
  the sensors and normalised), which keeps *which* sensor moved. Both make
  the step's token. A sensor name the model has never seen is a new
  embedding row learned in fine-tuning, not new vocabulary, and the pooling
  takes any number of sensors.
- **Backbone**: ``DeepseekV3Model`` (multi-head latent attention, routed mixture
  of experts, causal over time) fed through ``inputs_embeds``.
- **Forecast head** (self-supervised on normal running): from the token of
  step t, each sensor's standardised value at t+1, mean and log-σ, given the
  sensor's embedding and its value at t. Its standardised error at the newest
  step is the score's prediction-error part.
- **Classifier head**: fault vs normal from the newest step's token, trained
  contrastively on normal windows against the same windows with injected faults.

``ExportWrapper`` is what goes into ONNX: the newest step's forecast and the logit.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DeepseekV3Config, DeepseekV3Model

from models import classifier as clf  # registers the export-friendly dense experts

# the classifier's backbone sizes ("tiny" for tests, "default" for the shipped bundle)
PRESETS: dict[str, dict[str, Any]] = {name: dict(clf.PRESETS[name]) for name in ("tiny", "default")}
INPUT_NAMES = ["values", "sensor_ids", "sensor_mask", "step_mask", "step_stats"]
OUTPUT_NAMES = ["logit", "forecast_mean", "forecast_log_sigma"]
LOG_SIGMA_RANGE = (-4.0, 4.0)


def backbone_config(preset: str, max_steps: int, overrides: dict[str, Any] | None = None) -> DeepseekV3Config:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {sorted(PRESETS)}")
    kw = {**PRESETS[preset], **clf.COMMON, **(overrides or {})}
    kw.update(vocab_size=2, pad_token_id=0, max_position_embeddings=max(64, max_steps))
    return DeepseekV3Config(**kw)


class SensorNet(nn.Module):
    """Windows of an asset's readings -> (fault logit, next-step forecast); see the module docstring."""

    def __init__(self, config: DeepseekV3Config, slots: int = 512, channels: int = 4, embed: int = 16):
        super().__init__()
        h = config.hidden_size
        self.config = config
        self.slots, self.channels, self.embed_dim = slots, channels, embed
        self.sensor = nn.Embedding(slots, embed)
        self.direction = nn.Parameter(torch.randn(slots, channels, h) * 0.05)  # each sensor's own input projection
        self.norm = nn.LayerNorm(h)
        self.cell = nn.Linear(channels + embed, h)
        self.pool = nn.Linear(2 * h, h)
        self.step_in = nn.Linear(4, h)
        self.backbone = DeepseekV3Model._from_config(config, attn_implementation="eager")
        self.backbone.set_experts_implementation(clf.DENSE_EXPERTS)
        self.fc_h = nn.Linear(h, h)
        self.fc_s = nn.Linear(embed + channels, h)
        self.fc_out = nn.Linear(h, 2)
        self.head = nn.Linear(h, 1)
        nn.init.normal_(self.sensor.weight, std=0.1)

    def tokens(self, values: torch.Tensor, ids: torch.Tensor, smask: torch.Tensor, tmask: torch.Tensor,
               stats: torch.Tensor) -> torch.Tensor:
        """[B, T, H] hidden states of the backbone, one per step."""
        e = self.sensor(ids)  # [B, S, E]
        b, t, s, _ = values.shape
        cell = F.gelu(self.cell(torch.cat([values, e[:, None].expand(b, t, s, -1)], -1)))  # [B, T, S, H]
        m = smask[:, None, :, None]
        mean = (cell * m).sum(2) / m.sum(2).clamp_min(1.0)
        mx = (cell - 1e4 * (1.0 - m)).amax(2)
        n = smask.sum(1, keepdim=True)[:, None].expand(b, t, 1)
        step = torch.cat([tmask[..., None], torch.log1p(n), stats], -1)
        own = torch.einsum("btsc,bsch->bth", values * smask[:, None, :, None], self.direction[ids])
        x = self.pool(torch.cat([mean, mx], -1)) + self.norm(own) + self.step_in(step)
        return self.backbone(inputs_embeds=x, attention_mask=tmask.long()).last_hidden_state

    def forecast(self, hidden: torch.Tensor, values: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log σ) [B, T, S] of each sensor's standardised value at the *next* step."""
        e = self.sensor(ids)
        b, t, s, _ = values.shape
        q = F.gelu(self.fc_h(hidden)[:, :, None] + self.fc_s(torch.cat([e[:, None].expand(b, t, s, -1), values], -1)))
        out = self.fc_out(q)
        return out[..., 0] + values[..., 0], out[..., 1].clamp(*LOG_SIGMA_RANGE)

    def forward(self, values: torch.Tensor, sensor_ids: torch.Tensor, sensor_mask: torch.Tensor,
                step_mask: torch.Tensor, step_stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logit [B], forecast mean [B, T, S], forecast log σ [B, T, S]) over every step (training)."""
        h = self.tokens(values, sensor_ids, sensor_mask, step_mask, step_stats)
        mu, ls = self.forecast(h, values, sensor_ids)
        return self.head(h[:, -1]).squeeze(-1), mu, ls


def forecast_nll(mu: torch.Tensor, log_sigma: torch.Tensor, values: torch.Tensor, smask: torch.Tensor,
                 tmask: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL of each step's forecast of the next step (real sensors, both steps real)."""
    y = values[:, 1:, :, 0]
    r = (y - mu[:, :-1]) * torch.exp(-log_sigma[:, :-1])
    w = smask[:, None, :] * (tmask[:, 1:] * tmask[:, :-1])[:, :, None]
    return ((0.5 * r * r + log_sigma[:, :-1]) * w).sum() / w.sum().clamp_min(1.0)


class ExportWrapper(nn.Module):
    """What the ONNX graph computes: the logit and the forecast of the newest step (from the step before)."""

    def __init__(self, net: SensorNet):
        super().__init__()
        self.net = net

    def forward(self, values: torch.Tensor, sensor_ids: torch.Tensor, sensor_mask: torch.Tensor,
                step_mask: torch.Tensor, step_stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.net.tokens(values, sensor_ids, sensor_mask, step_mask, step_stats)
        mu, ls = self.net.forecast(h[:, -2:-1], values[:, -2:-1], sensor_ids)
        return self.net.head(h[:, -1]).squeeze(-1), mu[:, 0], ls[:, 0]


def build(preset: str = "default", max_steps: int = 16, slots: int = 512, seed: int = 0) -> SensorNet:
    torch.manual_seed(seed)
    return SensorNet(backbone_config(preset, max_steps), slots=slots)


def architecture(model: SensorNet) -> dict[str, Any]:
    return {"class": "SensorNet(DeepseekV3Model)", "parameters": clf.n_params(model),
            "backbone_config": clf.config_fields(model),
            "sensor_slots": model.slots, "sensor_embedding": model.embed_dim, "channels": model.channels,
            "experts_implementation": clf.DENSE_EXPERTS,
            "tokens": "one per time step: shared cell network over (channels, sensor embedding), mean+max pooled "
                      "over sensors", "heads": {"forecast": "next-step mean and log-sigma per sensor",
                                                "classifier": "fault logit from the newest step"}}
