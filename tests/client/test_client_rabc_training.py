"""The trainer's side of RA-BC in sarm-client: RabcWeights reads the file the service writes and looks weights up
by frame index, the weighted loss is eq. 9 (and sarm.rabc's), the sampler never draws a zero weight, and a small
training loop learns from the good samples only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from sarm.rabc import weights as core
from sarm.rabc.files import write_weights
from sarm.rabc.progress import DatasetProgress, EpisodeProgress
from sarm_client import RabcWeights
from sarm_client.training import weighted_loss, weighted_sampler

torch.set_num_threads(1)


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    """An rabc_weights.parquet from the service's own writer: two episodes whose global indices start at 100."""
    progress = DatasetProgress(
        [
            EpisodeProgress(3, np.arange(100, 110), np.linspace(0, 1, 10, dtype=np.float32)),
            EpisodeProgress(7, np.arange(110, 116), np.array([0, 0.5, 0.4, 0.3, 0.2, 0.9], np.float32)),
        ],
        {"checkpoint": "test"},
    )
    params = core.RabcParams(chunk_size=2)
    result = core.compute([e.progress for e in progress.episodes], params)
    return write_weights(progress, result, params, tmp_path)


def test_weights_read_from_the_services_file(weights_file: Path) -> None:
    from_path = RabcWeights.from_parquet(weights_file)
    from_bytes = RabcWeights.from_parquet(weights_file.read_bytes())
    progress = [np.linspace(0, 1, 10, dtype=np.float32), np.array([0, 0.5, 0.4, 0.3, 0.2, 0.9], np.float32)]
    expected = np.concatenate(core.rabc_weights(progress, 2))
    for weights in (from_path, from_bytes):
        np.testing.assert_array_equal(weights.index, np.arange(100, 116))
        np.testing.assert_array_equal(weights.episode_index, [3] * 10 + [7] * 6)
        np.testing.assert_array_equal(weights.frame_index, [*range(10), *range(6)])
        np.testing.assert_allclose(weights.weight, expected, atol=1e-6)
        assert weights.params == {"chunk_size": 2, "kappa": 0.01, "eps": 1e-6, "stats": "global"}
        assert weights.metadata["progress"] == {"checkpoint": "test"}


def test_for_indices_looks_weights_up_by_global_frame_index(weights_file: Path) -> None:
    weights = RabcWeights.from_parquet(weights_file)
    rows = np.random.default_rng(0).permutation(len(weights.index))
    shuffled = RabcWeights(
        weights.index[rows],
        weights.episode_index[rows],
        weights.frame_index[rows],
        weights.delta[rows],
        weights.weight[rows],
        {},
    )
    batch = torch.tensor([[115, 100], [104, 111]])  # as a DataLoader yields them, any shape
    for table in (weights, shuffled):  # the row order of the file does not matter
        looked_up = table.for_indices(batch)
        assert looked_up.shape == (2, 2) and looked_up.dtype == np.float32
        np.testing.assert_array_equal(looked_up, weights.weight[[[15, 0], [4, 11]]])
    assert weights.for_indices([]).shape == (0,)
    with pytest.raises(
        KeyError,
        match=r"2 frame index\(es\) without an RA-BC weight, e.g. \[99, 116\]: these "
        r"weights hold frames 100\.\.115",
    ):
        weights.for_indices([100, 99, 116, 116])
    with pytest.raises(TypeError, match="must be integers"):
        weights.for_indices([100.0])


def test_weights_that_cannot_be_right_are_refused(weights_file: Path, tmp_path: Path) -> None:
    w = RabcWeights.from_parquet(weights_file)
    with pytest.raises(ValueError, match="frame index twice"):
        RabcWeights(np.array([1, 1]), w.episode_index[:2], w.frame_index[:2], w.delta[:2], w.weight[:2], {})
    with pytest.raises(ValueError, match="one length"):
        RabcWeights(w.index, w.episode_index, w.frame_index, w.delta, w.weight[:3], {})
    import pyarrow as pa
    import pyarrow.parquet as pq

    other = tmp_path / "sarm_progress.parquet"
    pq.write_table(pa.table({"index": [0], "episode_index": [0], "frame_index": [0], "progress_sparse": [0.5]}), other)
    with pytest.raises(ValueError, match=r"no column\(s\) \['delta', 'weight'\]: not an rabc_weights.parquet"):
        RabcWeights.from_parquet(other)


