"""Published figures beside our rows in a table (``tables.py --published FILE``): read the YAML file
and lay its rows out under a ``build_table`` header. Published numbers are never pooled with ours."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ppreid.reports.run_results import METRICS, TableInputError, _decimals, _fmt_value


def load_published(path: Path) -> list[dict]:
    """The rows of a published-figures file: ``rows: [{label: {key: value}, source: str, metrics: {...}}]``.

    ``metrics`` maps ``<target>/<metric>`` (metric one of METRICS) to a percentage or null (n/a).
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TableInputError(f"published-figures file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as err:
        raise TableInputError(f"cannot read published-figures file {path}: {err}") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise TableInputError(f"{path}: expected a non-empty list under 'rows:' (label, source, metrics)")
    for i, row in enumerate(rows):
        if not (
            isinstance(row, dict)
            and isinstance(row.get("label"), dict)
            and isinstance(row.get("source"), str)
            and isinstance(row.get("metrics"), dict)
        ):
            raise TableInputError(f"{path}: row {i} needs 'label' (mapping), 'source' (text) and 'metrics' (mapping)")
        for key, value in row["metrics"].items():
            target, _, metric = str(key).rpartition("/")
            if not target or metric not in METRICS:
                raise TableInputError(
                    f"{path}: row {i}: metric key {key!r} is not <target>/<metric> with a metric "
                    f"among {', '.join(METRICS)}"
                )
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise TableInputError(f"{path}: row {i}: {key} = {value!r} is not a percentage or null")
    return rows


def published_rows(published: Sequence[dict], header: Sequence[str], label: Sequence[str]) -> list[list[str]]:
    """Rows for ``header`` (a ``build_table`` header) from published figures, one per published row.

    Label cells come from the row's ``label`` ("-" when it does not name that key); ``kind`` reads
    "published"; ``runs``/``seeds``/``config`` read "-"; a figure reads "n/a" when the file gives null and
    "-" when it does not list it; ``mean/<metric>`` is the mean over the table's targets when every one
    is published. The caller appends the ``source`` column.
    """
    targets = [c.rpartition("/")[0] for c in header if "/" in c and not c.startswith("mean/")]
    out = []
    for row in published:
        cells = []
        for col in header:
            if col in label:
                cells.append(_fmt_value(row["label"][col]) if col in row["label"] else "-")
            elif col == "kind":
                cells.append("published")
            elif col in ("runs", "seeds", "config"):
                cells.append("-")
            else:
                target, _, metric = col.rpartition("/")
                if target == "mean":
                    vals = [row["metrics"].get(f"{t}/{metric}") for t in dict.fromkeys(targets)]
                    ok = vals and all(isinstance(v, (int, float)) for v in vals)
                    cells.append(f"{sum(vals) / len(vals):.{_decimals(metric)}f}" if ok else "-")
                elif col not in row["metrics"]:
                    cells.append("-")
                else:
                    v = row["metrics"][col]
                    cells.append("n/a" if v is None else f"{v:.{_decimals(metric)}f}")
        out.append(cells)
    return out
