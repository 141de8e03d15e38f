"""Exact TreeSHAP at about the cost of a prediction: per-tree tables of LightGBM's `pred_contrib`.

LightGBM's `pred_contrib` is path-dependent TreeSHAP (Lundberg et al., "From local explanations
to global understanding with explainable AI for trees", 2020): the Shapley values of the game
v(S) = "walk the tree; at a node testing a feature of S go where the row goes, at any other node
take both children, weighted by their share of the node's training rows". So v(S), and every
Shapley value of the tree, depends on the row only through the outcomes of the tree's node
tests, and of all of them, not only those on the row's path: v({j}) follows the row at every
node that tests j, in branches the row never reaches as well. Two rows that reach the same leaf
may thus get different contributions (`tests/test_treeshap.py` shows one); two rows with the
same decision pattern always get the same ones.

A tree with n internal nodes has at most 2^n decision patterns. For the project's trees
(depth <= 3, so n <= 7: at most 128 patterns) `ExactContributions` computes each pattern's
contribution vector once, exactly, from the Shapley formula over the subsets of the tree's
features. Explaining a batch then costs what a prediction does, plus a gather: evaluate every
node test as LightGBM does (missing types, default directions, category sets), pack each
tree's tests into its pattern index, read and add the tables' rows. Trees with more than
`max_nodes` internal nodes are explained by `pred_contrib` itself, on their range of iterations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from math import factorial
from typing import Any

import lightgbm as lgb
import numpy as np
from scipy import sparse

logger = logging.getLogger(__name__)

# 2^7 patterns: every tree of depth <= 3 (the project's default, `training.config`) fits.
DEFAULT_MAX_NODES = 7
# LightGBM's `kZeroThreshold` (the float literal 1e-35f): its predict reads a dense row as sparse,
# so a value within it of zero is 0.0 at every node (and missing at a "Zero" node).
_ZERO_THRESHOLD = float(np.float32(1e-35))
# Rows explained at once: the (table entries x rows) temporaries stay a few MB (cache-sized);
# measured faster per row than 64 or 1,000 rows on the benchmark model.
_CHUNK_ROWS = 256
# Up to this many rows (one lead, a small request) the sums go through bincount, past it a sparse product.
_FEW_ROWS = 16
# Below this many rows `pred_contrib` of deep trees runs on one thread (as `model.bundle` predicts).
_SINGLE_THREAD_ROWS = 2_000


@dataclass(frozen=True)
class _Node:
    """One internal node of a dumped tree, numbered in pre-order within its tree."""

    feature: int
    categorical: bool
    threshold: float  # numeric splits: go left when value <= threshold
    categories: tuple[int, ...]  # categorical splits: go left when the value's code is listed
    missing_type: str  # "None", "Zero" or "NaN"
    default_left: bool


@dataclass(frozen=True)
class _Tree:
    """One tabulated tree: its nodes, the features it uses and its pattern table."""

    nodes: list[_Node]
    features: np.ndarray  # (D,) the distinct features its nodes test, ascending
    table: np.ndarray  # (2^n, D) exact contributions by decision pattern; bit m = node m went left
    expected_value: float  # LightGBM's `Tree::ExpectedValue`: its share of the bias column


class ExactContributions:
    """Exact `pred_contrib` of a binary LightGBM model from precomputed per-tree tables.

    `contributions(matrix)` equals `booster.predict(matrix, pred_contrib=True)` to rounding
    (`tests/test_treeshap.py`: within 1e-9 on every row, missing values and categories included).
    """

    def __init__(self, booster: lgb.Booster, trees: dict[int, _Tree], deep: list[int], n_trees: int, n_features: int) -> None:
        self.n_features = n_features
        self.n_trees = n_trees
        self.tabulated = len(trees)
        # Deep trees are explained by LightGBM on runs of consecutive iterations.
        self._deep_runs = _runs(deep)
        self._booster = booster if deep else None
        self._bias = float(sum(t.expected_value for t in trees.values()))
        ordered = [trees[i] for i in sorted(trees)]
        self._width = max((len(t.nodes) for t in ordered), default=0)
        self._layout(ordered)

    @classmethod
    def from_booster(cls, booster: lgb.Booster, max_nodes: int = DEFAULT_MAX_NODES) -> ExactContributions:
        """Tabulate every tree of `booster` with at most `max_nodes` internal nodes.

        The trees are those `booster.predict` uses by default (up to the best iteration when
        early stopping set one).

        Args:
            booster: A binary-objective LightGBM model (one tree per iteration).
            max_nodes: Largest tree tabulated, in internal nodes (2^max_nodes patterns); the
                others are explained by `pred_contrib` (logged once, here).

        Raises:
            ValueError: The model has several trees per iteration (multiclass) or linear trees.
        """
        if not 0 <= max_nodes <= 12:
            raise ValueError(f"max_nodes={max_nodes}: tables have 2^max_nodes rows per tree, choose 0..12")
        dump = booster.dump_model()
        if dump.get("num_tree_per_iteration", 1) != 1:
            raise ValueError(f"ExactContributions explains one tree per iteration; this model has {dump['num_tree_per_iteration']}")
        n_features = int(dump["max_feature_idx"]) + 1
        trees: dict[int, _Tree] = {}
        deep: list[int] = []
        for i, info in enumerate(dump["tree_info"]):
            structure = info["tree_structure"]
            if "leaf_coeff" in structure or info["num_leaves"] - 1 > max_nodes:
                deep.append(i)
            else:
                trees[i] = _tabulate(structure, info["num_leaves"])
        if deep:
            logger.warning(
                "%d of %d trees have more than %d internal nodes: their reasons come from LightGBM's pred_contrib (slower)",
                len(deep), len(dump["tree_info"]), max_nodes,
            )
        return cls(booster, trees, deep, len(dump["tree_info"]), n_features)

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Exact TreeSHAP log-odds contributions, shaped as `pred_contrib`'s.

        Args:
            matrix: Encoded feature rows (n_rows, n_features), as `booster.predict` takes them.

        Returns:
            (n_rows, n_features + 1) float64: one column per feature, then the base value.
        """
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(f"expected a matrix of {self.n_features} feature columns, got shape {matrix.shape}")
        n = matrix.shape[0]
        if self._entry_feature.size and 0 < n <= _CHUNK_ROWS:
            out = self._tabulated(matrix)
        elif self._entry_feature.size and n:
            out = np.concatenate([self._tabulated(matrix[start : start + _CHUNK_ROWS]) for start in range(0, n, _CHUNK_ROWS)])
        else:
            out = np.zeros((n, self.n_features + 1))
        out[:, -1] = self._bias
        if self._booster is not None and n:
            threads = 1 if n < _SINGLE_THREAD_ROWS else 0
            for first, count in self._deep_runs:
                out += self._booster.predict(
                    matrix, pred_contrib=True, start_iteration=first, num_iteration=count, num_threads=threads
                )
        return out

    # -- evaluation -----------------------------------------------------------------------
    def _layout(self, trees: list[_Tree]) -> None:
        """Flat arrays for the vectorised evaluation: node slots, split groups, table entries."""
        width = self._width
        slot, feature, threshold, group, categories = [], [], [], [], []
        for t, tree in enumerate(trees):
            for m, node in enumerate(tree.nodes):
                slot.append(t * width + m)
                feature.append(node.feature)
                threshold.append(node.threshold)
                group.append(_decision_group(node))
                categories.append(node.categories)
        self._n_slots = len(trees) * width
        # Node m of a tree is bit m of its pattern; bytes while they fit (up to 8 nodes).
        self._slot_bits = np.tile(1 << np.arange(width), len(trees)).astype(np.uint8 if width <= 8 else np.uint16)[:, None]
        slots, groups = np.asarray(slot, dtype=np.intp), np.asarray(group)
        features, thresholds = np.asarray(feature, dtype=np.intp), np.asarray(threshold, dtype=np.float64)
        # One group per way LightGBM decides: each costs one or two whole-array operations.
        self._groups: dict[str, tuple[Any, ...]] = {}
        for kind in ("le", "not_gt", "zero_left", "zero_right"):
            chosen = groups == kind
            if chosen.any():
                self._groups[kind] = (slots[chosen], features[chosen], thresholds[chosen][:, None])
        # Categorical nodes: a row's code is computed once per feature, then each node reads its
        # decision from its row of a look-up table (its category set; the last column is "no
        # listed category"), all nodes at once.
        self._categorical: tuple[Any, ...] | None = None
        chosen = np.flatnonzero(groups == "cat")
        if chosen.size:
            cat_features, position = np.unique(features[chosen], return_inverse=True)
            outside = max(max(categories[i], default=0) for i in chosen) + 1
            lookup = np.zeros((len(chosen), outside + 1), dtype=np.uint8)
            for r, i in enumerate(chosen):
                lookup[r, list(categories[i])] = 1
            offsets = (np.arange(len(chosen)) * (outside + 1)).astype(np.intp)[:, None]
            self._categorical = (slots[chosen], cat_features, position, lookup.ravel(), offsets, float(outside))
        # Table entries (tree, local feature) ordered by feature, trees in order within one.
        tables, base, entry_tree, entry_offset, entry_feature = [], 0, [], [], []
        for t, tree in enumerate(trees):
            # Stored feature by feature: entry (t, k) reads table[offset + pattern].
            patterns, d = tree.table.shape
            tables.append(tree.table.T.ravel())
            entry_tree += [t] * d
            entry_offset += [base + k * patterns for k in range(d)]
            entry_feature += tree.features.tolist()
            base += tree.table.size
        self._table = np.concatenate(tables) if tables else np.zeros(0)
        order = np.argsort(np.asarray(entry_feature, dtype=np.intp), kind="stable")
        self._entry_feature = np.asarray(entry_feature, dtype=np.intp)[order]
        self._entry_tree = np.asarray(entry_tree, dtype=np.intp)[order]
        self._entry_offset = np.asarray(entry_offset, dtype=np.intp)[order][:, None]
        # (features + 1, entries) ones: its product with the (entries, rows) table values adds each
        # feature's entries in entry order, the trees in LightGBM's order.
        n_entries = len(self._entry_feature)
        self._to_features = sparse.csr_matrix(
            (np.ones(n_entries), (self._entry_feature, np.arange(n_entries))), shape=(self.n_features + 1, n_entries)
        )

    def _patterns(self, columns: np.ndarray) -> np.ndarray:
        """(trees, rows) decision pattern of every tabulated tree: bit m set when node m goes left.

        Args:
            columns: The rows' features as (n_features, rows), C-contiguous, values within
                `_ZERO_THRESHOLD` of zero already 0.0.
        """
        n = columns.shape[1]
        left = np.zeros((self._n_slots, n), dtype=self._slot_bits.dtype)
        # NaN compares False both ways: `<=` sends it right, `not >` sends it left.
        if "le" in self._groups:
            slots, features, thresholds = self._groups["le"]
            left[slots] = columns[features] <= thresholds
        if "not_gt" in self._groups:
            slots, features, thresholds = self._groups["not_gt"]
            left[slots] = ~(columns[features] > thresholds)
        for group, default_left in (("zero_left", True), ("zero_right", False)):
            if group in self._groups:
                slots, features, thresholds = self._groups[group]
                values = columns[features]
                left[slots] = np.where(np.isnan(values) | (values == 0.0), default_left, values <= thresholds)
        if self._categorical is not None:
            slots, cat_features, position, lookup, offsets, outside = self._categorical
            # As LightGBM: the code is the value truncated to an int; NaN, negative or unlisted go right.
            codes = np.trunc(columns[cat_features])
            listed = (codes >= 0) & (codes < outside)  # False for NaN
            column = np.where(listed, codes, outside).astype(np.intp)
            left[slots] = lookup.take(column[position] + offsets)
        left *= self._slot_bits
        patterns: np.ndarray = np.bitwise_or.reduce(left.reshape(-1, self._width, n), axis=1)
        return patterns

    def _tabulated(self, chunk: np.ndarray) -> np.ndarray:
        """(rows, n_features + 1) sums over the tabulated trees of their table rows (bias column 0)."""
        columns = chunk.T.copy()  # (features, rows): gathering node features copies whole rows
        columns[np.abs(columns) <= _ZERO_THRESHOLD] = 0.0  # as LightGBM reads a dense row (NaN stays NaN)
        patterns = self._patterns(columns)
        values = self._table.take(patterns[self._entry_tree] + self._entry_offset)  # (entries, rows)
        n, width = chunk.shape[0], self.n_features + 1
        if n <= _FEW_ROWS:
            # bincount adds in entry order as the sparse product does, without its fixed cost.
            cells = (self._entry_feature[:, None] + np.arange(0, n * width, width)).ravel()
            return np.bincount(cells, weights=values.ravel(), minlength=n * width).reshape(n, width)
        return np.ascontiguousarray(np.asarray(self._to_features @ values).T)


