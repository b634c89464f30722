"""TSV / CSV / JSONL loaders: column mapping, fixed language, empty rows, error messages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from xlprobe.errors import DataError
from xlprobe.tasks import load_csv, load_jsonl, load_table, load_tsv


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    return _write(tmp_path / "pairs.tsv", (
        "sentence\tlanguage\ttopic\tpair\n"
        "Hello world\ten\tgreeting\tg1\n"
        "Bonjour le monde\tfr\tgreeting\tg1\n"
        "\ten\tgreeting\tg2\n"
        "Guten Tag\tde\t\tg3\n"
        "It said \"hi\"\ten\tquote\tg4\n"
    ))


def test_tsv_mapping(tsv: Path) -> None:
    ds = load_tsv(tsv, text="sentence", lang="language", labels="topic", group="pair")
    assert [r.text for r in ds] == ["Hello world", "Bonjour le monde", 'It said "hi"']
    assert [r.id for r in ds] == ["pairs:2", "pairs:3", "pairs:6"]  # file stem + line number
    assert ds[0].group == ds[1].group == "g1" and ds[0].labels == {"topic": "greeting"}
    assert ds.meta["dropped"] == {"empty_text": 1, "empty_lang": 0, "empty_label": 1}
    assert ds.meta["n_rows"] == 5 and ds.name == "pairs"


def test_fixed_lang_and_label_renames(tsv: Path) -> None:
    ds = load_tsv(tsv, text="sentence", fixed_lang="xx", labels={"topic_label": "topic"}, on_empty="drop")
    assert {r.lang for r in ds} == {"xx"} and ds[0].labels == {"topic_label": "greeting"}
    ds = load_tsv(tsv, text="sentence", lang="language", labels=["t:topic", "language"])
    assert ds[1].labels == {"t": "greeting", "language": "fr"}


def test_missing_column_names_file_line_and_columns(tsv: Path) -> None:
    with pytest.raises(DataError) as info:
        load_tsv(tsv)
    msg = str(info.value)
    assert "pairs.tsv, line 1" in msg and "'text' (for text)" in msg and "'lang' (for lang)" in msg
    assert "['sentence', 'language', 'topic', 'pair']" in info.value.hint and "fixed_lang" in info.value.hint
    with pytest.raises(DataError, match=r"'genre' \(for label:genre\)"):
        load_tsv(tsv, text="sentence", lang="language", labels="genre")


def test_empty_text_error_names_line_and_column(tsv: Path) -> None:
    with pytest.raises(DataError, match=r"pairs.tsv, line 4: empty text in column 'sentence'") as info:
        load_tsv(tsv, text="sentence", lang="language", on_empty="error")
    assert "on_empty='drop'" in info.value.hint
    with pytest.raises(DataError, match="on_empty must be one of"):
        load_tsv(tsv, text="sentence", lang="language", on_empty="skip")


def test_tsv_field_count_mismatch(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.tsv", "text\tlang\nok\ten\nonly one field\n")
    with pytest.raises(DataError, match=r"bad.tsv, line 3: 1 field\(s\), the header has 2"):
        load_tsv(path)


def test_csv_quoting_columns_and_targets(tmp_path: Path) -> None:
    path = _write(tmp_path / "mt.csv", 'src,tgt,id\n"Hello, world",Bonjour,a1\nYes,Oui,a2\n')
    ds = load_csv(path, text="src", fixed_lang="en", id="id", target_text="tgt", fixed_target_lang="fr")
    assert ds[0].text == "Hello, world" and ds[0].id == "a1"
    assert (ds[0].target_text, ds[0].target_lang) == ("Bonjour", "fr")
    headerless = _write(tmp_path / "raw.csv", "1,en,One\n2,fr,Un\n")
    ds = load_csv(headerless, columns=["id", "lang", "text"], id="id")
    assert [r.id for r in ds] == ["1", "2"] and ds[1].lang == "fr"


def test_duplicate_ids_raise(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.csv", "id,text,lang\nx,a b,en\nx,c d,en\n")
    with pytest.raises(DataError, match="line 3: id 'x' already used on line 2"):
        load_csv(path, id="id")


def test_jsonl(tmp_path: Path) -> None:
    rows = [{"text": "Hello", "lang": "en", "label": 1, "g": "p1"}, {"text": "Salut", "lang": "fr", "label": 0, "g": "p1"},
            {"text": "  ", "lang": "en", "label": 1, "g": "p2"}]
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = load_jsonl(path, labels="label", group="g")
    assert [r.labels["label"] for r in ds] == ["1", "0"] and ds.meta["dropped"]["empty_text"] == 1


@pytest.mark.parametrize(("content", "fragment"), [
    ('{"text": "a", "lang": "en"}\n{"text": "b", lang}\n', r"d.jsonl, line 2: not valid JSON"),
    ('{"text": "a", "lang": "en"}\n["a", "en"]\n', r"d.jsonl, line 2: expected a JSON object, got list"),
    ('{"text": "a", "lang": "en"}\n{"lang": "en"}\n', r"d.jsonl, line 2: no key 'text' \(for text\)"),
])
def test_jsonl_errors(tmp_path: Path, content: str, fragment: str) -> None:
    path = _write(tmp_path / "d.jsonl", content)
    with pytest.raises(DataError, match=fragment):
        load_jsonl(path)


def test_limit_samples_groups_in_file_order(tmp_path: Path) -> None:
    lines = ["text\tlang\tg"] + [f"s{i} {lang}\t{lang}\tg{i}" for i in range(20) for lang in ("en", "fr")]
    path = _write(tmp_path / "p.tsv", "\n".join(lines) + "\n")
    a = load_tsv(path, group="g", limit=5, seed=1)
    assert len(a) == 10 and len(set(a.groups)) == 5
    assert a.fingerprint == load_tsv(path, group="g", limit=5, seed=1).fingerprint
    assert [int(r.id.split(":")[1]) for r in a] == sorted(int(r.id.split(":")[1]) for r in a)
    assert len(load_tsv(path, limit=7)) == 7  # no group column: records


def test_load_table_by_extension(tsv: Path, tmp_path: Path) -> None:
    assert len(load_table(tsv, text="sentence", lang="language")) == 4
    with pytest.raises(DataError, match="cannot tell the format"):
        load_table(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="not found"):
        load_table(tmp_path / "missing.tsv")
