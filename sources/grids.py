"""Point grids as YAML files (the format of data/grids/README.md), and the grids leadscore ships.

A grid is named by a file path, or by the name of a grid shipped inside the package
(`sources/builtin_grids/`, read with importlib.resources so it is found from any folder):
`default` is the grid found in lead-scoring guides.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from features.grid import PointGrid

BUILTIN_GRIDS: tuple[str, ...] = ("default",)
DEFAULT_GRID = "default"


def is_builtin_grid(name: str | Path) -> bool:
    """True for the name of a grid shipped with leadscore (a bare name, not a path)."""
    return str(name) in BUILTIN_GRIDS


def grid_text(path: str | Path) -> tuple[str, str]:
    """The YAML text of a grid and where it came from (a built-in name or a file path).

    Raises:
        FileNotFoundError: The file does not exist (the message lists the built-in names).
    """
    if is_builtin_grid(path):
        source = resources.files("sources") / "builtin_grids" / f"{path}.yaml"
        return source.read_text(encoding="utf-8"), f"built-in grid {path!s}"
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"{file}: no such grid file (a YAML file, or one of the built-in grids: {', '.join(BUILTIN_GRIDS)})"
        )
    return file.read_text(encoding="utf-8"), str(file)


def load_grid(path: str | Path) -> PointGrid:
    """Read and validate a point grid from a YAML file, or a built-in grid by name.

    Args:
        path: The YAML file (see data/grids/README.md for the format), or "default".

    Returns:
        The validated grid.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a valid grid; the message starts with the file name.
    """
    text, source = grid_text(path)
    return PointGrid.from_yaml(text, source=source)


def save_grid(grid: PointGrid, path: str | Path) -> None:
    """Write a grid as YAML that `load_grid` reads back to an equal grid.

    Args:
        grid: The grid to write.
        path: Destination file; overwritten if it exists.
    """
    Path(path).write_text(grid.to_yaml(), encoding="utf-8")
