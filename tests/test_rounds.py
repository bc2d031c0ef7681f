"""The one round loop: any transport drives a whole experiment; timing covers the round;
named random streams never collide."""

from __future__ import annotations

import csv
import itertools
import time

import numpy as np
import pytest
import torch

from fedmedsec.config import load_config
from fedmedsec.engine import run_experiment
from fedmedsec.rounds import ClientEval, ClientReply
from fedmedsec.streams import Stream, generator, rng, seed_sequence
from fedmedsec.transports import InProcessTransport


class RecordingTransport(InProcessTransport):
    """In-process hospitals, every call recorded; ``train_sleep`` s added per train call."""

    def __init__(self, setup, train_sleep: float = 0.0) -> None:
        super().__init__(setup)
        self.calls: list[tuple[str, int, tuple[int, ...]]] = []
        self.train_sleep = train_sleep

    def available(self, server_round):
        self.calls.append(("available", server_round, ()))
        return super().available(server_round)

    def train(self, server_round, partition_ids, global_vec):
        self.calls.append(("train", server_round, tuple(partition_ids)))
        time.sleep(self.train_sleep)
        return super().train(server_round, partition_ids, global_vec)

    def evaluate(self, server_round, partition_ids, global_vec):
        self.calls.append(("evaluate", server_round, tuple(partition_ids)))
        return super().evaluate(server_round, partition_ids, global_vec)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_new_transport_drives_a_whole_experiment(tmp_path, check_run_dir):
    cfg = load_config(raw={}, overrides=["experiment.rounds=4", "experiment.eval_every=3",
                                         "experiment.fraction_train=0.5", "experiment.mia=false"])
    made = []

    def factory(setup):
        made.append(RecordingTransport(setup))
        return made[0]

    summary = run_experiment(cfg, tmp_path / "run", transport=factory)
    assert check_run_dir(tmp_path / "run") == []
    calls = made[0].calls
    trains = [c for c in calls if c[0] == "train"]
    assert [c[1] for c in trains] == [1, 2, 3, 4] and all(len(c[2]) == 5 for c in trains)
    # evaluation every 3 rounds and at the last, on every available hospital
    assert [c[1] for c in calls if c[0] == "evaluate"] == [3, 4]
    assert all(c[2] == tuple(range(10)) for c in calls if c[0] == "evaluate")
    assert summary["rounds"] == 4 and len(summary["per_hospital_accuracy"]) == 10
    # the same config through the in-process backend gives the same numbers
    cfg2 = load_config(raw={}, overrides=["experiment.rounds=4", "experiment.eval_every=3",
                                          "experiment.fraction_train=0.5", "experiment.mia=false",
                                          "simulation.backend=inprocess"])
    run_experiment(cfg2, tmp_path / "inproc")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]  # noqa: E731
    assert strip(_rows(tmp_path / "run" / "rounds.csv")) == strip(_rows(tmp_path / "inproc" / "rounds.csv"))


def test_round_seconds_is_the_whole_round(tmp_path):
    cfg = load_config(raw={}, overrides=["experiment.rounds=3", "experiment.mia=false",
                                         "data.num_hospitals=3"])
    run_experiment(cfg, tmp_path, transport=lambda setup: RecordingTransport(setup, train_sleep=0.3))
    rows = _rows(tmp_path / "rounds.csv")
    secs = [float(r["round_seconds"]) for r in rows]
    elapsed = [float(r["elapsed_seconds"]) for r in rows]
    assert all(s >= 0.3 for s in secs)
    for r in (1, 2):
        assert secs[r] == pytest.approx(elapsed[r] - elapsed[r - 1], rel=0.1)


def test_a_transport_reply_problem_is_recorded_not_raised(tmp_path):
    class Flaky(InProcessTransport):
        def train(self, server_round, partition_ids, global_vec):
            replies = super().train(server_round, partition_ids, global_vec)
            replies[0] = ClientReply(replies[0].partition_id, None, problem="no reply")
            return replies

        def evaluate(self, server_round, partition_ids, global_vec):
            return [e for e in super().evaluate(server_round, partition_ids, global_vec)
                    if e.partition_id != 0] + [ClientEval(0, float("nan"), float("nan"), 0)]

    cfg = load_config(raw={}, overrides=["experiment.rounds=2", "experiment.mia=false"])
    run_experiment(cfg, tmp_path, transport=Flaky)
    clients = _rows(tmp_path / "clients.csv")
    assert [c["problem"] for c in clients if c["partition_id"] == "0"] == ["no reply", "no reply"]


def test_centralized_baseline_is_one_pooled_client(tmp_path):
    cfg = load_config(raw={}, overrides=["experiment.rounds=3", "experiment.mode=centralized",
                                         "experiment.mia=false"])
    s = run_experiment(cfg, tmp_path)
    clients = _rows(tmp_path / "clients.csv")
    assert [c["partition_id"] for c in clients] == ["-1"] * 3 and clients[0]["hospital"] == "pooled"
    assert s["clean_accuracy"] > 0.85 and len(s["per_hospital_accuracy"]) == 10


def test_named_streams_never_share_a_key():
    """Draw from every stream for a grid of rounds and partitions (the key shapes each
    stream takes, and some it does not): all first draws differ."""
    keys = [()]
    keys += [(r,) for r in range(0, 200)]
    keys += [(r, p) for r, p in itertools.product(range(0, 200), range(0, 12))]
    seen: dict[tuple, tuple] = {}
    for stream in Stream:
        for key in keys:
            state = tuple(seed_sequence(0, stream, *key).generate_state(4).tolist())
            assert state not in seen, (stream, key, seen.get(state))
            seen[state] = (stream, key)
    # the collision the old keys had: (round 192, partition 5) vs (collusion, round 5)
    a = generator(0, Stream.LOCAL_TRAINING, 192, 5)
    b = generator(0, Stream.COLLUSION, 5)
    assert not torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    # trailing zeros are part of the key
    assert rng(0, Stream.CLIENT_SAMPLING, 5).random() != rng(0, Stream.CLIENT_SAMPLING, 5, 0).random()
    with pytest.raises(ValueError):
        seed_sequence(0, Stream.LOCAL_TRAINING, -1)
    assert np.random.SeedSequence([0, 5]).generate_state(1) == np.random.SeedSequence([0, 5, 0]).generate_state(1)
