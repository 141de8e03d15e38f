"""Point grids as YAML files (the format of data/grids/README.md)."""

from __future__ import annotations

from pathlib import Path

from features.grid import PointGrid


def load_grid(path: str | Path) -> PointGrid:
    """Read and validate a point grid from a YAML file.

    Args:
        path: The YAML file (see data/grids/README.md for the format).

    Returns:
        The validated grid.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a valid grid; the message starts with the file name.
    """
    path = Path(path)
    return PointGrid.from_yaml(path.read_text(encoding="utf-8"), source=str(path))


def save_grid(grid: PointGrid, path: str | Path) -> None:
    """Write a grid as YAML that `load_grid` reads back to an equal grid.

    Args:
        grid: The grid to write.
        path: Destination file; overwritten if it exists.
    """
    Path(path).write_text(grid.to_yaml(), encoding="utf-8")
