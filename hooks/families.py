"""Model families as data: where each family keeps its blocks and final norms, and how it marks languages.

One row per family, keyed by ``config.model_type``. Paths are relative to ``model.base_model`` so that a
bare model (``MBartModel``) and one with a head (``MBartForConditionalGeneration``) share a row; the
capture points shown to users carry the full module path as loaded (``model.encoder.layers.3``).

A new family is one more row in ``FAMILIES`` (or :func:`register_family` at run time).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from xlprobe.errors import ConfigError

__all__ = [
    "Family",
    "FAMILIES",
    "register_family",
    "family_for",
    "LangStyle",
    "ISO_TO_NLLB",
]

#: How a family marks the language of a text.
#: ``src_lang``: the tokenizer has ``src_lang`` / ``tgt_lang`` attributes and inserts the code itself
#: (mBART-50 prefixes ``[code] text </s>``, mBART-cc25 suffixes, M2M100 / NLLB prefix);
#: ``target_prefix``: a ``>>xxx<<`` token at the start of the source selects the target (Marian multi-target);
#: ``none``: the model has no language tokens (BERT, XLM-R, T5, GPT-2).
LangStyle = Literal["src_lang", "target_prefix", "none"]


@dataclass(frozen=True)
class Family:
    """Where one architecture family keeps its blocks, and how it marks languages.

    Attributes
    ----------
    name : str
        Display name of the row.
    model_types : tuple of str
        ``config.model_type`` values served by this row.
    encoder_layers, decoder_layers : str or None
        Path of the ``nn.ModuleList`` of blocks, relative to ``model.base_model``.
    encoder_final_norm, decoder_final_norm : str or None
        Path of the norm applied after the last block (pre-LN models), or None (post-LN models).
    lang_style : LangStyle
        How languages are marked (see :data:`LangStyle`).
    lang_codes : str or None
        Which code table maps a dataset language (``fr``) to the model's code (``fr_XX``):
        ``mbart50``, ``m2m100``, ``nllb`` or None.
    examples : tuple of str
        Hub ids served by the row (documentation and ``xlprobe layers`` help).
    notes : str
        What the row does not support or what differs from ``output_hidden_states``.
    """

    name: str
    model_types: tuple[str, ...]
    encoder_layers: str | None = None
    decoder_layers: str | None = None
    encoder_final_norm: str | None = None
    decoder_final_norm: str | None = None
    lang_style: LangStyle = "none"
    lang_codes: str | None = None
    examples: tuple[str, ...] = ()
    notes: str = ""

    @property
    def is_encoder_decoder(self) -> bool:
        """True when the row has both an encoder and a decoder."""
        return self.encoder_layers is not None and self.decoder_layers is not None


_ROWS: tuple[Family, ...] = (
    Family(
        "MBart", ("mbart",),
        encoder_layers="encoder.layers", decoder_layers="decoder.layers",
        encoder_final_norm="encoder.layer_norm", decoder_final_norm="decoder.layer_norm",
        lang_style="src_lang", lang_codes="mbart50",
        examples=("facebook/mbart-large-50", "facebook/mbart-large-50-many-to-many-mmt",
                  "facebook/mbart-large-50-one-to-many-mmt", "facebook/mbart-large-50-many-to-one-mmt"),
        notes="pre-LN: the last block's output is before the final layer_norm; hidden_states[-1] is after it",
    ),
    Family(
        "Bart", ("bart",),
        encoder_layers="encoder.layers", decoder_layers="decoder.layers",
        examples=("facebook/bart-base",),
        notes="post-LN: no final norm; hidden_states[-1] is the last block's output",
    ),
    Family(
        "Marian", ("marian",),
        encoder_layers="encoder.layers", decoder_layers="decoder.layers",
        lang_style="target_prefix",
        examples=("Helsinki-NLP/opus-mt-en-de", "Helsinki-NLP/opus-mt-en-ROMANCE"),
        notes="post-LN: no final norm; multi-target models take a '>>xxx<<' target token in the source",
    ),
    Family(
        "M2M100 / NLLB", ("m2m_100",),
        encoder_layers="encoder.layers", decoder_layers="decoder.layers",
        encoder_final_norm="encoder.layer_norm", decoder_final_norm="decoder.layer_norm",
        lang_style="src_lang", lang_codes="m2m100",
        examples=("facebook/m2m100_418M", "facebook/nllb-200-distilled-600M"),
        notes="NLLB checkpoints use NLLB codes (eng_Latn); M2M100 ones use 2-letter codes (en)",
    ),
    Family(
        "T5 / mT5", ("t5", "mt5", "umt5"),
        encoder_layers="encoder.block", decoder_layers="decoder.block",
        encoder_final_norm="encoder.final_layer_norm", decoder_final_norm="decoder.final_layer_norm",
        examples=("google/mt5-small", "t5-small"),
        notes="pre-LN: hidden_states[-1] is after final_layer_norm (+ dropout, identity in eval)",
    ),
    Family(
        "BERT", ("bert",),
        encoder_layers="encoder.layer",
        examples=("bert-base-multilingual-cased",),
        notes="post-LN: no final norm",
    ),
    Family(
        "XLM-RoBERTa / RoBERTa", ("xlm-roberta", "roberta"),
        encoder_layers="encoder.layer",
        examples=("xlm-roberta-base", "xlm-roberta-large"),
        notes="post-LN: no final norm",
    ),
    Family(
        "GPT-2 style decoder-only", ("gpt2",),
        decoder_layers="h", decoder_final_norm="ln_f",
        examples=("gpt2", "sshleifer/tiny-gpt2"),
        notes="decoder-only: points are on the 'decoder' side; hidden_states[-1] is after ln_f",
    ),
)

#: The family table: ``config.model_type`` -> row.
FAMILIES: dict[str, Family] = {mt: row for row in _ROWS for mt in row.model_types}


def register_family(row: Family, *, overwrite: bool = False) -> None:
    """Add a family row at run time (refuses to overwrite an existing model_type unless told to)."""
    if not row.encoder_layers and not row.decoder_layers:
        raise ConfigError(f"family row {row.name!r} names no encoder_layers nor decoder_layers",
                          hint="give the path of the nn.ModuleList of blocks, relative to model.base_model")
    clash = [mt for mt in row.model_types if mt in FAMILIES]
    if clash and not overwrite:
        raise ConfigError(f"model_type(s) {clash!r} already have a family row",
                          hint="pass overwrite=True to replace them")
    for mt in row.model_types:
        FAMILIES[mt] = row


def family_for(model_type: str) -> Family | None:
    """The row for ``model_type``, or None (callers then try discovery)."""
    return FAMILIES.get(model_type)


#: ISO 639-1 -> NLLB-200 code, for the languages users ask for most (others: pass the NLLB code).
ISO_TO_NLLB: Mapping[str, str] = {
    "en": "eng_Latn", "fr": "fra_Latn", "de": "deu_Latn", "es": "spa_Latn", "it": "ita_Latn",
    "pt": "por_Latn", "ru": "rus_Cyrl", "uk": "ukr_Cyrl", "ar": "arb_Arab", "fa": "pes_Arab",
    "vi": "vie_Latn", "tl": "tgl_Latn", "zh": "zho_Hans", "ja": "jpn_Jpan", "ko": "kor_Hang",
    "hi": "hin_Deva", "bn": "ben_Beng", "tr": "tur_Latn", "sw": "swh_Latn", "ro": "ron_Latn",
    "pl": "pol_Latn", "id": "ind_Latn", "nl": "nld_Latn", "cs": "ces_Latn", "fi": "fin_Latn",
    "sv": "swe_Latn", "he": "heb_Hebr", "th": "tha_Thai", "el": "ell_Grek", "hu": "hun_Latn",
}
