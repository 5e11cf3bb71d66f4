"""extract_embeddings: batching over each kind of input, dtype handling, the atomic .npy cache."""

import os

import numpy as np
import pytest
import torch

from mmvicreg.evaluation import extract_embeddings
from mmvicreg.evaluation import extract as extract_module


class Recorder:
    """An encode_fn that doubles its batch and records the batch sizes it saw."""

    def __init__(self):
        self.sizes = []

    def __call__(self, batch):
        self.sizes.append(len(batch))
        return torch.as_tensor(np.asarray(batch, dtype=np.float32)) * 2


def test_batches_a_tensor_and_keeps_order():
    x = torch.randn(10, 3)
    enc = Recorder()
    out = extract_embeddings(enc, x, batch_size=4, progress=False)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, 2 * x.numpy())
    assert enc.sizes == [4, 4, 2]
    assert isinstance(extract_embeddings(enc, x, 4, progress=False, as_tensor=True), torch.Tensor)


def test_map_style_dataset_gives_lists_and_iterables_give_batches():
    class Dataset:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return [float(i), 1.0]

    enc = Recorder()
    out = extract_embeddings(enc, Dataset(), batch_size=2, progress=False)
    assert enc.sizes == [2, 2, 1] and out[:, 0].tolist() == [0, 2, 4, 6, 8]

    loader = torch.utils.data.DataLoader(torch.arange(7.0)[:, None], batch_size=3)
    enc = Recorder()
    out = extract_embeddings(enc, loader, batch_size=999, progress=False)  # a loader brings its own batches
    assert enc.sizes == [3, 3, 1] and out[:, 0].tolist() == [0, 2, 4, 6, 8, 10, 12]
    out = extract_embeddings(enc, (torch.ones(2, 4) for _ in range(3)), progress=False)  # length unknown
    assert out.shape == (6, 4)


def test_half_precision_becomes_float32():
    out = extract_embeddings(lambda b: b.to(torch.bfloat16), torch.randn(6, 2), 4, progress=False)
    assert out.dtype == np.float32


def test_cache_is_written_atomically_then_loaded(tmp_path):
    path = tmp_path / "sub" / "emb.npy"
    x = torch.randn(9, 3)
    first = extract_embeddings(Recorder(), x, 4, cache=path, progress=False)
    assert path.exists() and os.listdir(path.parent) == ["emb.npy"]  # no temporary file left behind
    enc = Recorder()
    again = extract_embeddings(enc, x, 4, cache=str(path), progress=False)
    assert enc.sizes == [] and np.array_equal(again, first)


def test_cache_with_other_row_count_is_recomputed(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, np.zeros((3, 3), np.float32))
    with pytest.warns(UserWarning, match=r"holds shape \(3, 3\) but 5 items"):
        out = extract_embeddings(Recorder(), torch.ones(5, 3), 2, cache=path, progress=False)
    assert out.shape == (5, 3) and np.load(path).shape == (5, 3)


def test_failed_write_leaves_old_cache_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "emb.npy"
    np.save(path, np.zeros((1, 1), np.float32))

    def broken_save(f, arr):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(extract_module.np, "save", broken_save)
    with pytest.warns(UserWarning), pytest.raises(OSError, match="disk full"):
        extract_embeddings(Recorder(), torch.ones(4, 2), 2, cache=path, progress=False)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["emb.npy"] and np.load(path).shape == (1, 1)


@pytest.mark.parametrize(
    "encode_fn, items, error, match",
    [
        (lambda b: b.sum(1), torch.ones(4, 2), ValueError, r"returned shape \(2\) for a batch of 2 items"),
        (lambda b: b[:1], torch.ones(4, 2), ValueError, r"returned shape \(1, 2\) for a batch of 2 items"),
        (lambda b: b.tolist(), torch.ones(4, 2), TypeError, "must return a torch.Tensor or numpy.ndarray"),
        (lambda b: b, torch.ones(0, 2), ValueError, "items is empty"),
    ],
)
def test_bad_encoder_output(encode_fn, items, error, match):
    with pytest.raises(error, match=match):
        extract_embeddings(encode_fn, items, 2, progress=False)