def _decision_group(node: _Node) -> str:
    """How LightGBM decides at `node`, as one of the vectorised groups of `_patterns`.

    "le": left when value <= threshold, a missing value right; "not_gt": the same, a missing
    value left; "zero_left"/"zero_right": missing type "Zero" (NaN and zero are missing) with
    that default; "cat": a categorical split.
    """
    if node.categorical:
        return "cat"
    if node.missing_type == "Zero":
        return "zero_left" if node.default_left else "zero_right"
    if node.missing_type == "NaN":
        return "not_gt" if node.default_left else "le"
    # No missing direction: LightGBM reads NaN as 0.0 and compares it with the threshold.
    return "not_gt" if node.threshold >= 0.0 else "le"


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted indices as (first, length)."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


# -- tables -------------------------------------------------------------------------------
def _tabulate(structure: dict[str, Any], num_leaves: int) -> _Tree:
    """The exact TreeSHAP contributions of one dumped tree, for every decision pattern.

    v(pattern, S) is the path-dependent expectation (Lundberg et al. 2020, Algorithm 1) with
    the row's decisions given by the pattern; the Shapley value of local feature d is
    sum over S not holding d of |S|! (D - |S| - 1)! / D! * (v(S + d) - v(S)).
    """
    nodes: list[_Node] = []
    _collect(structure, nodes)
    features = np.unique(np.asarray([node.feature for node in nodes], dtype=np.intp))
    local = {int(f): d for d, f in enumerate(features)}
    n, d_count = len(nodes), len(features)
    patterns, subsets = np.arange(2**n), np.arange(2**d_count)
    counter = iter(range(n))

    def value(node: dict[str, Any]) -> np.ndarray:
        # (patterns, subsets) expectation under the node, nodes numbered in pre-order as `_collect`.
        if "split_index" not in node:
            return np.full((1, 1), float(node["leaf_value"]))
        m = next(counter)
        left, right = value(node["left_child"]), value(node["right_child"])
        count = float(node["internal_count"])
        share_left, share_right = _count(node["left_child"]) / count, _count(node["right_child"]) / count
        goes_left = ((patterns >> m) & 1).astype(bool)[:, None]
        in_subset = ((subsets >> local[nodes[m].feature]) & 1).astype(bool)[None, :]
        follow = np.where(goes_left, left, right)
        return np.where(in_subset, follow, left * share_left + right * share_right)

    table = np.zeros((2**n, d_count))
    if n:
        v = np.broadcast_to(value(structure), (2**n, 2**d_count))
        sizes = np.asarray([bin(s).count("1") for s in subsets])
        weights = np.asarray([factorial(k) * factorial(d_count - k - 1) / factorial(d_count) for k in range(d_count)])
        for d in range(d_count):
            without = subsets[(subsets >> d) & 1 == 0]
            table[:, d] = (v[:, without | (1 << d)] - v[:, without]) @ weights[sizes[without]]
    return _Tree(nodes, features, table, _expected_value(structure, num_leaves))


