"""Bytes a vision-language run dir holds: M prompts x N samples, one distinct image each.

    python benchmarks/bench_images.py            # 32 prompts x N=8, 64x64 PNGs (~1 min on 2 cores)
    python benchmarks/bench_images.py --quick    # 4 prompts x N=2

A tiny random LLaVA (``tests/tiny_vlm.py``) runs ``winnow generate``, ``score`` (length),
``select`` and ``export --all-scored`` on a prompts file whose rows each name one PNG of random pixels (the least
compressible kind). Each image is stored once in ``RUN_DIR/images/`` under its sha256, so the
images take their own bytes once however large N is; every row names them by a 76-byte path.
For comparison, the bytes the images would take inlined as ``data:`` URLs in every
completion row (N per prompt) and in the selected rows; and the bytes of the export's ``all``
config, whose N rows of a prompt each carry its image (Parquet keeps each once per row group).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tiny_vlm import build_vlm, tiny_image  # noqa: E402

from winnow.cli import main as winnow  # noqa: E402


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke size: 4 prompts, N=2")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--side", type=int, default=64, help="image width and height in pixels")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.n = 4, 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_vlm(root / "vlm", "llava")
        rows, sizes = [], []
        for i in range(args.prompts):
            data = tiny_image(i, size=(args.side, args.side))
            (root / f"img{i}.png").write_bytes(data)
            sizes.append(len(data))
            content = [{"type": "image"}, {"type": "text", "text": "describe this"}]
            rows.append({"id": f"p{i}", "messages": [{"role": "user", "content": content}], "images": [f"img{i}.png"]})
        (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        run = root / "run"
        start = time.perf_counter()
        sample = ["--prompts", str(root / "prompts.jsonl"), "--model", str(model), "--n", str(args.n)]
        assert winnow(["generate", "--run-dir", str(run), *sample, "--max-new-tokens", "8", "--device", "cpu"]) == 0
        assert winnow(["score", "--run-dir", str(run), "--reward-fn", "length"]) == 0
        assert winnow(["select", "--run-dir", str(run), "--strategy", "top_per_prompt"]) == 0
        seconds = time.perf_counter() - start
        stored = folder_bytes(run / "images")
        total = folder_bytes(run)
        inline = sum(len("data:image/png;base64,") + len(base64.b64encode(b"x" * s)) for s in sizes)
        inlined = inline * (args.n + 1)  # every completion row, and the selected row, of each prompt
        files = len(list((run / "images").iterdir()))
        start = time.perf_counter()
        assert winnow(["export", str(run), "--to", str(root / "out"), "--all-scored"]) == 0
        exported = time.perf_counter() - start
        parquet = folder_bytes(root / "out" / "all")
    cells = args.prompts * args.n
    print(f"{args.prompts} prompts x N={args.n} ({cells} completions), one {args.side}x{args.side} PNG each")
    print(f"images/: {files} files, {stored:,} bytes (the PNGs: {sum(sizes):,} bytes)")
    print(f"run dir: {total:,} bytes in all, images {stored / total:.0%} of it; {seconds:.1f} s")
    print(f"inlined as data: URLs in every completion and selected row instead: {inlined:,} bytes of images")
    print(
        f"winnow export --all-scored: {exported:.1f} s; its all config ({cells} rows, each with its image) "
        f"takes {parquet:,} bytes of Parquet, the images' cells {sum(sizes) * args.n:,} bytes"
    )
    rows_out = [
        {"check": "image files in images/ / prompts", "measured": files / args.prompts, "target": "== 1"},
        {"check": "bytes in images/ / bytes of the PNGs", "measured": stored / sum(sizes), "target": "== 1"},
        {"check": "run dir bytes", "measured": total, "target": "reported"},
        {"check": "inlined images' bytes / stored images' bytes", "measured": inlined / stored, "target": "reported"},
        {
            "check": "export's all config bytes / bytes of the PNGs",
            "measured": parquet / sum(sizes),
            "target": "reported",
        },
    ]
    for row in rows_out:
        row["passed"] = row["target"] == "reported" or row["measured"] == 1
    return {"benchmark": "images", "rows": rows_out}


if __name__ == "__main__":
    main()
