"""xlprobe.hooks: capture per-layer activations with forward hooks, pooled, into arrays or a store."""
from xlprobe.hooks.capture import Capture, StopForward
from xlprobe.hooks.extract import Activations, TokenStates, describe_points, extract, run_plan
from xlprobe.hooks.families import FAMILIES, Family, register_family
from xlprobe.hooks.plan import CapturePlan, plan_capture
from xlprobe.hooks.points import capture_points, model_family, resolve_points
from xlprobe.hooks.pooling import pool

__all__ = [
    "Capture", "StopForward", "extract", "run_plan", "plan_capture", "CapturePlan", "describe_points",
    "Activations", "TokenStates", "FAMILIES", "Family", "register_family",
    "capture_points", "resolve_points", "model_family", "pool",
]
