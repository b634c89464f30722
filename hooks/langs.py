"""Language codes: map a dataset's language (``fr``) to the model's own code (``fr_XX``, ``fra_Latn``)."""
from __future__ import annotations

from typing import Any

from xlprobe.errors import LanguageCodeError
from xlprobe.hooks.families import ISO_TO_NLLB, Family

__all__ = ["valid_codes", "model_code", "code_token_ids", "marian_target_token"]


def valid_codes(tokenizer: Any) -> list[str]:
    """The language codes the tokenizer knows (``lang_code_to_id`` keys), sorted."""
    table = getattr(tokenizer, "lang_code_to_id", None)
    if isinstance(table, dict) and table:
        return sorted(table)
    return []


def code_token_ids(tokenizer: Any) -> set[int]:
    """Token ids of every language code (used to find the tag position)."""
    table = getattr(tokenizer, "lang_code_to_id", None)
    return {int(v) for v in table.values()} if isinstance(table, dict) else set()


def _candidates(lang: str) -> list[str]:
    """Spellings of ``lang`` used by the families' code tables, most likely first."""
    base = lang.split("_")[0].split("-")[0].lower()
    out = [lang, f"__{base}__"]
    if base in ISO_TO_NLLB:
        out.append(ISO_TO_NLLB[base])
    return out


def model_code(tokenizer: Any, family: Family, lang: str) -> str:
    """The value to set as the tokenizer's ``src_lang`` / ``tgt_lang`` for dataset language ``lang``."""
    codes = valid_codes(tokenizer)
    if not codes:
        raise LanguageCodeError(
            f"{type(tokenizer).__name__} has no language codes (family {family.name!r})",
            hint="this family does not mark languages with a token: leave src_lang / tgt_lang unset",
        )
    known = set(codes)
    for cand in _candidates(lang):
        if cand in known:
            return cand[2:-2] if cand.startswith("__") and cand.endswith("__") else cand
    base = lang.split("_")[0].lower()
    prefixed = [c for c in codes if c.split("_")[0].lower() == base]
    if len(prefixed) == 1:
        return prefixed[0]
    shown = ", ".join(codes[:60]) + (" ..." if len(codes) > 60 else "")
    raise LanguageCodeError(
        f"language {lang!r} is not a code of {type(tokenizer).__name__} ({family.name})",
        hint=f"valid codes: {shown}",
    )


def marian_target_token(tokenizer: Any, lang: str) -> str:
    """The ``>>xxx<<`` target token of a multi-target Marian model for ``lang``."""
    vocab = tokenizer.get_vocab()
    tags = sorted(t for t in vocab if t.startswith(">>") and t.endswith("<<"))
    base = lang.split("_")[0].lower()
    for cand in (lang, base, *(ISO_TO_NLLB.get(base, "")[:3],)):
        if cand and f">>{cand}<<" in vocab:
            return f">>{cand}<<"
    raise LanguageCodeError(
        f"target language {lang!r} has no '>>xxx<<' token in {type(tokenizer).__name__}",
        hint=("valid target tokens: " + ", ".join(tags[:60])) if tags else
        "this Marian model is single-target: leave tgt_lang unset",
    )
