"""Train the shipped weights (reproducible: fixed seeds, CPU, about a minute on 2 cores).

    python -m rendezvous_pipeline.train [--out examples/pipeline/weights/redshift_small.pt]

Training data come from seeds disjoint from the generator's defaults, so the demo's MAE
is measured on data the model never saw.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from rendezvous_pipeline.data import make_partition
from rendezvous_pipeline.model import WEIGHTS, RedshiftRegressor

TRAIN_SEED = 7_000_000


def train(epochs: int = 12, samples: int = 8192, batch_size: int = 128) -> RedshiftRegressor:
    torch.manual_seed(0)
    train_set = make_partition(samples, TRAIN_SEED)
    val_set = make_partition(1024, TRAIN_SEED + 1)
    model = RedshiftRegressor()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    loss_fn = nn.SmoothL1Loss(beta=0.1)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    for epoch in range(epochs):
        model.train()
        for image, magnitude, z in loader:
            optimiser.zero_grad()
            loss = loss_fn(model(image, magnitude), z)
            loss.backward()
            optimiser.step()
        schedule.step()
        model.eval()
        with torch.no_grad():
            image, magnitude, z = val_set.tensors
            mae = (model(image, magnitude) - z).abs().mean().item()
        print(f"epoch {epoch + 1}/{epochs}: validation MAE {mae:.4f}")
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the shipped redshift regressor.")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)
    model = train(args.epochs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"saved {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
