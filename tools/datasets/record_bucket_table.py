#!/usr/bin/env python3
"""Record reference bucket numbers for `dataset-buckets/tests/bucket_table.rs`.

This script contains no bucket algorithm of its own. It loads `toolkit/buckets.py` from a local
ai-toolkit checkout given on the command line (nothing of ai-toolkit is committed here), asks its
bucket function for the bucket of each (width, height, resolution) case below, and prints one Rust
tuple per case for pasting into the table test.

Besides the bucket it prints the resize target and the center-crop offset, which ai-toolkit computes
inline in its dataloader (not importable without torch). Those two lines follow the rule written in
`shared/reference/flux2-facts.md` section 5: resize by the larger of the two scale factors
(bucket / source) with each side rounded up, then crop the middle, offsets rounded down.

Usage: python3 tools/datasets/record_bucket_table.py /path/to/ai-toolkit > /tmp/table.txt
Only the Python standard library is needed.
"""

import importlib.util
import math
import pathlib
import sys

DIVISIBILITY = 16  # FLUX.2's bucket divisibility

# (width, height, resolution): everyday photo sizes, portrait/landscape pairs, images smaller than
# the resolution (never upscaled), exactly-square, odd sizes, and strong aspect ratios.
CASES = [
    (1024, 1024, 1024), (1024, 1024, 512), (1024, 1024, 768),
    (4000, 3000, 1024), (3000, 4000, 1024), (4000, 3000, 768), (4000, 3000, 512),
    (6000, 4000, 1024), (4000, 6000, 1024), (1920, 1080, 1024), (1080, 1920, 1024),
    (1920, 1080, 768), (1920, 1080, 512), (3840, 2160, 1024), (2048, 1536, 1024),
    (1536, 2048, 768), (800, 600, 1024), (600, 800, 1024), (640, 480, 512),
    (500, 500, 1024), (333, 777, 1024), (1001, 999, 1024), (1000, 1000, 768),
    (1234, 567, 768), (567, 1234, 768), (2500, 1000, 1024), (1000, 2500, 1024),
    (3000, 1000, 1024), (4096, 1024, 1024), (1024, 4096, 1024), (5000, 800, 1024),
    (800, 5000, 1024), (100, 100, 1024), (64, 64, 512), (70, 130, 512), (4032, 3024, 1024),
    (3024, 4032, 1024), (2160, 3840, 768), (1280, 720, 1024), (1280, 720, 512),
    (1365, 2048, 1024), (2048, 1365, 1024), (1500, 1499, 1024), (1025, 1025, 1024),
    (1023, 1023, 1024), (12000, 9000, 1024), (768, 1344, 1024), (1344, 768, 1024),
]


def load_bucket_function(ai_toolkit_root: pathlib.Path):
    path = ai_toolkit_root / "toolkit" / "buckets.py"
    spec = importlib.util.spec_from_file_location("aitk_buckets", path)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_bucket_for_image_size


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    bucket_of = load_bucket_function(pathlib.Path(sys.argv[1]))
    print("// (width, height, resolution, bucket_w, bucket_h, scale_to_w, scale_to_h, crop_x, crop_y)")
    for width, height, resolution in CASES:
        bucket = bucket_of(width, height, resolution=resolution, divisibility=DIVISIBILITY)
        bw, bh = bucket["width"], bucket["height"]
        scale = max(bw / width, bh / height)
        sw, sh = int(math.ceil(width * scale)), int(math.ceil(height * scale))
        cx, cy = int((sw - bw) / 2), int((sh - bh) / 2)
        print(f"    ({width}, {height}, {resolution}, {bw}, {bh}, {sw}, {sh}, {cx}, {cy}),")


if __name__ == "__main__":
    main()
