"""Suites: a valid YAML validates; every malformed one names file, line, key and the fix, loading nothing."""
from __future__ import annotations

import typing

import pytest

from xlprobe.errors import ConfigError
from xlprobe.suite import FIGURES, Suite, load_suite, parse_suite, unavailable_checkpoints

GOOD = """\
name: toy
checkpoints:
  - {model: toy:lm, role: base}
  - toy:mt
  - {model: toy:lm-cont, role: control}
data:
  corpus: bible
  languages: [en, fr, de, ru]
  books: [Ruth, Jonah, John]
  size: 300
layers: encoder.*
pooling: mean
measures:
  - probe.linear: {task: language}
  - separability.knn
  - transfer.gap: {task: book, train_lang: en}
figures: [umap, layer_curves]
seeds: [0, 1]
n_boot: 500
"""


def test_a_valid_suite_validates_with_its_roles_and_measure_parameters(tmp_path):
    file = tmp_path / "toy.yaml"
    file.write_text(GOOD)
    suite = load_suite(file)
    assert [c.label for c in suite.checkpoints] == ["toy:lm", "toy:mt", "toy:lm-cont"]
    assert suite.role("base").model == "toy:lm" and suite.role("control").model == "toy:lm-cont"
    assert [(m.name, m.params) for m in suite.measures] == [
        ("probe.linear", {"task": "language"}), ("separability.knn", {}),
        ("transfer.gap", {"task": "book", "train_lang": "en"})]
    assert suite.data.languages == ["en", "fr", "de", "ru"] and suite.seeds == [0, 1] and suite.n_boot == 500
    figures = typing.get_args(typing.get_args(Suite.model_fields["figures"].annotation)[0])
    assert figures == FIGURES


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        parse_suite(text, "s.yaml")
    return err.value


@pytest.mark.parametrize("old, new, where, words, hint", [
    ("n_boot: 500", "n_boot: 500\nnboot: 3", "s.yaml:20: nboot:", "Extra inputs", "allowed keys here"),
    ("  size: 300", "  size: 300\n  sise: 3", "s.yaml:11: data.sise:", "Extra inputs", "corpus, languages"),
    ("  - separability.knn", "  - separability.knnn", "s.yaml:15: measures[1].separability.knnn:",
     "unknown measure", "did you mean separability.knn"),
    ("train_lang: en}", "train_language: en}", "s.yaml:16: measures[2].transfer.gap.train_language:",
     "takes no parameter", "train_lang"),
    ("{task: book, train_lang: en}", "{train_lang: en}", "s.yaml:16: measures[2].transfer.gap:", "needs task",
     "task: book"),
    ("train_lang: en}", "train_lang: en, n_boot: 5}", "s.yaml:16: measures[2].transfer.gap.n_boot:",
     "set by the suite", "n_boot:"),
    ("  - transfer.gap: {task: book, train_lang: en}", "  - transfer.gap: {task: book, train_lang: en}\n"
     "  - attribution.path: {n_steps: 0}", "s.yaml:17: measures[3].attribution.path.n_steps:",
     "positive integer", "n_steps: 16"),
    ("  - transfer.gap: {task: book, train_lang: en}", "  - transfer.gap: {task: book, train_lang: en}\n"
     "  - attribution.path: {steps: 4}", "s.yaml:17: measures[3].attribution.path.steps:",
     "takes no parameter", "n_steps, max_items"),
    ("  - transfer.gap: {task: book, train_lang: en}", "  - attribution.path", "s.yaml:16: measures[2].attribution.path:",
     "needs a task", "transfer.gap with a task"),
    ("  - separability.knn", "  - separability.knn: {k: 5}", "s.yaml:15: measures[1].separability.knn.k:",
     "would be ignored", "register a variant"),
    ("  - transfer.gap: {task: book, train_lang: en}", "  - transfer.gap: {task: book, train_lang: en}\n"
     "  - attribution.path: {languages: [fr, de]}", "s.yaml:17: measures[3].attribution.path.languages:",
     "the training language among them", "languages: [en, ...]"),
    ("n_boot: 500", "n_boot: many", "s.yaml:19: n_boot:", "valid integer", ""),
    ("pooling: mean", "pooling: avg", "s.yaml:12: pooling:", "Input should be", "'mean'"),
    ("languages: [en, fr, de, ru]", "languages: []", "s.yaml:8: data.languages:", "at least 1", ""),
    ("  - toy:mt", "  - toy:mtt", "s.yaml:4: checkpoints[1]:", "no checkpoint 'toy:mtt'", "mt-o2m"),
    ("  - toy:mt", "  - random-init@x:toy:mt", "s.yaml:4: checkpoints[1]:", "bad random-init", "random-init@SEED"),
    ("  - toy:mt", "  - {model: toy:mt, role: base}", "s.yaml:4: checkpoints[1].role:", "given twice", "base"),
    ("  - toy:mt", "  - {model: toy:mt, role: baseline}", "s.yaml:4: checkpoints[1].role:", "Input should be",
     "'control'"),
    ("  - toy:mt", "  - toy:lm", "s.yaml:4: checkpoints[1]:", "listed twice", "name:"),
    ("figures: [umap, layer_curves]", "figures: [umap, heatmap]", "s.yaml:17: figures[1]:", "Input should be",
     "'cka_heatmap'"),
    ("measures:\n  - probe.linear: {task: language}\n  - separability.knn\n  - transfer.gap: {task: book, train_lang: en}\n",
     "measures: []\n", "s.yaml:13: measures:", "at least 1", ""),
    ("name: toy\n", "", "s.yaml:1: name:", "Field required", "add it"),
])
def test_each_malformed_suite_names_file_line_key_and_fix(old, new, where, words, hint):
    assert old in GOOD
    err = _error(GOOD.replace(old, new, 1))
    assert str(err).startswith(where), str(err)
    assert words in str(err) and hint in (err.hint or ""), (str(err), err.hint)


