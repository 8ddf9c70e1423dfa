"""Synthetic partitions in the users' format, with a relation a model can learn.

Each ``.pt`` file is ``torch.utils.data.TensorDataset(image, magnitude, redshift)``:
images ``[N, 5, 32, 32]`` float32, magnitudes ``[N, 5]``, redshift ``[N]``. Colours
(magnitude differences between bands) redden linearly with redshift and each galaxy's
blob shrinks and dims with it, so both inputs carry signal; noise keeps the MAE above 0.

    python -m rendezvous_pipeline.data OUT_DIR --files 8 --samples 256
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

Z_MIN, Z_MAX = 0.05, 2.0
COLOUR_SLOPE = torch.tensor([0.0, 0.6, 1.1, 1.5, 1.8])  # band-wise reddening per unit z


def make_partition(samples: int, seed: int) -> TensorDataset:
    """``samples`` galaxies with a fixed seed (the same seed gives the same tensors)."""
    gen = torch.Generator().manual_seed(seed)
    z = Z_MIN + (Z_MAX - Z_MIN) * torch.rand(samples, generator=gen)
    base = 19.0 + 2.0 * torch.rand(samples, 1, generator=gen)
    magnitude = base + z[:, None] * COLOUR_SLOPE + 0.05 * torch.randn(samples, 5, generator=gen)

    coords = torch.arange(32, dtype=torch.float32) - 15.5
    r2 = coords[None, :] ** 2 + coords[:, None] ** 2  # [32, 32]
    radius = 6.0 / (1.0 + z) + 0.3 * torch.rand(samples, generator=gen)  # [N]
    blob = torch.exp(-r2[None] / (2 * radius[:, None, None] ** 2))  # [N, 32, 32]
    flux = 10 ** (-0.4 * (magnitude - 20.0))  # [N, 5]
    image = flux[:, :, None, None] * blob[:, None]
    image = image + 0.02 * torch.randn(samples, 5, 32, 32, generator=gen)
    return TensorDataset(image.float(), magnitude.float(), z.float())


def partition_bytes(dataset: TensorDataset) -> bytes:
    buf = io.BytesIO()
    torch.save(dataset, buf)
    return buf.getvalue()


def load_partition(data: bytes) -> TensorDataset:
    """Read a users'-format file without unpickling arbitrary objects."""
    with torch.serialization.safe_globals([TensorDataset]):
        dataset = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) < 3:
        raise ValueError(
            f"expected a TensorDataset(image, magnitude, redshift), got {type(dataset).__name__}"
        )
    return dataset


def generate(out_dir: Path, files: int, samples: int, seed: int = 0) -> list[Path]:
    """Write ``files`` partitions named ``1.pt`` .. ``N.pt`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(1, files + 1):
        path = out_dir / f"{index}.pt"
        path.write_bytes(partition_bytes(make_partition(samples, seed * 100_003 + index)))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--files", type=int, default=8, help="number of .pt partitions")
    parser.add_argument("--samples", type=int, default=256, help="samples per partition")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = generate(args.out_dir, args.files, args.samples, args.seed)
    print(f"wrote {len(paths)} partitions of {args.samples} samples to {args.out_dir}")


if __name__ == "__main__":
    main()
