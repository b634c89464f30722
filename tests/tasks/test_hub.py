"""Hub loaders: row -> Record mappings on fake rows, the offline / missing-package errors, local copies."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xlprobe.errors import DataError
from xlprobe.tasks import load_flores, load_pawsx, load_tatoeba, load_xnli
from xlprobe.tasks.hub_rows import (
    align_parallel,
    flores_records,
    pawsx_records,
    tatoeba_records,
    xnli_records,
)

FLORES_EN = [{"id": 1, "text": "The cat sat.", "topic": "animals", "domain": "wikinews"},
             {"id": 2, "text": "  ", "topic": "misc", "domain": "wikivoyage"},
             {"id": 3, "text": "It rained.", "topic": "weather", "domain": "wikinews"}]
FLORES_FR = [{"id": 1, "text": "Le chat s'est assis.", "topic": "animals", "domain": "wikinews"},
             {"id": 2, "text": "Divers.", "topic": "misc", "domain": "wikivoyage"},
             {"id": 3, "text": "Il a plu.", "topic": "weather", "domain": "wikinews"}]


def test_flores_mapping_and_alignment() -> None:
    en, fr = flores_records(FLORES_EN, "eng_Latn", "dev"), flores_records(FLORES_FR, "fra_Latn", "dev")
    assert len(en) == 2 and len(fr) == 3  # the blank English sentence is skipped
    assert en[0].group == fr[0].group == "flores:dev:1"
    assert en[0].id == "eng_Latn:flores:dev:1"
    assert dict(en[0].labels) == {"language": "eng_Latn", "topic": "animals", "domain": "wikinews"}
    records, dropped = align_parallel([en, fr])
    assert dropped == 1 and [r.id for r in records] == [
        "eng_Latn:flores:dev:1", "fra_Latn:flores:dev:1", "eng_Latn:flores:dev:3", "fra_Latn:flores:dev:3"]
    assert len(align_parallel([en, fr], parallel=False)[0]) == 5
    legacy = flores_records([{"id": 7, "sentence": "Old format."}], "en", "devtest")  # facebook/flores rows
    assert legacy[0].text == "Old format." and legacy[0].labels == {"language": "en"}


def test_tatoeba_mapping() -> None:
    rows = [{"sentence1": "Je t'aime.", "sentence2": "I love you."}, {"sentence1": "", "sentence2": "Hi."}]
    records = tatoeba_records(rows, "fra", "eng", "fra-eng")
    assert [(r.lang, r.text, r.group) for r in records] == [
        ("fra", "Je t'aime.", "tatoeba:fra-eng:0"), ("eng", "I love you.", "tatoeba:fra-eng:0")]


def test_xnli_mapping() -> None:
    rows = [{"premise": "A man eats.", "hypothesis": "Someone eats.", "label": 0},
            {"premise": "A man eats.", "hypothesis": "Nobody eats.", "label": 2},
            {"premise": "Broken.", "hypothesis": "Row.", "label": -1}]
    records = xnli_records(rows, "en", "test", sep=" | ")
    assert [r.labels["nli"] for r in records] == ["entailment", "contradiction"]
    assert records[0].text == "A man eats. | Someone eats." and records[1].group == "xnli:test:1"


def test_pawsx_mapping() -> None:
    rows = [{"id": 11, "sentence1": "A b.", "sentence2": "B a.", "label": 1},
            {"id": 12, "sentence1": "C d.", "sentence2": "", "label": 0}]
    records = pawsx_records(rows, "de", "validation")
    assert len(records) == 1 and records[0].group == "pawsx:validation:11"
    assert records[0].labels == {"language": "de", "paraphrase": "yes"} and records[0].text == "A b. B a."


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode, as with HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 (no network calls, no retries)."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize(("loader", "name"), [
    (lambda **kw: load_flores(["en", "fr"], **kw), "FLORES+"),
    (lambda **kw: load_tatoeba("fr", **kw), "Tatoeba"),
    (lambda **kw: load_xnli("en,fr", **kw), "XNLI"),
    (lambda **kw: load_pawsx(["en"], **kw), "PAWS-X"),
])
def test_offline_error_says_how_to_use_a_local_copy(offline: None, tmp_path: Path, loader, name: str) -> None:
    with pytest.raises(DataError, match=f"could not load {name}") as info:
        loader(cache_dir=tmp_path)
    hint = info.value.hint
    assert "data_dir=" in hint and "HF_DATASETS_OFFLINE=1" in hint and "load_tsv" in hint


def test_missing_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataError, match="needs the 'datasets' package") as info:
        load_xnli(["en"])
    assert "pip install 'xlprobe[hub]'" in info.value.hint and "load_tsv" in info.value.hint


def test_bad_arguments_fail_before_the_hub(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"XNLI has no language\(s\) \['xx'\]"):
        load_xnli(["en", "xx"])
    with pytest.raises(DataError, match="has no split 'train'"):
        load_flores(["en"], split="train")
    with pytest.raises(DataError, match="is not a directory"):
        load_pawsx(["en"], data_dir=tmp_path / "nowhere")


def test_local_copy_saved_to_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    for lang, premises in (("en", ["One.", "Two.", "Three."]), ("fr", ["Un.", "", "Trois."])):
        rows = [{"premise": p, "hypothesis": "h", "label": i % 3} for i, p in enumerate(premises)]
        datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / lang))
    ds = load_xnli(["en", "fr"], data_dir=tmp_path)
    assert [r.id for r in ds] == ["en:xnli:test:0", "fr:xnli:test:0", "en:xnli:test:2", "fr:xnli:test:2"]
    assert ds.meta["dropped"] == {"en": {"unusable": 0, "not_parallel": 1}, "fr": {"unusable": 1, "not_parallel": 0}}
    assert ds.meta["licence"] == "check" and ds.meta["shippable"] is False


def test_datasets_is_imported_lazily() -> None:
    code = "import sys, xlprobe.tasks; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
