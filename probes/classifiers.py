"""Probes by name: the one table of probe classes, and the one way to build, fit and name a probe.

:data:`PROBES` maps ``"linear"`` and ``"mlp"`` to :class:`~xlprobe.probes.linear.LinearProbe` and
:class:`~xlprobe.probes.mlp.MLPProbe`; :func:`make_probe` builds one by name or clones an estimator,
:func:`fit_probe` fits it (with groups where its class takes them), :func:`probe_measure` names its rows.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sklearn.base import clone

from xlprobe.errors import ConfigError
from xlprobe.probes.linear import LinearProbe
from xlprobe.probes.mlp import MLPProbe

__all__ = ["LinearProbe", "MLPProbe", "PROBES", "make_probe", "fit_probe", "probe_measure", "probe_name"]


#: Probe names -> classes: the one table that builds a probe by name (:func:`make_probe`) and names a
#: probe's rows (:func:`probe_measure`: ``probe.linear``, ``probe.mlp``).
PROBES: Mapping[str, type] = MappingProxyType({"linear": LinearProbe, "mlp": MLPProbe})


def make_probe(probe: Any = None, *, seed: int | None = None, **params: Any) -> Any:
    """A fresh, unfitted probe, by name or from an estimator: the one way every runner and measure gets one.

    Parameters
    ----------
    probe : {"linear", "mlp"}, estimator or None
        A name of :data:`PROBES` (None is ``"linear"``), or a scikit-learn classifier, which is cloned.
    seed : int, optional
        Sets ``random_state`` where the probe has one and it is None; an explicit ``random_state``
        (0 included) is kept.
    **params
        Parameters of the probe (``make_probe("linear", C=0.1)``), set on the clone of an estimator.

    Raises
    ------
    ConfigError
        An unknown name, or an object that is not a scikit-learn estimator.
    """
    if probe is None:
        probe = "linear"
    if isinstance(probe, str):
        if probe not in PROBES:
            raise ConfigError(f"probe must be one of {list(PROBES)} or a scikit-learn classifier; got {probe!r}",
                              hint="probe names: " + ", ".join(PROBES))
        est = PROBES[probe](**params)
    elif callable(getattr(probe, "fit", None)) and callable(getattr(probe, "get_params", None)):
        est = clone(probe).set_params(**params)
    else:
        raise ConfigError(f"probe must be one of {list(PROBES)} or a scikit-learn classifier; got {probe!r}",
                          hint="pass e.g. probe='mlp' or probe=LinearProbe(C=0.1)")
    if seed is not None and "random_state" in est.get_params() and est.get_params()["random_state"] is None:
        est.set_params(random_state=seed)
    return est


def fit_probe(probe: Any, X: Any, y: Any, groups: Any = None) -> Any:
    """Fit a clone of ``probe``; ``groups`` go to ``fit`` only when the probe's class sets ``fit_takes_groups``."""
    est = clone(probe)
    if groups is not None and getattr(type(est), "fit_takes_groups", False):
        return est.fit(X, y, groups=groups)
    return est.fit(X, y)


def _registered_name(probe: Any) -> str | None:
    """The :data:`PROBES` name of the probe's class or of its nearest base class there (a subclass of
    ``MLPProbe`` is an MLP probe), else None."""
    names = {cls: name for name, cls in PROBES.items()}
    return next((names[c] for c in type(probe).__mro__ if c in names), None)


def probe_measure(probe: Any) -> str:
    """The registered measure name of a probe's rows: ``probe.linear``, ``probe.mlp``, else ``probe.estimator``."""
    name = _registered_name(probe)
    return f"probe.{name}" if name else "probe.estimator"


def probe_name(probe: Any) -> str:
    """What the ``probe`` column says: ``probe.linear``, ``probe.mlp``, else ``probe.<class name, lower case>``."""
    return f"probe.{_registered_name(probe) or type(probe).__name__.lower()}"