@pytest.mark.parametrize(
    ("losses", "weights"),
    [
        ([1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 0.5, 0.0]),  # (1 + 1.5) / 1.5
        ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]),  # all zero: 0, not NaN
        ([0.5, 0.25], [0.2, 0.6]),
    ],
)
def test_weighted_loss_is_eq_9_as_the_core_computes_it(losses: list[float], weights: list[float]) -> None:
    w = np.array(weights, np.float32)  # as RabcWeights holds them
    got = weighted_loss(torch.tensor(losses, dtype=torch.float64), w)
    assert got.item() == pytest.approx(core.weighted_loss(np.array(losses), w), rel=1e-12)
    assert not torch.isnan(got)


def test_weighted_loss_by_hand_and_its_gradient() -> None:
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    weights = torch.tensor([1.0, 0.0, 0.5, 0.0], requires_grad=True)
    loss = weighted_loss(losses, weights, eps=0.5)
    assert loss.item() == pytest.approx((1 * 1 + 3 * 0.5) / (1.5 + 0.5))
    loss.backward()
    assert losses.grad is not None and weights.grad is None  # the weights are data
    torch.testing.assert_close(losses.grad, torch.tensor([1.0, 0.0, 0.5, 0.0]) / 2.0)


def test_weighted_loss_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match=r"losses \(4, 2\) and weights \(4,\) must be one value per sample"):
        weighted_loss(torch.ones(4, 2), [1.0] * 4)
    with pytest.raises(ValueError, match="eps must be > 0"):
        weighted_loss(torch.ones(2), [0.0, 0.0], eps=0.0)


def test_the_sampler_never_draws_a_zero_weight() -> None:
    weights = np.array([0.0, 1.0, 0.0, 3.0, 0.5, 0.0, 0.0, 0.25])
    sampler = weighted_sampler(weights, num_samples=40_000, generator=torch.Generator().manual_seed(0))
    counts = np.bincount(list(sampler), minlength=len(weights))
    assert counts.sum() == 40_000 and np.all(counts[weights == 0] == 0)
    np.testing.assert_allclose(counts / counts.sum(), weights / weights.sum(), atol=0.01)
    assert len(weighted_sampler(torch.tensor([0.0, 2.0]))) == 2  # an epoch as long as the dataset by default
    assert set(weighted_sampler([0.0, 0.0, 1e-9, 0.0], num_samples=500)) == {2}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([0.0, 0.0, 0.0], "every weight is 0"),
        ([1.0, -0.5], "finite and >= 0"),
        ([1.0, float("nan")], "finite and >= 0"),
        ([[1.0, 2.0]], "one per dataset position"),
        ([], "one per dataset position"),
    ],
)
def test_the_sampler_refuses_weights_it_cannot_draw_from(weights: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        weighted_sampler(weights)


def test_a_training_loop_with_rabc_weights_learns_from_the_good_samples() -> None:
    """Demos of y = 2x − 1 mixed with bad ones of y = −x (weight 0): the weighted loss fits the good mapping, where
    the plain mean fits neither; sampling by weight instead of weighting the loss does too."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(128, 1, generator=generator)
    good = torch.arange(128) % 2 == 0
    y = torch.where(good[:, None], 2 * x - 1, -x)
    index = torch.arange(1000, 1128)  # LeRobot's global frame index, what the weights are keyed by
    weights = RabcWeights(
        index.numpy(),
        np.zeros(128, np.int64),
        np.arange(128),
        np.zeros(128, np.float32),
        good.numpy().astype(np.float32),
        {},
    )
    dataset = TensorDataset(index, x, y)

    def train(loader: DataLoader, weigh: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(60):
            for batch_index, batch_x, batch_y in loader:
                losses = ((model(batch_x) - batch_y) ** 2).mean(dim=1)  # per sample: reduction="none"
                loss = weighted_loss(losses, weights.for_indices(batch_index)) if weigh else losses.mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return torch.cat([model.weight.detach().flatten(), model.bias.detach()])

    uniform = DataLoader(dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1))
    by_weight = DataLoader(
        dataset,
        batch_size=32,
        sampler=weighted_sampler(weights.for_indices(index), generator=torch.Generator().manual_seed(1)),
    )
    target = torch.tensor([2.0, -1.0])
    torch.testing.assert_close(train(uniform, weigh=True), target, atol=0.05, rtol=0)
    torch.testing.assert_close(train(by_weight, weigh=False), target, atol=0.05, rtol=0)
    assert (train(uniform, weigh=False) - target).abs().max() > 0.5
