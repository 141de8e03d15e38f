"""A bundle's LightGBM forest compiled to machine code, for large batches.

LightGBM's own `predict` walks its trees through a generic interpreter: on the default model
(a few hundred small trees) that is most of the cost of a nightly rescore. `lleaves` compiles the
same model file to native code with LLVM, ten times faster on this project's models.

The raw scores are bit-identical to `Booster.predict(..., raw_score=True)`: the forest is
compiled without cache blocking, so the trees are summed in LightGBM's order
(`tests/test_compiled.py` checks equality on missing values and unseen categories). Nothing
else changes: calibration, tiers and grids read the same raw score.

Compiling costs seconds (a few hundred trees: about 8 s on 2 cores), so the machine code is
cached per model and machine under `<state dir>/compiled/` and loaded in milliseconds the next
time. The key holds the model's content hash, the compiler versions and the host CPU, since the
code is built for the CPU that compiled it. When `lleaves` is not installed or compiling fails,
callers get None and keep LightGBM's predict.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the CLI imports this module for `CompileMode`: keep its start-up light
    import lightgbm as lgb
    from numpy.typing import NDArray

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "LEADSCORE_COMPILED_DIR"
# In "auto" mode a forest that is not cached yet is compiled for batches at least this large:
# from there LightGBM's predict costs more than compiling (about 8 s, or ~800k rows of predict
# on 2 cores), counting the batches of the following nights that find it cached.
COMPILE_MIN_ROWS = 500_000
# Below this many rows one thread: starting threads costs more than a few hundred trees on a row.
_SINGLE_THREAD_ROWS = 2_000


class CompileMode(StrEnum):
    """When batch scoring uses the compiled forest.

    auto: when already cached for this model and machine, or the batch is large enough to pay for
    compiling it (`COMPILE_MIN_ROWS`); always: compile if needed; never: LightGBM's predict.
    """

    auto = "auto"
    always = "always"
    never = "never"


def compiled_dir() -> Path:
    """`$LEADSCORE_COMPILED_DIR`, else `compiled/` in the state folder (`model.settings`)."""
    from model.settings import load_settings

    return load_settings().resolved_compiled_dir()


class _Predictor(Protocol):
    """What `CompiledForest` calls on a compiled `lleaves.Model` (lleaves has no type hints)."""

    def predict(self, data: NDArray[Any], n_jobs: int) -> NDArray[Any]: ...


class CompiledForest:
    """A compiled forest: `raw(matrix)` equals `booster.predict(matrix, raw_score=True)`."""

    def __init__(self, model: _Predictor, path: Path) -> None:
        self._model = model
        self.path = path

    def raw(self, matrix: NDArray[Any]) -> NDArray[Any]:
        """Raw scores (log-odds) of the rows of an encoded feature matrix."""
        import numpy as np

        threads = 1 if matrix.shape[0] < _SINGLE_THREAD_ROWS else os.cpu_count() or 1
        return self._model.predict(np.ascontiguousarray(matrix, dtype=np.float64), n_jobs=threads)

    @classmethod
    def for_booster(cls, booster: lgb.Booster, *, compile_if_missing: bool, cache: Path | None = None) -> CompiledForest | None:
        """The compiled form of `booster`, from the cache or freshly compiled into it.

        Args:
            booster: A binary LightGBM model.
            compile_if_missing: Compile when the cache has no entry for this model and machine;
                otherwise return None in that case.
            cache: Cache folder (default: `compiled_dir()`).

        Returns:
            The compiled forest, or None: not cached and not asked to compile, `lleaves` not
            installed, or compiling failed (logged as a warning).
        """
        try:
            import lleaves
            import llvmlite.binding as llvm
        except ImportError:
            logger.info("lleaves is not installed: batch scoring uses LightGBM's predict")
            return None
        text = booster.model_to_string()
        llvm.initialize_native_target()
        machine = f"{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features().flatten()}"
        key = hashlib.sha256(
            "\n".join([text, version("lleaves"), version("llvmlite"), machine]).encode()
        ).hexdigest()[:24]
        folder = cache or compiled_dir()
        model_path, code_path = folder / f"{key}.txt", folder / f"{key}.o"
        if not code_path.is_file():
            if not compile_if_missing:
                return None
            logger.info("compiling the model's %d trees to machine code (once per model and machine)", booster.num_trees())
            try:
                _compile_into(text, booster.num_trees(), model_path, code_path)
            except Exception as error:
                logger.warning("compiling the forest failed (%s): batch scoring uses LightGBM's predict", error)
                return None
        try:
            model = lleaves.Model(model_file=str(model_path))
            model.compile(cache=str(code_path), raw_score=True, fblocksize=model.num_trees())
        except Exception as error:
            logger.warning("the compiled forest in %s cannot be loaded (%s): batch scoring uses LightGBM's predict", folder, error)
            return None
        return cls(model, code_path)


def _compile_into(text: str, n_trees: int, model_path: Path, code_path: Path) -> None:
    # Written under temporary names and renamed, so a process reading the cache never loads a
    # half-written object file; two processes compiling at once write the same bytes.
    import lleaves

    model_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_path.parent) as scratch:
        tmp_model, tmp_code = Path(scratch) / "model.txt", Path(scratch) / "model.o"
        tmp_model.write_text(text)
        # fblocksize = all trees: no cache blocking, so the sum runs in LightGBM's tree order.
        lleaves.Model(model_file=str(tmp_model)).compile(cache=str(tmp_code), raw_score=True, fblocksize=n_trees)
        os.replace(tmp_model, model_path)
        os.replace(tmp_code, code_path)
