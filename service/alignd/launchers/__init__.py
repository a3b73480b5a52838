from alignd.launchers.base import Launcher, LaunchRequest, RunState, RunStatus
from alignd.launchers.local import LocalLauncher

__all__ = ["LaunchRequest", "Launcher", "LocalLauncher", "RunState", "RunStatus"]