def test_a_checkpoint_not_here_to_load_is_refused_at_its_line_before_anything_loads(tmp_path, monkeypatch):
    import xlprobe.loading

    monkeypatch.setattr(xlprobe.loading, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    file = tmp_path / "s.yaml"
    file.write_text(GOOD.replace("  - toy:mt\n", f"  - {tmp_path / 'no-such-model'}\n"))
    assert load_suite(file).checkpoints[1].model.endswith("no-such-model")  # syntax only: fine
    with pytest.raises(ConfigError, match=r"s.yaml:4: checkpoints\[1\]: model folder .* does not exist") as err:
        load_suite(file, check_models=True)
    assert "save_pretrained" in err.value.hint
    assert [i for i, *_ in unavailable_checkpoints(load_suite(file))] == [1]


def test_yaml_syntax_errors_and_non_mappings_name_the_line(tmp_path):
    err = _error(GOOD.replace("  - toy:mt", "  - toy:mt\n   bad: [", 1))
    assert str(err).startswith("s.yaml:") and "YAML syntax error" in str(err)
    assert "indentation" in err.hint
    assert "a suite is a YAML mapping" in str(_error("- just\n- a list\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(tmp_path / "missing.yaml")


def test_validation_loads_no_model(monkeypatch):
    import xlprobe.loading

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(xlprobe.loading, "load_model", boom)
    parse_suite(GOOD)
    with pytest.raises(ConfigError):
        parse_suite(GOOD.replace("toy:mt\n", "toy:nope\n"))


def test_the_shipped_toy_suite_validates():
    from pathlib import Path

    import xlprobe

    suite = load_suite(Path(xlprobe.__file__).parent / "suites" / "toy.yaml")
    assert suite.role("base").model == "toy:lm" and suite.role("control").model == "toy:lm-cont"
    assert len(suite.data.languages) == 8 and suite.data.books == ["Ruth", "Jonah", "John"]
