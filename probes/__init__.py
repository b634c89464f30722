"""xlprobe.probes: every measure, one family per file, registered in one place (this file).

Importing a measure module runs its ``@register_measure`` decorators, so this file imports each one
explicitly: a new measure is one module plus one import line here. The registry never imports this
package: ``xlprobe/__init__.py`` gives it a loader that does, run the first time a measure is looked up
or listed (see ``xlprobe.registry``).

Note: ``xlprobe.probes.cka`` is the *function* :func:`~xlprobe.probes.cka.cka` (re-exported here);
the module stays importable as ``from xlprobe.probes.cka import ...``.
"""
from xlprobe.probes import alignment as _alignment  # noqa: F401  (registers alignment.neighbour_overlap)
from xlprobe.probes import attribution as _attribution  # noqa: F401  (registers attribution.path)
from xlprobe.probes import cca as _cca  # noqa: F401  (registers svcca, pwcca)
from xlprobe.probes import cka as _cka  # noqa: F401  (registers cka, cka.linear, cka.rbf, and .debiased)
from xlprobe.probes import geometry as _geometry  # noqa: F401  (registers geometry.*)
from xlprobe.probes import interventions as _interventions  # noqa: F401  (registers intervention.metric)
from xlprobe.probes import items as _items  # noqa: F401  (per-item scores of mean measures; no measures)
from xlprobe.probes import mdl as _mdl  # noqa: F401  (registers mdl.codelength, mdl.compression)
from xlprobe.probes import probing as _probing  # noqa: F401  (registers probe.linear, probe.mlp, ...)
from xlprobe.probes import procrustes as _procrustes  # noqa: F401  (registers procrustes)
from xlprobe.probes import retrieval as _retrieval  # noqa: F401  (registers retrieval.p_at_1[.centered|.margin])
from xlprobe.probes import separability as _separability  # noqa: F401  (registers separability.*)
from xlprobe.probes import stats as _stats  # noqa: F401  (no measures: CIs and tests)
from xlprobe.probes import tokens as _tokens  # noqa: F401  (registers tokens.share, tokens.decision)
from xlprobe.probes import transfer as _transfer  # noqa: F401  (registers transfer.accuracy, transfer.gap)
from xlprobe.probes import units as _units  # noqa: F401  (registers units.ablation_drop, units.layer_ablation_drop)
from xlprobe.probes import weights as _weights  # noqa: F401  (registers weights.*)
from xlprobe.probes.alignment import cross_language_cka, neighbour_overlap, neighbour_overlaps
from xlprobe.probes.attribution import ParameterPathAttribution
from xlprobe.probes.cca import cca_correlations, pwcca, svcca
from xlprobe.probes.cka import cka, cka_from_store, cka_matrix, cka_streaming
from xlprobe.probes.classifiers import PROBES, LinearProbe, MLPProbe, make_probe
from xlprobe.probes.controls import control_task_labels, first_word_types, shuffled_labels
from xlprobe.probes.geometry import anisotropy, effective_rank, norm_stats
from xlprobe.probes.mdl import MDLResult, online_codelength
from xlprobe.probes.parallel import pair_rows
from xlprobe.probes.probing import probe_layers
from xlprobe.probes.procrustes import procrustes_distance
from xlprobe.probes.retrieval import RetrievalResult, retrieval_hits, retrieval_matrix, retrieval_p_at_1
from xlprobe.probes.separability import (
    centroid_distances,
    fisher_ratio,
    knn_accuracy,
    knn_correct,
    nearest_centroid_accuracy,
    silhouette,
)
from xlprobe.probes.stats import BootstrapCI, PermutationResult, bootstrap_ci, paired_permutation_test
from xlprobe.probes.tokens import TokenAttribution, tag_attribution
from xlprobe.probes.transfer import transfer_probe
from xlprobe.probes.units import (
    LayerUnitImportance,
    ablation_check,
    layer_ablation_check,
    source_batch,
    unit_importance,
)
from xlprobe.probes.weights import aggregate_weights, compare_weights, weight_spectra

__all__ = [
    # probes and their controls
    "LinearProbe", "MLPProbe", "PROBES", "make_probe", "probe_layers", "shuffled_labels", "control_task_labels", "first_word_types",
    "online_codelength", "MDLResult", "transfer_probe",
    # similarity / distance between representations
    "cka", "cka_matrix", "cka_streaming", "cka_from_store", "svcca", "pwcca", "cca_correlations",
    "procrustes_distance",
    # separability and geometry of one representation
    "fisher_ratio", "silhouette", "knn_accuracy", "knn_correct", "nearest_centroid_accuracy", "centroid_distances",
    "effective_rank", "anisotropy", "norm_stats",
    # cross-lingual alignment
    "retrieval_matrix", "retrieval_p_at_1", "retrieval_hits", "RetrievalResult", "cross_language_cka", "pair_rows",
    "neighbour_overlap", "neighbour_overlaps",
    # which parameters diverge between checkpoints
    "compare_weights", "aggregate_weights", "weight_spectra", "ParameterPathAttribution", "unit_importance",
    "ablation_check", "LayerUnitImportance", "layer_ablation_check", "source_batch",
    # which input tokens a probe's decision comes from (the language tag or the words)
    "TokenAttribution", "tag_attribution",
    # uncertainty
    "bootstrap_ci", "paired_permutation_test", "BootstrapCI", "PermutationResult",
]
