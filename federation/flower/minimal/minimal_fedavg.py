"""The smallest plain Flower FedAvg app: the baseline that ``secagg bench --flower`` times our runtime against.

Written as a Flower user would (the Message API, ``flwr.serverapp.strategy.FedAvg``), for the same job as
our built-in one: sklearn's digits, standardized, split evenly among ``num-partitions`` clients; a 64-64-10
MLP trained with SGD (batch 16) for ``local-epochs`` epochs per round. The ServerApp evaluates the global
model on the test set after every round and writes when (``rounds.jsonl`` in ``out``): the benchmark's clock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

client_app = ClientApp()
server_app = ServerApp()


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def data() -> tuple[TensorDataset, TensorDataset]:
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = (x[order] - x.mean(0)) / (x.std(0) + 1e-8), y[order]
    cut = int(0.8 * len(y))

    def tensors(a: np.ndarray, b: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.tensor(a, dtype=torch.float32), torch.tensor(b))

    return tensors(x[:cut], y[:cut]), tensors(x[cut:], y[cut:])


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    train_set, _ = data()
    part, parts = int(context.node_config["partition-id"]), int(context.run_config["num-partitions"])
    shard = torch.utils.data.Subset(train_set, range(part, len(train_set), parts))
    net = model()
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    optimizer = torch.optim.SGD(net.parameters(), lr=float(context.run_config["lr"]))
    for _ in range(int(context.run_config["local-epochs"])):
        for x, y in DataLoader(shard, batch_size=16, shuffle=True):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
    metrics = MetricRecord({"num-examples": len(shard)})
    return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": metrics}), reply_to=msg)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    out = Path(str(context.run_config["out"]))
    out.mkdir(parents=True, exist_ok=True)
    _, test_set = data()
    parts, clock = int(context.run_config["num-partitions"]), out / "rounds.jsonl"

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net = model()
        net.load_state_dict(arrays.to_torch_state_dict())
        with torch.no_grad():
            x, y = test_set.tensors
            accuracy = float((net(x).argmax(1) == y).float().mean())
        with clock.open("a") as f:  # the end of round server_round: the next one starts now
            f.write(json.dumps({"round": server_round, "time": time.time(), "accuracy": accuracy}) + "\n")
        return MetricRecord({"accuracy": accuracy})

    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=parts, min_available_nodes=parts)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(model().state_dict()),
                   num_rounds=int(context.run_config["num-server-rounds"]), evaluate_fn=evaluate)
    (out / "done.json").write_text(json.dumps({"rounds": int(context.run_config["num-server-rounds"])}) + "\n")
