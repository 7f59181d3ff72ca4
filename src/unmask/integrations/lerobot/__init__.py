"""lerobot plugin: the ``unmask_dvla`` policy (config / modeling / processor, lerobot's naming convention) and
the ``unmask_push`` environment. Importing this package registers both with lerobot; its command-line tools find
it with ``--policy.discover_packages_path=unmask.integrations.lerobot`` (and the same for ``--env``)::

    lerobot-eval --policy.type=unmask_dvla --policy.bundle=tiny-vla --env.type=unmask_push \\
        --policy.discover_packages_path=unmask.integrations.lerobot \\
        --env.discover_packages_path=unmask.integrations.lerobot --eval.n_episodes=50 --eval.batch_size=10
"""

from .configuration_unmask_dvla import UnmaskDvlaConfig
from .env_unmask_push import UnmaskPushEnv

__all__ = ["UnmaskDvlaConfig", "UnmaskPushEnv"]
