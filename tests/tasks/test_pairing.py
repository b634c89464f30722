"""with_targets: each record paired with the parallel verse its decoder is teacher-forced on."""
from __future__ import annotations

import logging

import pytest

from xlprobe.errors import DataError
from xlprobe.tasks import load_bible, load_data, with_targets
from xlprobe.tasks.pairing import TARGET_LABEL, is_data_spec
from xlprobe.types import Dataset


@pytest.fixture(scope="module")
def en_fr_de() -> Dataset:
    """Five verses of Ruth in English, French and German."""
    return load_bible(["en", "fr", "de"], books="Ruth", limit=5)


def _verse(ds: Dataset, group: str, lang: str) -> str:
    return next(r.text for r in ds if r.group == group and r.lang == lang)


def test_one_target_pairs_the_parallel_verse_and_drops_its_own_language(en_fr_de, caplog):
    with caplog.at_level(logging.WARNING, logger="xlprobe.tasks.pairing"):
        paired = with_targets(en_fr_de, "en")
    assert len(paired) == 10 and {r.lang for r in paired} == {"fr", "de"}
    for r in paired:
        assert r.target_lang == "en" and r.labels[TARGET_LABEL] == "en"
        assert r.target_text == _verse(en_fr_de, r.group, "en") != r.text
    assert [r.id for r in paired] == [r.id for r in en_fr_de if r.lang != "en"]  # ids kept
    assert paired.meta["targets"]["dropped_own"] == 5 and "5 record(s) of language 'en' dropped" in caplog.text


def test_own_language_paired_with_a_fallback(en_fr_de):
    paired = with_targets(en_fr_de, "en", own="fr")
    assert len(paired) == 15
    for r in paired:
        assert r.target_lang == ("fr" if r.lang == "en" else "en")
        assert r.target_text == _verse(en_fr_de, r.group, r.target_lang)


def test_each_repeats_every_record_once_per_other_language(en_fr_de):
    paired = with_targets(en_fr_de, "each")
    ids = [r.id for r in paired]
    assert len(paired) == 30 and len(set(ids)) == 30
    for r in paired:
        assert r.target_lang != r.lang and r.id.endswith(f">{r.target_lang}")
        assert r.labels[TARGET_LABEL] == r.target_lang
        assert r.target_text == _verse(en_fr_de, r.group, r.target_lang)
    assert paired.meta["targets"]["langs"] == ["en", "fr", "de"]
    assert len(with_targets(en_fr_de, "en,fr")) == 5 + 5 + 10  # en -> fr; fr -> en; de -> en and fr


def test_targets_from_another_corpus_matched_by_group(en_fr_de):
    fr_de = en_fr_de.subset([i for i, r in enumerate(en_fr_de) if r.lang != "en"])
    paired = with_targets(fr_de, "bible:en")
    assert len(paired) == 10 and paired.meta["targets"]["pool"] == "bible:en"
    assert all(r.target_text == _verse(en_fr_de, r.group, "en") for r in paired)
    assert is_data_spec("bible:en") and is_data_spec("x.tsv") and not is_data_spec("en") and not is_data_spec("each")


def test_a_group_missing_the_target_language_is_named_or_dropped(en_fr_de):
    pool = load_data("bible:ru?books=Ruth")
    first = en_fr_de[0].group
    pool = pool.subset([i for i, r in enumerate(pool) if r.group != first])
    with pytest.raises(DataError, match=rf"1 of 5 group\(s\) lack a target text.*{first}") as err:
        with_targets(en_fr_de, pool=pool, tgt="ru")
    assert "present in every group" in err.value.hint and "incomplete='drop'" in err.value.hint
    kept = with_targets(en_fr_de, pool=pool, tgt="ru", incomplete="drop")
    assert len(kept) == 12 and first not in {r.group for r in kept}
    assert kept.meta["targets"]["dropped_groups"] == 1


def test_bad_requests_are_clear_errors(en_fr_de):
    with pytest.raises(DataError, match="absent from") as err:
        with_targets(en_fr_de, "ru")
    assert "bible:ru" in err.value.hint
    with pytest.raises(DataError, match="already have a target"):
        with_targets(with_targets(en_fr_de, "en"), "fr")
    with pytest.raises(DataError, match="no parallel group"):
        with_targets(Dataset.from_texts(["a", "b"], "en"), "en")
    with pytest.raises(DataError, match="two 'en' texts"):
        with_targets(load_bible(translations="k,3", langs="fr", books="Ruth", limit=2), "en")
    with pytest.raises(DataError, match="incomplete="):
        with_targets(en_fr_de, "en", incomplete="skip")
