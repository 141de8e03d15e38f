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
features. Explaining a row then costs about what a prediction does, in one compiled loop (numba)
over blocks of four rows: evaluate every node test as LightGBM does (missing types, default
directions, category sets), pack each tree's tests into its pattern index, and sum column by
column the table values the patterns select (`_Tables`). Trees with more than `max_nodes`
internal nodes are explained by `pred_contrib` itself, on their range of iterations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from math import factorial
from typing import Any, TypeVar, cast

import lightgbm as lgb
import numba
import numpy as np
from numpy.typing import NDArray

from features.threads import run_ranges

logger = logging.getLogger(__name__)

# 2^7 patterns: every tree of depth <= 3 (the project's default, `training.config`) fits.
DEFAULT_MAX_NODES = 7
# LightGBM's `kZeroThreshold` (the float literal 1e-35f): its predict reads a dense row as sparse,
# so a value within it of zero is 0.0 at every node (and missing at a "Zero" node).
_ZERO_THRESHOLD = float(np.float32(1e-35))
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
    features: NDArray[np.int64]  # (D,) the distinct features its nodes test, ascending
    table: NDArray[np.float64]  # (2^n, D) exact contributions by decision pattern; bit m = node m went left
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
        self._layout(ordered)
        self._tree_tables = [(tree.features, tree.table) for tree in ordered]
        self._grouped: dict[tuple[str, bytes, int], _Tables] = {}  # `group_sums`' tables
        self._combined: dict[tuple[str, bytes, int], _Tables] = {}  # and with the features'
        # Compiled (or loaded from numba's disk cache) now, not on the first request that needs reasons.
        self._tabulated(np.zeros((1, n_features)))

    @classmethod
    def from_booster(cls, booster: lgb.Booster, max_nodes: int = DEFAULT_MAX_NODES) -> ExactContributions:
        """Tabulate every tree of `booster` with at most `max_nodes` internal nodes.

        The trees are those `booster.predict` uses by default (up to the best iteration when
        early stopping set one).

        Args:
            booster: A binary-objective LightGBM model (one tree per iteration).
            max_nodes: Largest tree tabulated, in internal nodes (2^max_nodes patterns), at most 8;
                the others are explained by `pred_contrib` (logged once, here).

        Raises:
            ValueError: `max_nodes` is outside 0..8, or the model has several trees per iteration
                (multiclass).
        """
        if not 0 <= max_nodes <= _SLOTS:
            raise ValueError(f"max_nodes={max_nodes}: a tree's decisions are packed in {_SLOTS} byte slots, choose 0..{_SLOTS}")
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

    def contributions(self, matrix: NDArray[Any]) -> NDArray[np.float64]:
        """Exact TreeSHAP log-odds contributions, shaped as `pred_contrib`'s.

        Args:
            matrix: Encoded feature rows (n_rows, n_features), as `booster.predict` takes them.

        Returns:
            (n_rows, n_features + 1) float64: one column per feature, then the base value.
        """
        matrix = self._checked(matrix)
        out = self._tabulated(matrix)
        out[:, -1] = self._bias
        for deep in self._deep_contributions(matrix):
            out += deep
        return out

    def group_sums(self, matrix: NDArray[Any], groups: NDArray[Any], n_groups: int) -> NDArray[np.float64]:
        """Each row's exact contributions summed by group of features, the base value left out.

        The sums of `contributions`' columns group by group, added in another order (equal within
        rounding, `tests/test_treeshap.py`), in one pass over the tables and without the
        (n_rows, n_features + 1) array: what sub-scores of many leads need.

        Args:
            matrix: Encoded feature rows, as for `contributions`.
            groups: (n_features,) the group of each feature, 0 .. n_groups - 1.
            n_groups: How many groups.

        Returns:
            (n_rows, n_groups) float64.
        """
        groups = np.asarray(groups)
        key = self._grouping(groups, n_groups)
        if key not in self._grouped:
            self._grouped[key] = self._grouped_tables(groups, n_groups)
        matrix = self._checked(matrix)
        out = self._summed(matrix, self._grouped[key])
        self._add_deep_group_sums(out, self._deep_contributions(matrix), groups, n_groups)
        return out

    def contributions_with_group_sums(
        self, matrix: NDArray[Any], groups: NDArray[Any], n_groups: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """`contributions` and `group_sums` of the same rows in one pass over the tables: the same values to the bit.

        Every tree's table row holds its features' values and then its groups' sums, so each
        output cell adds the very values, in the same tree order, that either call alone adds
        (`tests/test_treeshap.py`); the rows' decision patterns are found once instead of twice.
        What a lead scored with reasons and sub-scores needs.

        Returns:
            (contributions, (n_rows, n_features + 1)), (group sums, (n_rows, n_groups)).
        """
        groups = np.asarray(groups)
        key = self._grouping(groups, n_groups)
        if key not in self._combined:
            self._combined[key] = self._combined_tables(groups, n_groups)
        matrix = self._checked(matrix)
        width = self.n_features + 1
        out = self._summed(matrix, self._combined[key])
        contributions, sums = np.ascontiguousarray(out[:, :width]), np.ascontiguousarray(out[:, width:])
        contributions[:, -1] = self._bias
        deep = self._deep_contributions(matrix)
        for part in deep:
            contributions += part
        self._add_deep_group_sums(sums, deep, groups, n_groups)
        return contributions, sums

    def _grouping(self, groups: NDArray[Any], n_groups: int) -> tuple[str, bytes, int]:
        """The key of `groups` among the grouped and combined tables; the groups are checked until one is built for them."""
        if groups.shape != (self.n_features,):
            raise ValueError(f"expected a group in 0..{n_groups - 1} for each of {self.n_features} features, got shape {groups.shape}")
        key = (groups.dtype.str, groups.tobytes(), n_groups)
        # Checked once: the same groups (a model's fit and behaviour) come on every call.
        known = key in self._grouped or key in self._combined
        if not known and groups.size and not (groups.min() >= 0 and groups.max() < n_groups):
            raise ValueError(f"expected a group in 0..{n_groups - 1} for each of {self.n_features} features, got {groups.min()}..{groups.max()}")
        return key

    @staticmethod
    def _add_deep_group_sums(out: NDArray[np.float64], deep: list[NDArray[np.float64]], groups: NDArray[Any], n_groups: int) -> None:
        for part in deep:
            for g in range(n_groups):
                out[:, g] += part[:, :-1][:, groups == g].sum(axis=1)

    def _checked(self, matrix: NDArray[Any]) -> NDArray[np.float64]:
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(f"expected a matrix of {self.n_features} feature columns, got shape {matrix.shape}")
        return np.ascontiguousarray(matrix)  # the kernel reads row by row (and is compiled for this layout)

    def _deep_contributions(self, matrix: NDArray[np.float64]) -> list[NDArray[np.float64]]:
        """LightGBM's `pred_contrib` of each run of deep (untabulated) trees; none when every tree is tabulated."""
        n = matrix.shape[0]
        if self._booster is None or not n:
            return []
        threads = 1 if n < _SINGLE_THREAD_ROWS else 0
        return [
            np.asarray(self._booster.predict(matrix, pred_contrib=True, start_iteration=first, num_iteration=count, num_threads=threads))
            for first, count in self._deep_runs
        ]

    # -- evaluation -----------------------------------------------------------------------
    def _layout(self, trees: list[_Tree]) -> None:
        """Flat arrays the kernels read: node tests grouped by how LightGBM decides, category masks, tables.

        Every tree has `_SLOTS` byte slots (its internal nodes, then unused ones): node m of tree t
        writes 1 << m when the row goes left there, else 0, into byte t * _SLOTS + m, so the
        tree's pattern is the sum of the bytes of its 64-bit word.
        """
        width = _SLOTS
        # Numeric nodes by decision group (`_NUMERIC_GROUPS`): a loop per group, no branch per node.
        numeric: dict[str, list[tuple[int, int]]] = {group: [] for group in _NUMERIC_GROUPS}  # (feature, slot)
        thresholds: dict[str, list[float]] = {group: [] for group in _NUMERIC_GROUPS}
        # Categorical nodes: (slot, bit, listed codes) per feature.
        categorical: dict[int, list[tuple[int, int, tuple[int, ...]]]] = {}
        for t, tree in enumerate(trees):
            for m, node in enumerate(tree.nodes):
                group = _decision_group(node)
                if group == "cat":
                    categorical.setdefault(node.feature, []).append((t * width + m, 1 << m, node.categories))
                else:
                    numeric[group].append((node.feature, t * width + m))
                    thresholds[group].append(node.threshold)
        # Unsigned indices, here and in `_Tables`: numba tests a signed index for negative
        # values (counting from the end) at every read; that was about a quarter of the kernel's time.
        self._nodes = np.asarray([n for group in _NUMERIC_GROUPS for n in numeric[group]], dtype=np.uint32).reshape(-1, 2)
        self._thresholds = np.asarray([x for group in _NUMERIC_GROUPS for x in thresholds[group]], dtype=np.float64)
        self._group_bounds = np.cumsum([0] + [len(numeric[group]) for group in _NUMERIC_GROUPS]).astype(np.uint64)
        # A categorical feature's code (its value truncated; NaN, negative or past every listed
        # code: "none", the last) selects a row of masks: the bit of every node on the feature
        # that sends that code left, in the node's slot.
        features = sorted(categorical)
        spans = [max(max(listed, default=-1) for _, _, listed in categorical[f]) + 1 for f in features]
        first_rows = np.cumsum([0] + [span + 1 for span in spans]).astype(np.int64)
        masks = np.zeros((int(first_rows[-1]), len(trees) * width), dtype=np.uint8)
        for f, first in zip(features, first_rows[:-1], strict=True):
            for slot, bit, listed in categorical[f]:
                masks[first + np.asarray(listed, dtype=np.int64), slot] = bit
        self._categorical = np.asarray(list(zip(features, spans, first_rows[:-1], strict=True)), dtype=np.int64).reshape(-1, 3)
        self._masks = masks
        self._tables = _laid_out([(tree.features, tree.table) for tree in trees], self.n_features + 1)

    def _decisions(self) -> tuple[NDArray[np.uint32], NDArray[np.float64], NDArray[np.uint64], NDArray[np.int64], NDArray[np.uint8]]:
        """The node tests, as the kernels take them."""
        return (self._nodes, self._thresholds, self._group_bounds, self._categorical, self._masks)

    def _patterns(self, columns: NDArray[Any]) -> NDArray[np.int64]:
        """(trees, rows) decision pattern of every tabulated tree: bit m set when node m goes left.

        Args:
            columns: The rows' features as (n_features, rows).
        """
        rows = np.ascontiguousarray(np.asarray(columns, dtype=np.float64).T)
        patterns: NDArray[np.int64] = _decision_patterns(rows, *self._decisions())
        return patterns

    def _tabulated(self, matrix: NDArray[np.float64]) -> NDArray[np.float64]:
        """(rows, n_features + 1) sums over the tabulated trees of their table rows (bias column 0).

        Args:
            matrix: C-contiguous float64 rows of `n_features` columns.
        """
        return self._summed(matrix, self._tables)

    def _grouped_tables(self, groups: NDArray[Any], n_groups: int) -> _Tables:
        """The trees' tables with their columns summed by group: one value per group a tree's features fall in.

        A row then reads one value per tree and group instead of one per feature.

        Returns:
            The tables of the (n_rows, n_groups) sums.
        """
        return _laid_out([_collapsed(features, table, groups) for features, table in self._tree_tables], n_groups)

    def _combined_tables(self, groups: NDArray[Any], n_groups: int) -> _Tables:
        """Each tree's table with its grouped sums beside it (`contributions_with_group_sums`).

        A tree's columns are its features, then its groups as columns n_features + 1 + group;
        the grouped values are those of `_grouped_tables`, computed the same way.
        """
        offset = self.n_features + 1
        parts = []
        for features, table in self._tree_tables:
            kept, collapsed = _collapsed(features, table, groups)
            parts.append((np.concatenate([features, offset + kept]), np.hstack([table, collapsed])))
        return _laid_out(parts, offset + n_groups)

    def _summed(self, matrix: NDArray[np.float64], tables: _Tables) -> NDArray[np.float64]:
        # Rows are independent: big batches run in ranges on every core (`features.threads`), the same to the bit.
        out = np.empty((matrix.shape[0], tables.width))
        decisions = self._decisions()

        def rows(start: int, stop: int) -> None:
            _tabulated_contributions(matrix[start:stop], *decisions, tables.starts, tables.strides, tables.bounds, tables.terms,
                                     tables.shift, tables.values, out[start:stop])

        run_ranges(rows, matrix.shape[0])
        return out


def _collapsed(features: NDArray[np.int64], table: NDArray[np.float64], groups: NDArray[Any]) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """A tree's groups (those of its features, ascending) and its table's columns summed by group, (patterns, groups)."""
    of_column = groups[features]
    kept = np.unique(of_column)
    return kept, np.stack([table[:, of_column == g].sum(axis=1) for g in kept], axis=1)


@dataclass(frozen=True)
class _Tables:
    """Tree tables as the kernel reads them, each output column with its terms.

    Tree t's values for decision pattern p start at `starts[t] + p * strides[t]`: its columns'
    values side by side. Output column c sums terms `bounds[c]` to `bounds[c + 1]`, each a tree
    and the place of the column among that tree's (`tree << shift | place`), in tree order: a
    cell adds its trees' values in LightGBM's order of trees, from 0.0, whatever the other
    columns and rows. Reading a row's values column by column, into a register, costs less than
    adding each tree's values into the row's cells.
    """

    starts: NDArray[np.uint64]  # (trees,)
    strides: NDArray[np.uint64]  # (trees,) columns of the tree
    bounds: NDArray[np.uint32]  # (width + 1,)
    terms: NDArray[np.uint32]  # tree << shift | place (32 bits: half the reads of 64)
    shift: np.uint32
    values: NDArray[np.float64]
    width: int


def _laid_out(parts: list[tuple[NDArray[Any], NDArray[np.float64]]], width: int) -> _Tables:
    """Tables as the kernel reads them (`_Tables`).

    Args:
        parts: Per tree, its output columns (ascending) and its (patterns, columns) table.
        width: Output columns; a column no tree has stays 0.0.
    """
    starts: list[int] = []
    terms: list[list[tuple[int, int]]] = [[] for _ in range(width)]
    tables: list[NDArray[np.float64]] = []
    values = 0
    for t, (columns, table) in enumerate(parts):
        starts.append(values)
        for place, column in enumerate(np.asarray(columns).tolist()):
            terms[column].append((t, place))
        tables.append(table.ravel())  # (patterns, columns) row-major: a pattern's values side by side
        values += table.size
    shift = max((len(columns) for columns, _ in parts), default=1).bit_length()
    return _Tables(
        starts=np.asarray(starts, dtype=np.uint64),
        strides=np.asarray([len(columns) for columns, _ in parts], dtype=np.uint64),
        bounds=np.cumsum([0] + [len(of_column) for of_column in terms]).astype(np.uint32),
        terms=np.asarray([t << shift | place for of_column in terms for t, place in of_column], dtype=np.uint32),
        shift=np.uint32(shift),
        values=np.concatenate(tables) if tables else np.zeros(0),
        width=width,
    )


# Byte slots per tree: room for the nodes of every tabulated tree (`max_nodes`). 8, one 64-bit
# word per tree, which `_pattern` reads as one.
_SLOTS = 8
# The numeric decision groups of `_decision_group`, in the order the kernels run them.
_NUMERIC_GROUPS = ("le", "not_gt", "zero_left", "zero_right")


# -- kernels ------------------------------------------------------------------------------
_F = TypeVar("_F", bound=Callable[..., Any])


def _njit(function: _F) -> _F:
    """`numba.njit`, the machine code cached on disk (`NUMBA_CACHE_DIR`), typed for mypy."""
    return cast(_F, numba.njit(cache=True, nogil=True)(function))


def _njit_inline(function: _F) -> _F:
    """`_njit`, inlined into its callers: no call (and no reference counting) per row and tree."""
    return cast(_F, numba.njit(cache=True, nogil=True, inline="always")(function))


@_njit_inline
def _decide_block(matrix: NDArray[np.float64], r0: int, x: NDArray[np.float64], slots: NDArray[np.uint8], nodes: NDArray[np.uint32],
                  thresholds: NDArray[np.float64], group_bounds: NDArray[np.uint64], categorical: NDArray[np.int64], masks: NDArray[np.uint8]) -> None:
    """Every node's test on rows r0 .. r0 + `_BLOCK_ROWS` - 1, decided as LightGBM's predict does, into their slots (`_layout`).

    A node's feature, slot and threshold are read once for the block's rows. Past the last row of
    `matrix`, a block repeats that row (its decisions are made and not used).

    Args:
        matrix: C-contiguous float64 rows.
        r0: The block's first row.
        x: Scratch, (n_features, `_BLOCK_ROWS`): the rows as LightGBM reads them, a feature's values side by side.
        slots: Written, (`_BLOCK_ROWS`, trees * `_SLOTS`): for each row, byte m of a tree's slots is 1 << m
            when the row goes left at node m, else 0.
    """
    last = matrix.shape[0] - 1
    for j in range(_BLOCK_ROWS):
        row = matrix[min(r0 + j, last)]
        for f in range(row.shape[0]):
            # LightGBM reads a dense row as sparse: a value within `_ZERO_THRESHOLD` of zero is 0.0 (NaN stays NaN).
            x[f, j] = 0.0 if abs(row[f]) <= _ZERO_THRESHOLD else row[f]
    slots[:] = 0
    # Categorical nodes: one row of masks per feature (its code's) sets the slots of all its nodes,
    # a few wide ORs instead of a look-up per node. As LightGBM: the code is the value truncated
    # to an int; NaN, negative or unlisted go right.
    for i in range(categorical.shape[0]):
        span = categorical[i, 1]
        for j in range(_BLOCK_ROWS):
            code = np.trunc(x[categorical[i, 0], j])
            mask = masks[categorical[i, 2] + (int(code) if code >= 0.0 and code < span else span)]
            row_slots = slots[j]
            for s in range(row_slots.shape[0]):
                row_slots[s] |= mask[s]
    # A loop per decision group, each test a shift rather than a branch: decisions vary node to
    # node unpredictably. Node m of a tree is byte m of its slots. NaN compares False both ways:
    # `<=` sends it right, `not >` sends it left. The four rows written out (`_BLOCK_ROWS`).
    for q in range(group_bounds[0], group_bounds[1]):  # le
        values, slot, threshold = x[nodes[q, 0]], nodes[q, 1], thresholds[q]
        bit = np.uint8(slot & (_SLOTS - 1))
        slots[0, slot] = np.uint8(values[0] <= threshold) << bit
        slots[1, slot] = np.uint8(values[1] <= threshold) << bit
        slots[2, slot] = np.uint8(values[2] <= threshold) << bit
        slots[3, slot] = np.uint8(values[3] <= threshold) << bit
    for q in range(group_bounds[1], group_bounds[2]):  # not_gt
        values, slot, threshold = x[nodes[q, 0]], nodes[q, 1], thresholds[q]
        bit = np.uint8(slot & (_SLOTS - 1))
        slots[0, slot] = np.uint8(not values[0] > threshold) << bit
        slots[1, slot] = np.uint8(not values[1] > threshold) << bit
        slots[2, slot] = np.uint8(not values[2] > threshold) << bit
        slots[3, slot] = np.uint8(not values[3] > threshold) << bit
    # Missing type "Zero": NaN and 0.0 are missing and go the node's default way.
    for q in range(group_bounds[2], group_bounds[3]):  # zero_left
        values, slot, threshold = x[nodes[q, 0]], nodes[q, 1], thresholds[q]
        bit = np.uint8(slot & (_SLOTS - 1))
        for j in range(_BLOCK_ROWS):
            value = values[j]
            slots[j, slot] = np.uint8(np.isnan(value) | (value == 0.0) | (value <= threshold)) << bit
    for q in range(group_bounds[3], group_bounds[4]):  # zero_right
        values, slot, threshold = x[nodes[q, 0]], nodes[q, 1], thresholds[q]
        bit = np.uint8(slot & (_SLOTS - 1))
        for j in range(_BLOCK_ROWS):
            value = values[j]
            slots[j, slot] = np.uint8((value != 0.0) & (value <= threshold)) << bit


@_njit_inline
def _pattern(words: NDArray[np.uint64], tree: int) -> np.uint64:
    """Tree `tree`'s decision pattern: the sum of the 8 bytes of its word (distinct bits, so no carries), by one product."""
    pattern: np.uint64 = (words[tree] * np.uint64(0x0101010101010101)) >> np.uint64(56)
    return pattern


@_njit
def _decision_patterns(matrix: NDArray[np.float64], nodes: NDArray[np.uint32], thresholds: NDArray[np.float64], group_bounds: NDArray[np.uint64],
                       categorical: NDArray[np.int64], masks: NDArray[np.uint8]) -> NDArray[np.int64]:
    """(trees, rows) decision patterns of the rows of `matrix` (C-contiguous float64)."""
    n_trees, n = masks.shape[1] // _SLOTS, matrix.shape[0]
    patterns = np.zeros((n_trees, n), dtype=np.int64)
    x = np.empty((matrix.shape[1], _BLOCK_ROWS))
    slots = np.zeros((_BLOCK_ROWS, masks.shape[1]), dtype=np.uint8)
    for r0 in range(0, n, _BLOCK_ROWS):
        _decide_block(matrix, r0, x, slots, nodes, thresholds, group_bounds, categorical, masks)
        for j in range(min(_BLOCK_ROWS, n - r0)):
            words = slots[j].view(np.uint64)
            for t in range(n_trees):
                patterns[t, r0 + j] = _pattern(words, t)
    return patterns


@_njit
def _tabulated_contributions(matrix: NDArray[np.float64], nodes: NDArray[np.uint32], thresholds: NDArray[np.float64], group_bounds: NDArray[np.uint64],
                             categorical: NDArray[np.int64], masks: NDArray[np.uint8], starts: NDArray[np.uint64], strides: NDArray[np.uint64],
                             bounds: NDArray[np.uint32], terms: NDArray[np.uint32], shift: np.uint32, values: NDArray[np.float64],
                             out: NDArray[np.float64]) -> None:
    """Writes into `out` (rows, width) the sums of the table values that the rows' decision patterns select (`_Tables`).

    Rows go `_BLOCK_ROWS` at a time: the node tests of the block's rows are made together
    (`_decide_block`), each term read serves every row of the block, and their sums are separate
    chains of adds that run side by side (one row's chain waits on each add). Each cell still
    adds its own values in its column's term order, so a row's contributions do not depend on
    the rows beside it.
    """
    x = np.empty((matrix.shape[1], _BLOCK_ROWS))
    slots = np.zeros((_BLOCK_ROWS, masks.shape[1]), dtype=np.uint8)
    n_trees, n = starts.shape[0], matrix.shape[0]
    first = np.empty((n_trees, _BLOCK_ROWS), dtype=np.uint64)  # where each tree's values for each row of the block start
    place_mask = (np.uint32(1) << shift) - np.uint32(1)
    for r0 in range(0, n, _BLOCK_ROWS):
        _decide_block(matrix, r0, x, slots, nodes, thresholds, group_bounds, categorical, masks)
        words0, words1, words2, words3 = slots[0].view(np.uint64), slots[1].view(np.uint64), slots[2].view(np.uint64), slots[3].view(np.uint64)
        for t in range(n_trees):
            start, stride = starts[t], strides[t]
            first[t, 0] = start + _pattern(words0, t) * stride
            first[t, 1] = start + _pattern(words1, t) * stride
            first[t, 2] = start + _pattern(words2, t) * stride
            first[t, 3] = start + _pattern(words3, t) * stride
        for c in range(bounds.shape[0] - 1):
            a0 = a1 = a2 = a3 = 0.0
            for i in range(bounds[c], bounds[c + 1]):
                term = terms[i]
                row_first, place = first[term >> shift], term & place_mask
                a0 += values[row_first[0] + place]
                a1 += values[row_first[1] + place]
                a2 += values[row_first[2] + place]
                a3 += values[row_first[3] + place]
            out[r0, c] = a0
            if r0 + 1 < n:
                out[r0 + 1, c] = a1
            if r0 + 2 < n:
                out[r0 + 2, c] = a2
            if r0 + 3 < n:
                out[r0 + 3, c] = a3


# Rows per block of the kernels (`_decide_block` and `_tabulated_contributions` write their loops over a block out for four).
_BLOCK_ROWS = 4


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

    def value(node: dict[str, Any]) -> NDArray[np.float64]:
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
