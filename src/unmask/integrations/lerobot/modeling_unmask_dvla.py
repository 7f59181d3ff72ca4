"""``UnmaskDvlaPolicy``: lerobot's policy interface over ``ActionPolicy`` (decoding by the shared core)."""

from __future__ import annotations

from collections import deque

import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_STATE

from ...modalities.action.model import load_policy
from .configuration_unmask_dvla import UnmaskDvlaConfig


class UnmaskDvlaPolicy(PreTrainedPolicy):
    config_class = UnmaskDvlaConfig
    name = "unmask_dvla"

    def __init__(self, config: UnmaskDvlaConfig, **kwargs) -> None:
        super().__init__(config)
        self.core = load_policy(config.bundle)
        if self.core.spec.horizon != config.chunk_size:
            raise ValueError(f"bundle {config.bundle} decodes chunks of {self.core.spec.horizon} steps; set "
                             f"--policy.chunk_size={self.core.spec.horizon}")
        # registered as submodules so that lerobot's save/load and .to(device) see the weights
        self.encoder, self.backbone = self.core.encoder, self.core.backbone
        self._queue: deque[torch.Tensor] = deque()

    def get_optim_params(self) -> dict:
        return self.parameters()

    def reset(self) -> None:
        self._queue.clear()

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Training loss (masked diffusion on the binned chunk) for lerobot-train."""
        from ...train.vla import chunk_loss

        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
        pad = batch.get("action_is_pad")  # lerobot marks the window's steps past the episode's end
        loss = chunk_loss(self.core, batch[OBS_STATE], batch[ACTION].cpu(), gen,
                          pad=None if pad is None else pad.cpu())
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
        """``[B, H, D]`` actions for the batch's ``observation.state``."""
        actions, _ = self.core.predict_chunk(batch.get(OBS_STATE), steps=self.config.decode_steps,
                                             policy=self.config.unmask_policy)
        return actions.to(batch[OBS_STATE].device)

    @torch.no_grad()
    def select_action(self, batch: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
        """The next ``[B, D]`` action: from the queue, decoding a new chunk when it runs dry."""
        if not self._queue:
            chunk = self.predict_action_chunk(batch)[:, : self.config.n_action_steps]
            self._queue.extend(chunk.transpose(0, 1))
        return self._queue.popleft()
