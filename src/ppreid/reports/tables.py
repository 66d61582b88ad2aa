"""Build a results table from finished runs (their ``results.json`` files only).

    python experiments/tables.py logs/train/multiruns/2026-11-23_10-00-00
    python experiments/tables.py logs/train/runs/* --metrics R1 R5 mAP --format csv --out table.csv
    python experiments/tables.py logs/ --label model loss epochs --targets night_cctv station_indoor
    python experiments/tables.py logs/ --include-debug --show-hash
    python experiments/tables.py logs/audits --baseline logs/audits/unprotected --mean-only   # privacy audits
    python experiments/tables.py experiments/results/dppp_sandbox --metrics mAP val:mAP loss:loss minutes
    python experiments/tables.py logs/dppp_sandbox --pairs "pdm_aligned-clipreid_aligned,pdm_aligned-pdm_random"
    python experiments/tables.py --update-docs        # from the repository root: every docs table block

Every folder given is searched recursively for ``results.json``. Runs are grouped by
``identity.config_hash`` alone (same resolved config, only the seed differs), so runs of different
configs are never pooled. A cell is the mean over the group's runs (seeds), with the sample standard
deviation when there are several, in percent; ``mean/<metric>`` is, per run, the mean over the
table's targets, then mean ± std over the runs. The label columns (``--label``) come from the
identity block (or the top level of results.json); when two configs share labels a ``config``
column with the short hash tells them apart. Debug, evaluation-only (``train=false``) and partial
(``limit_*_batches``) runs are left out unless their ``--include-*`` flag is given, and files
without an identity block (older run writer) are left out with a warning.

Privacy audits (``model=attack`` runs, whose results.json has a ``privacy`` section) are grouped by
``audit.group_hash`` (the audited model's config and the attack config, not the checkpoint path, so
the audits of one config's seeds pool) and labelled by the audited model (``extractor.<key>`` labels
read ``audit.extractor``). Their columns add, per target, ``<kind>:<attacker>`` with kind ``SSIM``,
``PSNR``, ``null`` (the SSIM of the attacker's null, trained on shuffled features), ``gain`` (SSIM above
the null), ``leak`` / ``leakref`` (leakage rank-1 through the audited / the reference model, %) and
``nleak`` (normalized leakage, %: 0 = chance, 100 = as identifiable as the real images), for an attacker,
``strongest`` (the largest gain in that run) or, for SSIM / PSNR, ``mean_image`` (the control). Run-level
columns: ``gain`` and ``nleak`` (the strongest attacker's gain, the most-leaking attacker's normalized
leakage; ``gain_in`` / ``nleak_in`` the same in-domain), ``probe_nuis`` / ``probe_soft`` (the linear
attribute probes' mean balanced-accuracy gain over chance, in points, for nuisance / soft-biometric
attributes), ``chance``, ``URR`` (mAP / SSIM of the strongest attacker) and, with ``--baseline RUN_DIR``
(the audits of the unprotected model), ``nURR`` = (mAP / mAP_base) / (SSIM / SSIM_base), the
baseline's values being its means over its runs.

Run-level columns (one per run, after the per-target ones): ``val:<metric>`` (the source validation
split, %), ``loss:<term>[@first|@last|@<epoch>]`` (a training loss's epoch mean, results.json's
``training`` block), ``run:<dotted.path>`` (any number of results.json as written) and ``minutes`` (wall
time). Per-target fields: ``<section>.<key>`` (a fraction of another per-target section, in %, e.g.
``scene_sensitivity.diff_bg_ap``) and ``privacy.<path>`` (the audit's per-target entry, as written).

A results bundle (``experiments/bundle.py``: ``<bundle>/bundle.json`` and ``<bundle>/<row>/s<seed>.json``)
reads like the run folders it came from, labelled by ``row``. ``--pairs "A-B,C-D"`` prints paired-by-seed
differences of study rows with their 95% t interval instead of the rows (:mod:`ppreid.reports.pairs`).
``--update-docs`` / ``--check-docs`` render / check the docs' ``<!-- table: ARGS -->`` blocks
(:mod:`ppreid.reports.doc_tables`).

Published figures (``--published FILE``, e.g. ``experiments/published/dppp.yaml``) are added below our
rows, never pooled with them: each published row fills the label columns it names, its figures
(``<target>/<metric>`` in percent; ``n/a`` where the file says null, i.e. not published or not available
to us) and a last ``source`` column naming the paper and table (``ours`` for our rows).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ppreid.reports.columns import default_metrics, privacy_baseline
from ppreid.reports.doc_tables import doc_pages, stale_blocks, update_pages
from ppreid.reports.pairs import MissingRow, pairs_note, pairs_table
from ppreid.reports.published import load_published, published_rows  # noqa: E402,F401  (re-exported)
from ppreid.reports.run_results import (
    METRICS,
    PRIVACY_KINDS,
    PRIVACY_SCALARS,
    TableInputError,  # noqa: E402,F401
    _warn_stderr,
    check_metrics,
    find_results,
    is_audit,
    load_result,
    select_runs,
)
from ppreid.reports.table_build import DEFAULT_LABEL, PRIVACY_LABEL, build_table, render, units_note, write_atomic


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tables.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    ap.add_argument(
        "paths",
        nargs="*",
        help="run folders (searched recursively), results.json files or results bundles (experiments/results/<study>)",
    )
    ap.add_argument(
        "--metrics",
        nargs="+",
        help=f"any of {' '.join(METRICS)}; for privacy audits also "
        f"{', '.join(PRIVACY_SCALARS)} and <kind>:<attacker> with kind {', '.join(PRIVACY_KINDS)}; per run "
        "val:<metric> (source validation), loss:<term>[@first|@last|@<epoch>], run:<dotted.path>, minutes; "
        "per target <section>.<key> (e.g. scene_sensitivity.diff_bg_ap) "
        "(default: R1 mAP, plus the privacy columns when the runs are audits)",
    )
    ap.add_argument(
        "--label",
        nargs="+",
        help="label columns: identity keys (or top-level results.json keys, or "
        "extractor.<key> for audits); default: row for a results bundle, else model backbone data experiment, "
        "for audits extractor.model extractor.experiment",
    )
    ap.add_argument("--targets", nargs="+", help="targets to show, in this order (default: all, sorted)")
    ap.add_argument("--show-hash", action="store_true", help="always add the config (short hash) column")
    ap.add_argument("--include-debug", action="store_true", help="include debug runs (debug=..., fast_dev_run)")
    ap.add_argument("--include-eval-only", action="store_true", help="include evaluation-only runs (train=false)")
    ap.add_argument("--include-partial", action="store_true", help="include runs evaluated on part of a target")
    ap.add_argument(
        "--baseline", metavar="RUN_DIR", help="audits of the unprotected model (one config, any seeds): adds nURR"
    )
    ap.add_argument("--mean-only", action="store_true", help="only the mean-over-targets columns")
    ap.add_argument(
        "--published",
        metavar="FILE",
        help="published figures (YAML, e.g. experiments/published/dppp.yaml) shown below our rows, "
        "labelled by their source",
    )
    ap.add_argument(
        "--pairs",
        metavar="A-B,C-D",
        help="instead of the rows: paired-by-seed differences of study rows (the folder a run sits in, or a "
        "bundle's row), with the mean and its 95%% t confidence interval over the paired seeds",
    )
    ap.add_argument(
        "--pair-metric",
        default="mAP",
        help="what --pairs compares: a per-target metric (mean over the targets) or a per-run one (default: mAP)",
    )
    ap.add_argument(
        "--pair-share-of",
        metavar="B|C-D",
        help="with --pairs: each seed's A - B in percent of B's value (B) or of a control pair's difference "
        "at the same seed (C-D, e.g. the leak's own excess unprotected_leak-bot)",
    )
    ap.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument(
        "--update-docs",
        action="store_true",
        help="rewrite every '<!-- table: ARGS -->' block of README.md, docs/*.md and experiments/README.md "
        "with this script's output for ARGS (paths relative to the current folder: run it from the repository root)",
    )
    ap.add_argument(
        "--check-docs", action="store_true", help="like --update-docs, but only report stale blocks (exit 1)"
    )
    ap.add_argument("--group", nargs="+", help=argparse.SUPPRESS)
    return ap


def _under(root: Path | None, path: str | None) -> str | None:
    return None if path is None or root is None or Path(path).is_absolute() else str(root / path)


def table_text(args: argparse.Namespace, root: Path | None = None, warn: Callable[[str], None] = _warn_stderr) -> str:
    """The table (markdown with its units line, or csv) that ``args`` ask for; paths relative to ``root``
    when given (else to the current folder). Raises TableInputError."""
    if args.group is not None:
        raise TableInputError(
            "--group was removed: runs are grouped by identity.config_hash; use --label to choose the label columns"
        )
    if not args.paths:
        raise TableInputError("no run folders, results.json files or results bundles given")
    check_metrics(args.metrics or [])
    if args.pairs is not None:
        check_metrics([args.pair_metric])
    elif args.pair_share_of is not None:
        raise TableInputError("--pair-share-of scales --pairs; give --pairs too")
    paths = [_under(root, p) or p for p in args.paths]
    published = load_published(Path(_under(root, args.published) or args.published)) if args.published else None
    runs = [load_result(p) for p in find_results(paths, warn)]
    kept = select_runs(runs, args.include_debug, args.include_eval_only, args.include_partial, warn)
    if args.pairs is not None:
        header, rows, notes = pairs_table(kept, args.pairs, args.pair_metric, args.targets, share_of=args.pair_share_of)
        text = render(header, rows, fmt=args.format)
        if args.format == "markdown":
            note = pairs_note(args.pair_metric, share_of=args.pair_share_of)
            text += "\n" + " ".join([note, *(n + "." for n in notes)]) + "\n"
        return text
    baseline = None
    if args.baseline:
        base_runs = [load_result(p) for p in find_results([_under(root, args.baseline) or args.baseline], warn)]
        baseline = privacy_baseline(
            select_runs(base_runs, args.include_debug, args.include_eval_only, args.include_partial, warn)
        )
    metrics = args.metrics or default_metrics(kept, baseline is not None)
    if args.label:
        label = args.label
    elif any(is_audit(r) for r in kept):
        label = list(PRIVACY_LABEL)
    elif all(isinstance(r.result.get("row"), str) for r in kept):
        label = ["row"]
    else:
        label = list(DEFAULT_LABEL)
    header, rows = build_table(
        kept, metrics, label, args.targets, args.show_hash, warn=warn, baseline=baseline, mean_only=args.mean_only
    )
    if published is not None:
        rows = [r + ["ours"] for r in rows] + [
            r + [p["source"]] for r, p in zip(published_rows(published, header, label), published)
        ]
        header = header + ["source"]
    text = render(header, rows, fmt=args.format)
    if args.format == "markdown":
        text += "\n" + units_note(metrics) + "\n"
    else:
        warn(units_note(metrics))
    return text


def doc_block(arguments: str, root: Path, warn: Callable[[str], None] = _warn_stderr) -> str:
    """The body of a docs block ``<!-- table: <arguments> -->`` (see :mod:`ppreid.reports.doc_tables`):
    the command line, then its table, or "not yet run" while a path it names is not in the repository."""
    argv = shlex.split(arguments)
    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        raise TableInputError(f"docs block '<!-- table: {arguments} -->': not a tables.py command line") from None
    if args.out or args.update_docs or args.check_docs or args.format != "markdown":
        raise TableInputError(
            f"docs block '<!-- table: {arguments} -->': markdown to the page only (no --out, --format)"
        )
    check_metrics([*(args.metrics or []), args.pair_metric])  # a misspelt column fails before the study has run
    missing = [p for p in args.paths + [args.baseline, args.published] if p and not (root / p).exists()]
    if missing:
        return f"*Not yet run*: no results under `{missing[0]}` yet.\n"
    try:
        table = table_text(args, root, warn)
    except MissingRow as err:  # a study bundled before all its rows ran
        return f"*Not yet run*: {err}.\n"
    return f"`python experiments/tables.py {arguments}`:\n\n" + table


def _docs(args: argparse.Namespace) -> int:
    root = Path.cwd()
    pages = [root / p for p in args.paths] if args.paths else doc_pages(root)
    notes: list[str] = []

    def render_block(arguments: str) -> str:
        return doc_block(arguments, root, warn=notes.append)

    if args.check_docs:
        stale = stale_blocks(pages, render_block, root)
        for line in stale:
            print(f"stale docs table: {line} (python experiments/tables.py --update-docs rewrites it)", file=sys.stderr)
        return 1 if stale else 0
    changed = update_pages(pages, render_block, write_atomic)
    print(
        "\n".join(f"updated {p.relative_to(root) if p.is_relative_to(root) else p}" for p in changed)
        or "docs up to date"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.update_docs or args.check_docs:
            return _docs(args)
        text = table_text(args)
        if args.out:
            write_atomic(Path(args.out), text)
    except (TableInputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
