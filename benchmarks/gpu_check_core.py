"""The GPU check's table and helpers (``benchmarks/gpu_check.py``): the ``Check`` being filled (rows,
device, the running step's deadline), its formatting, and the config composer every step uses."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch


class StepTimeout(BaseException):
    """Raised in the main thread when a step's time cap is reached (a BaseException, so that no
    ``except Exception`` on the way swallows it)."""


@dataclass
class Row:
    step: str
    setting: str
    figure: float | None
    unit: str
    status: str


def one_line(exc: BaseException, limit: int = 240) -> str:
    """``Type: first line of the message``, at most ``limit`` characters."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Check:
    """The table being filled, the device, and the running step's name, setting and deadline."""

    def __init__(
        self, dry_run: bool, workdir: Path, json_path: Path | None, fdr_workers: int, started: float | None = None
    ) -> None:
        self.dry_run = dry_run
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.workdir = workdir
        self.json_path = json_path
        self.fdr_workers = fdr_workers
        self.rows: list[Row] = []
        self.step = ""
        self.current = "-"
        self.deadline = math.inf
        self.started = time.time() if started is None else started  # the check's start, for its wall time
        self.children: dict[int, subprocess.Popen] = {}  # running train.py subprocesses, by pid
        self.children_lock = threading.Lock()

    # ---------------------------------------------------------------- rows
    def add(self, setting: str, figure: float | None, unit: str, status: str = "ok") -> None:
        row = Row(self.step, setting, None if figure is None else float(figure), unit, status)
        self.rows.append(row)
        print(f"  [{row.step}] {row.setting}: {format_figure(row.figure)} {row.unit}  {row.status}", flush=True)

    @contextlib.contextmanager
    def setting(self, name: str):
        """A measured setting: an error in it becomes its FAIL row, and the step goes on."""
        self.current = name
        try:
            yield
        except StepTimeout:
            raise  # ``current`` still names the setting, for the step's FAIL row
        except Exception as exc:  # noqa: BLE001  (every failure is reported, none stops the check)
            self.add(name, None, "", f"FAIL: {one_line(exc)}")
            if self.device.type == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
        self.current = "-"

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    # ---------------------------------------------------------------- device helpers
    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else None

    def add_peak(self, setting: str) -> None:
        """A peak-memory row (GPU only: the dry run has no device memory to report)."""
        peak = self.peak_gib()
        if peak is not None:
            self.add(setting, peak, "GiB peak")

    def timed(self, fn: Callable):
        """(result, seconds) of ``fn()``, device work included."""
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        return out, time.perf_counter() - start

    # ---------------------------------------------------------------- output
    def failed_steps(self) -> list[str]:
        return list(dict.fromkeys(r.step for r in self.rows if r.status != "ok"))

    def describe(self) -> dict:
        info = {
            "mode": "dry-run (CPU, tiny shapes)" if self.dry_run else "gpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "cpu_threads": torch.get_num_threads(),
        }
        if torch.cuda.is_available() and not self.dry_run:
            props = torch.cuda.get_device_properties(0)
            info["device"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, compute {props.major}.{props.minor})"
            info["bf16_supported"] = torch.cuda.is_bf16_supported()
        else:
            info["device"] = "cpu"
        return info

    def write_json(self) -> None:
        if self.json_path is None:
            return
        failed = self.failed_steps()
        payload = {
            **self.describe(),
            "ok": not failed,
            "failed_steps": failed,
            "wall_s": round(time.time() - self.started, 1),
            "rows": [asdict(r) for r in self.rows],
        }
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.json_path.with_suffix(self.json_path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, self.json_path)


def format_figure(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 0.01:
        return f"{value:.3g}"
    return f"{value:.1e}"


def format_table(rows: Sequence[Row]) -> str:
    header = ("step", "setting", "figure", "unit", "status")
    cells = [header] + [(r.step, r.setting, format_figure(r.figure), r.unit, r.status) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = []
    for k, c in enumerate(cells):
        lines.append(f"{c[0]:<{widths[0]}}  {c[1]:<{widths[1]}}  {c[2]:>{widths[2]}}  {c[3]:<{widths[3]}}  {c[4]}")
        if k == 0:
            lines.append("-" * min(200, len(lines[0]) + 8))
    return "\n".join(lines)


# ============================================================================ configs
def compose(overrides: Sequence[str], output_dir: Path | None = None):
    """conf/train.yaml composed with ``overrides``, as ``python train.py <overrides>`` would (Hydra's
    runtime config set, so ``${hydra:...}`` interpolations resolve)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from ppreid.config.resolvers import register_resolvers

    register_resolvers()
    out = Path(output_dir) if output_dir is not None else Path(tempfile.gettempdir()) / "gpu_check_compose"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
            cfg.hydra.runtime.output_dir = str(out)
            cfg.hydra.job.num = 0
        HydraConfig().set_config(cfg)
    backbone = cfg.get("backbone")
    if backbone is not None and backbone.get("pretrained") != "sandbox":
        from ppreid.run.sandbox_clip_fit import take_build_parameters

        take_build_parameters(cfg)  # what train.py's run does first, so instantiate(cfg.model) works
    return cfg
