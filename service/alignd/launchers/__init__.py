from alignd.launchers.base import Launcher, LaunchRequest, RunState, RunStatus, run_name
from alignd.launchers.local import LocalLauncher

__all__ = ["LaunchRequest", "Launcher", "LocalLauncher", "RunState", "RunStatus", "run_name"]
