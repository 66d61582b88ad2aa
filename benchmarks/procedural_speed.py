"""Images per second of the procedural generator (stage 1), in one process and with worker processes.

    python benchmarks/procedural_speed.py [--images 800] [--workers 2]

Prints one line per (size, processes). The figures depend on the machine and on other load.
"""

from __future__ import annotations

import argparse
import time

from ppreid.synth.attributes import AttributeSchema
from ppreid.synth.generators.procedural import ProceduralGenerator
from ppreid.synth.plan import SynthPlan
from ppreid.synth.prompts import PromptBuilder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    per_id = 8
    plan = SynthPlan(
        AttributeSchema.from_config(),
        PromptBuilder.from_config(),
        max(1, args.images // per_id),
        num_cameras=6,
        seed=0,
        images_per_identity=(per_id, per_id),
    )
    images = [img for ident in plan.identities() for img in ident.images]
    for height, width in ((256, 128), (128, 64)):
        requests = [img.request(height, width) for img in images]
        for workers in (0, args.workers):
            gen = ProceduralGenerator(num_workers=workers)
            gen.generate(requests[:16])  # start workers, fill caches
            start = time.perf_counter()
            gen.generate(requests)
            seconds = time.perf_counter() - start
            gen.close()
            print(
                f"procedural {height}x{width}: {len(requests) / seconds:7.1f} images/s "
                f"({max(1, workers)} process{'es' if workers > 1 else ''}, {len(requests)} images)"
            )


if __name__ == "__main__":
    main()