def _collect(node: dict[str, Any], nodes: list[_Node]) -> None:
    """Append the internal nodes under `node` in pre-order."""
    if "split_index" not in node:
        return
    categorical = node["decision_type"] == "=="
    threshold = node["threshold"]
    nodes.append(
        _Node(
            feature=int(node["split_feature"]),
            categorical=categorical,
            threshold=float("nan") if categorical else float(threshold),
            categories=tuple(int(c) for c in str(threshold).split("||")) if categorical else (),
            missing_type=str(node["missing_type"]),
            default_left=bool(node["default_left"]),
        )
    )
    _collect(node["left_child"], nodes)
    _collect(node["right_child"], nodes)


def _count(node: dict[str, Any]) -> float:
    return float(node["internal_count"] if "split_index" in node else node["leaf_count"])


def _expected_value(structure: dict[str, Any], num_leaves: int) -> float:
    """LightGBM's `Tree::ExpectedValue`: leaf values weighted by leaf counts over the root's count."""
    if num_leaves == 1:
        return float(structure["leaf_value"])
    leaves: list[tuple[int, float, float]] = []

    def walk(node: dict[str, Any]) -> None:
        if "split_index" in node:
            walk(node["left_child"])
            walk(node["right_child"])
        else:
            leaves.append((int(node["leaf_index"]), float(node["leaf_count"]), float(node["leaf_value"])))

    walk(structure)
    total = float(structure["internal_count"])
    expected = 0.0
    for _, count, value in sorted(leaves):
        expected += (count / total) * value
    return expected
