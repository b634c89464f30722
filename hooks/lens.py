"""TransformerLens adapter: capture through a ``TransformerBridge`` by its hook names.

The Bridge (TransformerLens 4.x, ``transformer_lens.model_bridge``) wraps a Hugging Face model and names
its activations the TransformerLens way: ``encoder_blocks.3.hook_resid_post``, ``encoder_ln_final.hook_out``,
``decoder_blocks.0.hook_resid_pre``, ``blocks.5.hook_resid_post`` for a single stack. This module maps
xlprobe's capture points to those names and back, and runs ``bridge.run_with_cache`` on the same token
ids, masks and teacher-forced decoder inputs as :func:`xlprobe.hooks.extract`, so the two give the same
pooled arrays (the Bridge switches attention to ``eager``, which moves float32 values by about 1e-7).

Two things about the Bridge shape this adapter:

- **It modifies the model it wraps** (its components replace the model's submodules and it forces eager
  attention), so it always gets a deep copy: the caller's model is never touched, at the price of a second
  copy of the weights in memory (2.4 GB for mBART-large-50 in float32).
- **Booting needs a name or folder.** ``boot_transformers`` takes the weights from the copy, but it rebuilds
  the tokenizer from the tokenizer's own ``name_or_path`` (to set ``add_bos_token``) and records the name.
  When the model's ``config._name_or_path`` and the tokenizer's ``name_or_path`` are both local folders,
  they are used as they are; otherwise the config and tokenizer (not the weights: the Bridge reads none)
  are written to a temporary folder that is deleted as soon as the Bridge is booted. Nothing is fetched
  from the hub.

It costs more than plain hooks: the Bridge runs the whole model with eager attention and the LM head,
where :func:`~xlprobe.hooks.extract` stops after the last requested point (a request for encoder points
gets a one-token decoder input here, to keep the decoder cheap). On a 6 + 6-layer, d = 512 MBart on 2 CPU
cores: about 2x extract's time for every point with teacher forcing, about 4x for the encoder alone. Use it
to reach hooks that xlprobe has no point for (``hook_resid_mid``, ``attn.hook_out``, ``mlp.hook_out``) or
to cross-check; use ``extract`` for bulk capture. Per-token states (``pooling="tokens"``) and the store are
``extract``'s alone.

``transformer_lens`` is imported only when a Bridge is booted (it takes about 3.5 s to import).
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import fnmatch
import logging
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xlprobe.errors import CapturePointError, ConfigError, ModelFamilyError
from xlprobe.hooks.batching import SideBatch
from xlprobe.hooks.extract import Activations
from xlprobe.hooks.plan import plan_capture
from xlprobe.hooks.points import capture_points, model_family, resolve_points
from xlprobe.hooks.pooling import POOLED, pool
from xlprobe.types import CapturePoint, Dataset, LayerSpec, Record

__all__ = [
    "LensCapture",
    "LENS_OPTIONS",
    "boot_bridge",
    "bridge_hook_name",
    "lens_extract",
    "lens_hook_map",
    "list_hook_names",
    "point_for_hook",
]

log = logging.getLogger(__name__)

#: Options of :meth:`LensCapture.extract`: the capture plan's options that apply through the Bridge.
LENS_OPTIONS = ("pooling", "batch_size", "max_length", "src_lang", "tgt_texts", "tgt_lang", "lang_codes",
                "include_special")
_EXTRACT_HINT = "use xlprobe.hooks.extract (plain forward hooks; needs no TransformerLens)"
_HOOK = re.compile(r"^(?:(?P<side>encoder|decoder)_)?"
                   r"(?:blocks\.(?P<index>\d+)\.hook_(?P<kind>resid_post|out|resid_pre|in)|(?P<norm>ln_final\.hook_out))$")


# ------------------------------------------------------------------------------------------- names


def bridge_hook_name(point: CapturePoint, *, encoder_decoder: bool) -> str:
    """The TransformerBridge hook name that carries the same tensor as ``point``.

    Parameters
    ----------
    point : CapturePoint
        A point of :func:`xlprobe.hooks.capture_points`.
    encoder_decoder : bool
        Whether the model has an encoder and a decoder (the Bridge then prefixes ``encoder_`` /
        ``decoder_``); a single stack (GPT-2, an encoder-only model) uses ``blocks.{i}``.

    Returns
    -------
    str
        ``{side}_blocks.{i}.hook_resid_post`` for a block output, ``{side}_blocks.0.hook_resid_pre`` for the
        embeddings (the first block's input, as in xlprobe) and ``{side}_ln_final.hook_out`` for the final
        norm.

    See Also
    --------
    point_for_hook : the inverse.

    Examples
    --------
    >>> from xlprobe.types import CapturePoint
    >>> path = "model.encoder.layers.3"
    >>> p = CapturePoint(path, "encoder.3", "encoder", 3, "block_out", path)
    >>> bridge_hook_name(p, encoder_decoder=True)
    'encoder_blocks.3.hook_resid_post'
    """
    prefix = f"{point.side}_" if encoder_decoder else ""
    if point.where == "block_out":
        return f"{prefix}blocks.{point.index}.hook_resid_post"
    if point.where == "embeddings":
        return f"{prefix}blocks.0.hook_resid_pre"
    if point.where == "final_norm":
        return f"{prefix}ln_final.hook_out"
    raise ConfigError(f"capture point {point.name!r} has an unknown kind where={point.where!r}",
                      hint="expected one of 'block_out', 'embeddings', 'final_norm'")


def lens_hook_map(model: nn.Module) -> dict[str, str]:
    """``{point alias: Bridge hook name}`` for every capture point of ``model`` (execution order)."""
    ed = model_family(model).is_encoder_decoder
    return {p.alias: bridge_hook_name(p, encoder_decoder=ed) for p in capture_points(model)}


def point_for_hook(model: nn.Module, hook_name: str) -> CapturePoint | None:
    """The capture point of ``model`` whose output the Bridge hook ``hook_name`` carries, or None.

    Parameters
    ----------
    model : nn.Module
        The Hugging Face model as loaded (not the Bridge).
    hook_name : str
        A Bridge hook name. Aliases count: ``blocks.{i}.hook_resid_post`` is ``blocks.{i}.hook_out``,
        ``blocks.0.hook_resid_pre`` is ``blocks.0.hook_in``.

    Returns
    -------
    CapturePoint or None
        None for hooks with no xlprobe point (``hook_resid_mid``, attention, MLP, ``blocks.{i}.hook_in`` for
        i > 0, which equals block i - 1's output but is kept under its own name).

    See Also
    --------
    bridge_hook_name : the other direction.
    """
    m = _HOOK.match(hook_name)
    ed = model_family(model).is_encoder_decoder
    if m is None or ed != (m["side"] is not None):
        return None
    if m["norm"]:
        where, index = "final_norm", None
    elif m["kind"] in ("resid_post", "out"):
        where, index = "block_out", int(m["index"])
    elif int(m["index"]) == 0:
        where, index = "embeddings", None
    else:
        return None
    for p in capture_points(model):
        if (not ed or p.side == m["side"]) and p.where == where and (index is None or p.index == index):
            return p
    return None


def list_hook_names(bridge: Any, pattern: str | None = None) -> list[str]:
    """The hook names of ``bridge`` (aliases included) in the Bridge's order, or those matching a glob."""
    names = list(bridge.hook_dict)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


# ------------------------------------------------------------------------------------------- boot


def _import_bridge() -> Any:
    """The ``TransformerBridge`` class, imported on first use."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as e:
        raise ConfigError(f"TransformerLens is not importable ({type(e).__name__}: {e})",
                          hint=f"pip install 'transformer-lens>=4.3', or {_EXTRACT_HINT}") from e
    return TransformerBridge


def _local_dir(path: Any, marker: str | None = None) -> str | None:
    """``path`` as a string when it is an existing local folder (holding ``marker`` if given), else None."""
    if not isinstance(path, (str, Path)) or not str(path):
        return None
    p = Path(path)
    if not p.is_dir() or (marker is not None and not (p / marker).is_file()):
        return None
    return str(p)


@contextlib.contextmanager
def _boot_source(model: nn.Module, tokenizer: Any) -> Iterator[tuple[str, Any]]:
    """A local name for ``boot_transformers`` and a tokenizer for the Bridge (a temp folder when needed)."""
    model_dir = _local_dir(getattr(getattr(model, "config", None), "_name_or_path", ""), "config.json")
    tok_dir = _local_dir(getattr(tokenizer, "name_or_path", ""))
    if model_dir and tok_dir:
        yield model_dir, copy.deepcopy(tokenizer)
        return
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="xlprobe-lens-") as tmp:
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        log.debug("booting the Bridge from a temporary folder %s (config + tokenizer, no weights)", tmp)
        yield model_dir or tmp, AutoTokenizer.from_pretrained(tmp)


def boot_bridge(model: nn.Module, tokenizer: Any, *, device: str | torch.device | None = None) -> Any:
    """A TransformerBridge around a deep copy of ``model`` (offline; the caller's model is left untouched).

    Parameters
    ----------
    model : nn.Module
        A loaded Hugging Face model of an architecture the Bridge supports (MBart, Bart, Marian, M2M100 /
        NLLB, T5 / mT5, GPT-2, ...).
    tokenizer
        Its tokenizer (also copied: the Bridge changes padding and special-token settings).
    device : str or torch.device, optional
        Where the copy runs. Default: where ``model`` is.

    Returns
    -------
    transformer_lens.model_bridge.TransformerBridge

    Raises
    ------
    ConfigError
        TransformerLens is not importable.
    ModelFamilyError
        The Bridge cannot boot this architecture (a bare ``BertModel`` or ``XLMRobertaModel``, for example).
    """
    bridge_cls = _import_bridge()
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    t0 = time.perf_counter()
    twin = copy.deepcopy(model).to(dev)
    twin.eval()
    with _boot_source(model, tokenizer) as (name, tok):
        try:
            bridge = bridge_cls.boot_transformers(name, hf_model=twin, tokenizer=tok, device=str(dev))
        except Exception as e:  # the Bridge fails in many ways (ValueError, AttributeError, KeyError...)
            mt = getattr(getattr(model, "config", None), "model_type", None)
            detail = " ".join(f"{type(e).__name__}: {e}".split())
            raise ModelFamilyError(
                f"TransformerLens cannot boot a TransformerBridge on {type(model).__name__} "
                f"(model_type {mt!r}): "
                f"{detail[:300]}{'...' if len(detail) > 300 else ''}",
                hint=f"{_EXTRACT_HINT}; or load a head class the Bridge supports (e.g. ...ForMaskedLM, "
                     "...ForConditionalGeneration)") from e
    bridge.eval()
    log.info("booted a TransformerBridge (%s, %d hooks) on a copy of %s in %.2fs",
             type(bridge.adapter).__name__, len(bridge.hook_dict), type(model).__name__,
             time.perf_counter() - t0)
    return bridge


# ------------------------------------------------------------------------------------------- capture


@dataclass(frozen=True)
class _Target:
    """One thing to capture: its output key, its Bridge hook, its side, and its capture point if any."""

    key: str
    hook: str
    side: str
    point: CapturePoint | None


def _run_batch(bridge: Any, targets: Sequence[_Target], src: SideBatch, dec: SideBatch | None,
               decoder_start: int | None, pooling: str) -> dict[str, np.ndarray]:
    """One ``run_with_cache`` call; each target's states pooled over its side's kept positions."""
    kw: dict[str, Any] = {"attention_mask": src.attn}
    if dec is not None:
        kw.update(decoder_input=dec.ids, decoder_attention_mask=dec.attn)
    elif decoder_start is not None:  # no decoder target: a one-token decoder input keeps the decoder cheap
        kw["decoder_input"] = torch.full((src.ids.shape[0], 1), decoder_start, dtype=torch.long,
                                         device=src.ids.device)
    wanted = frozenset(t.hook for t in targets)  # a predicate: a list would also cache each alias's twin
    with torch.no_grad():
        _, cache = bridge.run_with_cache(src.ids, names_filter=wanted.__contains__, return_cache_object=False,
                                         return_type=None, **kw)
    out = {}
    for t in targets:
        side = dec if dec is not None and t.side == "decoder" else src
        states = cache.get(t.hook)
        if states is None:
            raise CapturePointError(f"Bridge hook {t.hook!r} did not fire on this input",
                                    hint="list the hooks with LensCapture(model, tok).hook_names()")
        if states.dim() != 3 or states.shape[:2] != side.ids.shape:
            raise ConfigError(
                f"Bridge hook {t.hook!r} gives a tensor of shape {tuple(states.shape)}, "
                f"not [batch, seq, d] = [{side.ids.shape[0]}, {side.ids.shape[1]}, d]",
                hint="pool residual-shaped hooks only (hook_resid_*, hook_in / hook_out of blocks, attn, "
                     "mlp, norms); read the others with LensCapture(...).boot().run_with_cache")
        out[t.key] = pool(states, side.keep, pooling, side.tag).cpu().numpy()
    return out


class LensCapture:
    """Capture pooled activations through a TransformerBridge booted once on a copy of ``model``.

    Parameters
    ----------
    model : nn.Module
        A loaded Hugging Face model; deep-copied at the first capture and never modified.
    tokenizer
        Its tokenizer. xlprobe encodes the texts itself (language codes, teacher forcing) exactly as
        :func:`xlprobe.hooks.extract` does, and hands the Bridge token ids and masks.
    device : str or torch.device, optional
        Where the Bridge's copy runs. Default: where ``model`` is.

    Attributes
    ----------
    bridge_ : TransformerBridge
        The booted Bridge (after the first :meth:`extract`, :meth:`hook_names` or :meth:`boot`).

    See Also
    --------
    lens_extract : one call, one boot.
    xlprobe.hooks.extract : the same capture with plain forward hooks (cheaper; no TransformerLens).

    Examples
    --------
    >>> lens = LensCapture(model, tok)                                             # doctest: +SKIP
    >>> acts = lens.extract(texts, ["encoder.*", "encoder_blocks.1.hook_resid_mid"])  # doctest: +SKIP
    >>> acts["encoder.1"].shape, acts["encoder_blocks.1.hook_resid_mid"].shape      # doctest: +SKIP
    ((5, 1024), (5, 1024))
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, device: str | torch.device | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device

    def boot(self) -> Any:
        """Boot the Bridge (once) and return it."""
        if getattr(self, "bridge_", None) is None:
            self.bridge_ = boot_bridge(self.model, self.tokenizer, device=self.device)
        return self.bridge_

    def hook_names(self, pattern: str | None = None) -> list[str]:
        """The Bridge's hook names (booting it if needed), optionally filtered by a glob."""
        return list_hook_names(self.boot(), pattern)

    def _targets(self, layers: LayerSpec) -> list[_Target]:
        """Resolve xlprobe points and Bridge hook names (exact or glob) into capture targets, deduplicated."""
        ed = model_family(self.model).is_encoder_decoder

        def of_point(p: CapturePoint, hook: str | None = None) -> _Target:
            return _Target(p.name, hook or bridge_hook_name(p, encoder_decoder=ed), p.side, p)

        if callable(layers) and not isinstance(layers, str):
            return [of_point(p) for p in resolve_points(self.model, layers)]
        items = [layers] if isinstance(layers, str) else list(layers)
        if not items:
            raise ConfigError("no layers requested (empty list)",
                              hint="pass a name such as 'encoder.*', a Bridge hook name, or 'all'")
        out: dict[str, _Target] = {}
        for item in items:
            try:
                found = [of_point(p) for p in resolve_points(self.model, item)]
            except CapturePointError as err:
                found = []
                for h in self._hooks_matching(item, err):
                    p = point_for_hook(self.model, h)
                    found.append(of_point(p, h) if p is not None else _Target(h, h, self._side(h), None))
            for t in found:
                out.setdefault(t.key, t)
        return list(out.values())

    def _hooks_matching(self, item: Any, err: CapturePointError) -> list[str]:
        """Bridge hook names matching ``item`` (exact or glob); none raises, suggesting points and hooks."""
        hooks = self.hook_names()
        hits = [h for h in hooks if fnmatch.fnmatchcase(h, item)] if isinstance(item, str) else []
        if not hits:
            near = difflib.get_close_matches(str(item), hooks, n=3, cutoff=0.6)
            also = f"closest Bridge hooks: {', '.join(map(repr, near))}; " if near else ""
            raise CapturePointError(
                f"{item!r} is neither a capture point of {type(self.model).__name__} "
                "nor a hook of its Bridge",
                hint=f"{err.hint}; {also}all Bridge hooks: LensCapture(model, tok).hook_names()") from err
        return hits

    def _side(self, hook: str) -> str:
        """The side whose token positions a Bridge hook runs over."""
        family = model_family(self.model)
        if not family.is_encoder_decoder:
            return "encoder" if family.encoder_layers is not None else "decoder"
        if hook.startswith("decoder_"):
            return "decoder"
        if hook.startswith(("encoder_", "embed", "pos_embed", "hook_embed", "hook_pos_embed")):
            return "encoder"
        raise ConfigError(f"Bridge hook {hook!r} is on neither the encoder nor the decoder side",
                          hint="pick an encoder_* / decoder_* hook (LensCapture(model, tok).hook_names())")

    def extract(self, texts: Sequence[str] | Sequence[Record] | Dataset, layers: LayerSpec,
                **options: Any) -> Activations:
        """Capture pooled activations of ``texts`` at ``layers`` through the Bridge.

        Parameters
        ----------
        texts : list of str, list of Record, or Dataset
            As for :func:`xlprobe.hooks.extract`.
        layers : LayerSpec
            xlprobe points (names, aliases, globs, ``"all"``, a predicate) and / or Bridge hook names or
            globs (``encoder_blocks.3.hook_resid_post``, ``decoder_blocks.*.hook_resid_mid``). A hook that
            carries an xlprobe point is stored under the point's alias, as ``extract`` stores it; any other
            hook must give [batch, seq, d] states and is stored under its own name.
        **options
            The capture plan's options that apply through the Bridge, as for ``extract``:
            ``pooling`` ({"mean", "first", "last", "max", "tag"}; special tokens and padding left out
            unless ``include_special``), ``batch_size``, ``max_length``, ``src_lang``, ``tgt_texts``
            (the decoder is teacher-forced on them), ``tgt_lang``, ``lang_codes``, ``include_special``.
            Right padding; per-token states, dtypes and the store are ``extract``'s alone.

        Returns
        -------
        Activations
            ``{key: float32 [n, d]}`` in input order, keyed by point alias (also indexable by module path)
            or by hook name; ``meta["hooks"]`` maps each point name or hook to the Bridge hook it was read from.
        """
        unknown = sorted(set(options) - set(LENS_OPTIONS))
        if unknown:
            raise ConfigError(f"LensCapture.extract takes no option {', '.join(map(repr, unknown))}",
                              hint=f"options: {', '.join(LENS_OPTIONS)}; per-token states, dtypes and the store: "
                                   "xlprobe.hooks.extract")
        pooling = options.setdefault("pooling", "mean")
        if pooling == "tokens":
            raise ConfigError(f"pooling={pooling!r} is not available through the Bridge",
                              hint=f"valid: {', '.join(POOLED)} (per-token states: xlprobe.hooks.extract)")
        targets = self._targets(layers)
        points = [t.point for t in targets if t.point is not None]
        plan = plan_capture(self.model, self.tokenizer, texts, points or None, sides={t.side for t in targets},
                            poolings=POOLED, **options)
        bridge = self.boot()
        t0 = time.perf_counter()
        dev, n = torch.device(str(bridge.cfg.device)), plan.n
        arrays: dict[str, np.ndarray] = {}
        for idx in plan.batches():
            s, d = plan.batch(idx, dev)
            for key, vals in _run_batch(bridge, targets, s, d, plan.decoder_start, pooling).items():
                arrays.setdefault(key, np.empty((n, vals.shape[1]), np.float32))[idx] = vals
        meta = {**plan.meta(), "points": [t.key for t in targets], "backend": "transformer_lens",
                "hooks": {t.key: t.hook for t in targets}, "seconds": time.perf_counter() - t0}
        return Activations(points, {t.key: arrays[t.key] for t in targets}, meta)


def lens_extract(model: nn.Module, tokenizer: Any, texts: Sequence[str] | Sequence[Record] | Dataset,
                 layers: LayerSpec, *, device: str | torch.device | None = None, **options: Any) -> Activations:
    """Capture pooled activations through a TransformerBridge booted for this call.

    Parameters
    ----------
    model, tokenizer
        A loaded Hugging Face model (deep-copied, never modified) and its tokenizer.
    texts, layers
        As for :meth:`LensCapture.extract`.
    device : str or torch.device, optional
        Where the Bridge's copy runs. Default: where ``model`` is.
    **options
        The options of :meth:`LensCapture.extract` (:data:`LENS_OPTIONS`).

    Returns
    -------
    Activations
        Keyed like :func:`xlprobe.hooks.extract`'s output (point aliases, also by module path; other
        Bridge hooks by hook name).

    See Also
    --------
    LensCapture : boots once for many calls (each call here pays a model copy and a boot).
    xlprobe.hooks.extract : the same capture with plain forward hooks.

    Examples
    --------
    >>> acts = lens_extract(model, tok, ["Jesus wept."], "encoder.*")   # doctest: +SKIP
    >>> acts["encoder.1"].shape                                          # doctest: +SKIP
    (1, 1024)
    """
    return LensCapture(model, tokenizer, device=device).extract(texts, layers, **options)
