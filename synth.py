"""Stage 1 of DPPP: write a GenePerson-format dataset. ``python synth.py [key=value ...]``.

Default: the offline procedural generator, 500 identities, into ``<paths.data_dir>/GenePerson``.
Diffusion: ``generator=diffusion generator.pretrained=/path/to/sd-folder``; the paper's scale:
``preset=genepers_paper``. Shards: ``shard=i num_shards=n`` (``-m shard=0,1 num_shards=2``);
``merge_only=true out_dir=X`` merges finished shards. See README.md and conf/synth.yaml.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ppreid.config.resolvers import register_resolvers  # noqa: E402
from ppreid.utils.errors import find_input_error  # noqa: E402

register_resolvers()
log = logging.getLogger("synth")


@hydra.main(version_base="1.3", config_path="conf", config_name="synth")
def main(cfg: DictConfig) -> None:
    from ppreid.config.compose_errors import task_started
    from ppreid.synth.pipeline import run_synthesis

    task_started()
    try:
        info = run_synthesis(cfg)
    except Exception as exc:  # bad input (also when wrapped by Hydra's instantiate): one clear line
        err = find_input_error(exc)
        if err is None:
            raise
        print(f"\nerror: {err}", file=sys.stderr)
        sys.exit(1)
    if info is not None:
        log.info(
            "GenePerson set complete: %d images of %d identities in %s (%.1f generated images/s)",
            info["num_images"],
            info["num_identities"],
            cfg.out_dir,
            info["images_per_second"] or 0.0,
        )


if __name__ == "__main__":
    from ppreid.config.compose_errors import run_reporting_compose_errors

    run_reporting_compose_errors(main, "synth")
