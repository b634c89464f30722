"""xlprobe.hooks: capture per-layer activations with forward hooks, pooled, into arrays or a store.

The TransformerLens adapter is the module :mod:`xlprobe.hooks.lens` (its names are imported from there);
allocator settings for long captures are in :mod:`xlprobe.hooks.memory`.
"""
from xlprobe.hooks.capture import Capture
from xlprobe.hooks.extract import Activations, TokenStates, describe_points, extract, run_plan
from xlprobe.hooks.families import FAMILIES, Family, register_family
from xlprobe.hooks.plan import CapturePlan, plan_capture
from xlprobe.hooks.points import capture_points, model_family, resolve_points
from xlprobe.hooks.pooling import pool

__all__ = [
    # capture: plan once, run into memory or a store; or hold the hooks yourself
    "extract", "plan_capture", "CapturePlan", "run_plan", "Capture", "Activations", "TokenStates",
    # capture points of a model
    "capture_points", "resolve_points", "describe_points",
    # model families (one row per config.model_type)
    "FAMILIES", "Family", "register_family", "model_family",
    # pooling over positions
    "pool",
]
