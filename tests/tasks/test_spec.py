"""load_data / parse_spec: the spec strings of the CLI and suite files."""
from __future__ import annotations

from pathlib import Path

import pytest

from xlprobe.errors import DataError
from xlprobe.tasks import load_data, parse_spec
from xlprobe.tasks.spec import SCHEMES


def test_parse_spec() -> None:
    assert parse_spec("bible:en,fr?books=John,Acts&limit=5") == ("bible", "en,fr", {"books": "John,Acts", "limit": "5"})
    assert parse_spec("data/x.tsv?text=s") == ("tsv", "data/x.tsv", {"text": "s"})
    assert parse_spec("JSONL:a.jsonl") == ("jsonl", "a.jsonl", {})


def test_bible_languages_and_query() -> None:
    ds = load_data("bible:en,fr?books=Jude&testament=NT")
    assert [t["code"] for t in ds.meta["translations"]] == ["k", "l"]
    assert len(ds) == 50 and ds.meta["spec"] == "bible:en,fr?books=Jude&testament=NT"


def test_bible_codes_mixed_with_languages_and_limit() -> None:
    ds = load_data("bible:de,k?books=John&limit=30&seed=4")
    assert [t["code"] for t in ds.meta["translations"]] == ["e", "k"]
    assert ds.meta["n_groups"] == 30 and ds.meta["seed"] == 4
    same = load_data("bible:de,k?books=John&limit=30", seed=4)
    assert same.fingerprint == ds.fingerprint
    assert load_data("bible:de,k?books=John", limit=10).meta["n_groups"] == 10  # keyword overrides query
    assert load_data("bible:k?books=Jude&parallel=false&min_chars=200").meta["parallel"] is False


def test_tabular_schemes(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("sentence\tlanguage\ttopic\nHello\ten\ta\nSalut\tfr\tb\n", encoding="utf-8")
    ds = load_data(f"tsv:{path}?text=sentence&lang=language&labels=topic")
    assert [r.labels["topic"] for r in ds] == ["a", "b"]
    assert load_data(f"{path}?text=sentence&fixed_lang=xx")[0].lang == "xx"  # bare path
    csv = tmp_path / "t.csv"
    csv.write_text("text\nHi there\n", encoding="utf-8")
    assert load_data(f"csv:{csv}", fixed_lang="en")[0].text == "Hi there"


@pytest.mark.parametrize(("spec", "fragment", "hint"), [
    ("wiki:en", "unknown data scheme 'wiki'", "bible (bible:en,fr,de"),
    ("nothing-here", "has no scheme", "valid schemes"),
    ("bible:en?bogus=1", r"unknown option\(s\) \['bogus'\]", "books"),
    ("bible:en?limit=ten", "limit='ten' is not an integer", "limit="),
    ("bible:en?parallel=maybe", "is not a boolean", "parallel=true"),
    ("bible:en?books=John&books=Acts", "repeats key", "comma-separated"),
    ("tsv:", "no file path", "tsv:"),
    ("xnli:", "no language", "xnli:"),
])
def test_bad_specs(spec: str, fragment: str, hint: str) -> None:
    with pytest.raises(DataError, match=fragment) as info:
        load_data(spec)
    assert hint in info.value.hint


def test_every_scheme_is_documented() -> None:
    for name, scheme in SCHEMES.items():
        assert scheme.example.startswith(f"{name}:") and scheme.description
