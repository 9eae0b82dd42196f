"""rnnkit.utils: pad_sequences, to_categorical, timeseries_dataset_from_array, split_dataset,
set_random_seed and PyDataset, checked against keras.utils (Keras 3)."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest

from rnnkit import nn
from rnnkit.utils import (PyDataset, Sequence, TimeseriesDataset, pad_sequences, set_random_seed,
                          split_dataset, timeseries_dataset_from_array, to_categorical)

# ---- pad_sequences -------------------------------------------------------------------------------

INT_SEQS = [[1], [2, 3], [4, 5, 6, 7, 8], [], [9, 10, 11]]
FLOAT_SEQS = [[0.5, -1.25], [2.75], [3.5, 4.5, 5.5, 6.5]]
NESTED_SEQS = [np.arange(6).reshape(3, 2) * 0.5, np.ones((1, 2)), np.zeros((0, 2)), -np.arange(10).reshape(5, 2)]


@pytest.mark.keras
@pytest.mark.parametrize("seqs,dtype", [(INT_SEQS, "int32"), (FLOAT_SEQS, "float32"), (FLOAT_SEQS, "int32"),
                                        (FLOAT_SEQS, "float64"), (NESTED_SEQS, "float32"), (NESTED_SEQS, "int64")])
@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
@pytest.mark.parametrize("maxlen", [None, 2, 7])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_pad_sequences_matches_keras(keras, seqs, dtype, padding, truncating, maxlen, value):
    got = pad_sequences(seqs, maxlen=maxlen, dtype=dtype, padding=padding, truncating=truncating, value=value)
    want = keras.utils.pad_sequences(seqs, maxlen=maxlen, dtype=dtype, padding=padding,
                                     truncating=truncating, value=value)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.keras
def test_pad_sequences_strings_arrays_and_errors_match_keras(keras):
    words = [["a", "b"], ["c"], ["d", "e", "f"]]
    got = pad_sequences(words, dtype=object, value="<pad>", padding="post")
    np.testing.assert_array_equal(got, keras.utils.pad_sequences(words, dtype=object, value="<pad>", padding="post"))
    assert got[1].tolist() == ["c", "<pad>", "<pad>"]
    arr = np.arange(12).reshape(3, 4)  # an array of equal-length sequences
    np.testing.assert_array_equal(pad_sequences(arr, maxlen=3), keras.utils.pad_sequences(arr, maxlen=3))
    # Keras raises ValueError for each of these; so do we, naming the argument
    for kwargs, match in [(dict(sequences=[[1], 2]), r"sequences\[1\]: expected a sequence \(list or array\), got int 2"),
                          (dict(sequences=5), "sequences: expected a list of sequences"),
                          (dict(sequences=[[1]], padding="mid"), "padding: expected 'pre' or 'post', got 'mid'"),
                          (dict(sequences=[[1]], truncating="x"), "truncating: expected 'pre' or 'post', got 'x'"),
                          (dict(sequences=[[1]], value="pad"), "value: the str padding value 'pad' needs dtype=object"),
                          (dict(sequences=[np.ones((2, 2)), np.ones((1, 3))], dtype="float32"),
                           r"sequences\[1\]: expected steps of shape \(2,\) \(the steps of the first non-empty "
                           r"sequence\), got \(3,\)")]:
        with pytest.raises(ValueError, match=match):
            pad_sequences(**kwargs)
        with pytest.raises(ValueError):
            keras.utils.pad_sequences(**kwargs)
    assert pad_sequences([[], []]).shape == (2, 0) == keras.utils.pad_sequences([[], []]).shape
    with pytest.raises(TypeError, match="maxlen: expected an int, got float"):
        pad_sequences([[1]], maxlen=2.5)


# ---- to_categorical ------------------------------------------------------------------------------

@pytest.mark.keras
@pytest.mark.parametrize("x,num_classes", [([0, 1, 2, 3], None), ([0, 2, 1, 2], 5), (np.array([[1], [0], [3]]), None),
                                           (np.arange(12).reshape(3, 4) % 3, 3), (np.array([2.0, 0.0, 1.0]), None),
                                           (np.int64(2), 4), (np.array([[[1], [2]]]), 6), ([1, 1], 0)])
def test_to_categorical_matches_keras(keras, x, num_classes):
    got = to_categorical(x, num_classes)
    want = keras.utils.to_categorical(x, num_classes)
    assert got.dtype == want.dtype == np.float64
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_to_categorical_errors():
    with pytest.raises(ValueError, match=r"x: expected class indices in \[0, 3\) for num_classes=3, got values in \[0, 3\]"):
        to_categorical([0, 3], 3)
    with pytest.raises(ValueError, match=r"x: expected class indices in \[0, 2\) for num_classes=2, got values in \[-1, 1\]"):
        to_categorical([-1, 1])
    with pytest.raises(ValueError, match="num_classes: cannot be inferred from an empty x; pass num_classes"):
        to_categorical([])
    assert to_categorical([], 3).shape == (0, 3)
    with pytest.raises(TypeError, match="x: expected integer class indices, got dtype <U1"):
        to_categorical(["a"])
    with pytest.raises(ValueError, match="x: expected integer class indices, got NaN or infinite values"):
        to_categorical([np.nan])


# ---- timeseries_dataset_from_array ---------------------------------------------------------------

def _batches(ds):
    return [tuple(np.asarray(t) for t in b) if isinstance(b, tuple) else (np.asarray(b),) for b in ds]


def test_timeseries_keras_documented_example_1():
    """Keras's docstring: indices 0..98, sequence_length=10, sampling_rate=2, sequence_stride=3."""
    ds = timeseries_dataset_from_array(np.arange(99), None, sequence_length=10, sampling_rate=2,
                                       sequence_stride=3, batch_size=None)
    windows = [np.asarray(w) for w in ds]
    np.testing.assert_array_equal(windows[0], [0, 2, 4, 6, 8, 10, 12, 14, 16, 18])
    np.testing.assert_array_equal(windows[1], [3, 5, 7, 9, 11, 13, 15, 17, 19, 21])
    np.testing.assert_array_equal(windows[2], [6, 8, 10, 12, 14, 16, 18, 20, 22, 24])
    np.testing.assert_array_equal(windows[-1], [78, 80, 82, 84, 86, 88, 90, 92, 94, 96])
    assert len(ds) == len(windows) == 27


def test_timeseries_keras_documented_example_2():
    """Keras's docstring: the past 10 steps predict the next one."""
    data = np.random.default_rng(0).standard_normal(50)
    ds = timeseries_dataset_from_array(data[:-10], data[10:], sequence_length=10)
    inputs, targets = ds[0]
    np.testing.assert_array_equal(inputs[0], data[:10])
    assert targets[0] == data[10]
    assert len(ds) == 1 and inputs.shape == (31, 10) and targets.shape == (31,)


TS_CASES = [dict(sequence_length=4, batch_size=5),
            dict(sequence_length=3, sequence_stride=2, sampling_rate=2, batch_size=4),
            dict(sequence_length=5, batch_size=3, start_index=3, end_index=25),
            dict(sequence_length=2, sequence_stride=3, batch_size=128, start_index=7),
            dict(sequence_length=6, sampling_rate=3, batch_size=None)]


@pytest.mark.keras
@pytest.mark.parametrize("case", TS_CASES)
@pytest.mark.parametrize("with_targets", [True, False])
def test_timeseries_batches_match_keras(keras, case, with_targets):
    """Keras builds the dataset with tf.data (format='tf') or Grain (format='grain'); the
    torch-backend test environment has neither unless grain is installed."""
    pytest.importorskip("grain")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((40, 3)).astype(np.float32)
    targets = rng.integers(0, 5, 40) if with_targets else None
    got = _batches(timeseries_dataset_from_array(data, targets, **case))
    want = _batches(keras.utils.timeseries_dataset_from_array(data, targets, format="grain", **case))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert len(g) == len(w)
        for a, b in zip(g, w):
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b)


def test_timeseries_windows_targets_and_reiteration():
    data = np.arange(30).reshape(15, 2)
    targets = np.arange(15) * 10
    ds = timeseries_dataset_from_array(data, targets, sequence_length=3, sequence_stride=2, sampling_rate=2,
                                       batch_size=2, start_index=1, end_index=14)
    assert isinstance(ds, TimeseriesDataset) and isinstance(ds, PyDataset)
    # steps 1..13 are usable: windows start at 1, 3, 5, 7, 9 (the last one takes 9, 11, 13)
    np.testing.assert_array_equal(ds.start_positions, [0, 2, 4, 6, 8])
    assert len(ds) == 3
    x0, y0 = ds[0]
    np.testing.assert_array_equal(x0[1], data[[3, 5, 7]])
    np.testing.assert_array_equal(y0, [10, 30])
    x_last, y_last = ds[-1]
    np.testing.assert_array_equal(x_last, data[[9, 11, 13]][None])
    np.testing.assert_array_equal(y_last, [90])
    first, second = _batches(ds), _batches(ds)  # re-iterable: the same batches again
    assert len(first) == 3 and all(np.array_equal(a, b) for fa, sa in zip(first, second) for a, b in zip(fa, sa))
    with pytest.raises(IndexError, match=r"index: expected an int in \[-3, 3\) \(3 batches\), got 3"):
        ds[3]


@pytest.mark.threads
def test_fit_takes_a_timeseries_dataset_as_a_batch_source(one_thread):
    from rnnkit.layers import LSTM, Dense
    from rnnkit.models import Sequential

    set_random_seed(0)
    wave = np.sin(np.arange(400, dtype=np.float32) / 8)[:, None]
    ds = timeseries_dataset_from_array(wave[:-10], wave[10:, 0], sequence_length=10, batch_size=32)
    model = Sequential([LSTM(16, input_shape=(10, 1)), Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(ds, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]


def test_timeseries_shuffle_is_a_seeded_permutation():
    data = np.arange(50)
    plain = timeseries_dataset_from_array(data, data, sequence_length=5, batch_size=None)
    a = timeseries_dataset_from_array(data, data, sequence_length=5, batch_size=8, shuffle=True, seed=3)
    b = timeseries_dataset_from_array(data, data, sequence_length=5, batch_size=8, shuffle=True, seed=3)
    expected = np.arange(46, dtype=np.int32)
    np.random.RandomState(3).shuffle(expected)  # Keras's first shuffling step
    np.testing.assert_array_equal(a.start_positions, expected)
    np.testing.assert_array_equal(b.start_positions, expected)
    xs = np.concatenate([x for x, _ in a])
    ys = np.concatenate([y for _, y in a])
    assert sorted(map(tuple, xs)) == sorted(map(tuple, (w for w, _ in plain)))
    np.testing.assert_array_equal(xs[:, 0], ys)  # every window keeps its own target
    set_random_seed(5)
    c = timeseries_dataset_from_array(data, None, sequence_length=5, shuffle=True)
    set_random_seed(5)
    d = timeseries_dataset_from_array(data, None, sequence_length=5, shuffle=True)
    np.testing.assert_array_equal(c.start_positions, d.start_positions)
    assert not np.array_equal(c.start_positions, np.arange(46))


def test_timeseries_errors_follow_keras_checks():
    data = np.zeros(10)
    cases = [(dict(start_index=-1), "start_index: expected an int >= 0, got -1"),
             (dict(start_index=10), "start_index: expected an int below len(data) = 10, got 10"),
             (dict(start_index=4, end_index=4), "end_index: expected an int above start_index = 4, got 4"),
             (dict(end_index=10), "end_index: expected an int below len(data) = 10 (Keras's bound), got 10"),
             (dict(end_index=-2), "end_index: expected an int > 0, got -2"),
             (dict(sampling_rate=10), "sampling_rate: expected an int below len(data) = 10, got 10"),
             (dict(sequence_stride=12), "sequence_stride: expected an int below len(data) = 10, got 12")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            timeseries_dataset_from_array(data, None, 3, **kwargs)
    with pytest.raises(ValueError, match="sampling_rate: expected an int >= 1, got 0"):
        timeseries_dataset_from_array(data, None, 3, sampling_rate=0)
    with pytest.raises(TypeError, match="sequence_length: expected an int, got float"):
        timeseries_dataset_from_array(data, None, 3.0)
    with pytest.raises(ValueError, match=r"targets: expected at least 8 entries \(one per window start\), got 5"):
        timeseries_dataset_from_array(data, np.zeros(5), 3, start_index=3)
    empty = timeseries_dataset_from_array(data, None, 12)  # longer than the data: no window, as Keras
    assert len(empty) == 0 and _batches(empty) == []


# ---- split_dataset -------------------------------------------------------------------------------

SPLITS = [dict(left_size=0.8), dict(right_size=0.25), dict(left_size=7), dict(right_size=3),
          dict(left_size=0.35), dict(left_size=0.45), dict(left_size=0.6, right_size=0.4),
          dict(left_size=3, right_size=7)]


@pytest.mark.keras
@pytest.mark.parametrize("sizes", SPLITS)
def test_split_dataset_sizes_match_keras(keras, sizes):
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    y = np.arange(10)
    left, right = split_dataset(x, **sizes)
    k_left, k_right = keras.utils.split_dataset(x, **sizes)
    assert (len(left), len(right)) == (len(k_left), len(k_right))
    (lx, ly), (rx, ry) = split_dataset((x, y), **sizes)
    k_left, k_right = keras.utils.split_dataset((x, y), **sizes)
    assert (len(lx), len(ly), len(rx), len(ry)) == (len(k_left), len(k_left), len(k_right), len(k_right))
    # without shuffling: the first samples on the left, the last ones on the right
    np.testing.assert_array_equal(left, x[:len(left)])
    np.testing.assert_array_equal(right, x[len(x) - len(right):])
    np.testing.assert_array_equal(ly, y[:len(ly)])


@pytest.mark.keras
@pytest.mark.parametrize("sizes", [dict(), dict(left_size=0, right_size=0), dict(left_size=10), dict(left_size=1.0),
                                   dict(left_size=0.7, right_size=0.5), dict(left_size=6, right_size=6),
                                   dict(left_size="half")])
def test_split_dataset_rejects_what_keras_rejects(keras, sizes):
    x = np.zeros((10, 2), np.float32)
    with pytest.raises((ValueError, TypeError)) as ours:
        split_dataset(x, **sizes)
    with pytest.raises((ValueError, TypeError)) as theirs:
        keras.utils.split_dataset(x, **sizes)
    assert ours.type is theirs.type
    assert "left_size" in str(ours.value) or "right_size" in str(ours.value)


def test_split_dataset_sizes_adding_up_to_less_than_all_leave_a_gap():
    """Keras's tf.data path (its torch path requires the sizes to add up to N): the left split
    takes the first samples, the right split the last ones."""
    x = np.arange(10)
    left, right = split_dataset(x, left_size=0.5, right_size=0.3)
    np.testing.assert_array_equal(left, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(right, [7, 8, 9])
    (lx,), (rx,) = split_dataset([x], left_size=4, right_size=2)
    np.testing.assert_array_equal(lx, [0, 1, 2, 3])
    np.testing.assert_array_equal(rx, [8, 9])


def test_split_dataset_shuffle_is_keras_permutation_without_touching_global_random():
    x = np.arange(20)
    y = x * 2
    random.seed(123)
    state = random.getstate()
    (lx, ly), (rx, ry) = split_dataset((x, y), left_size=0.6, shuffle=True, seed=9)
    assert random.getstate() == state  # Keras reseeds Python's global random; we do not
    perm = list(range(20))
    random.Random(9).shuffle(perm)  # what Keras's random.seed(9); random.shuffle(...) gives
    np.testing.assert_array_equal(lx, perm[:12])
    np.testing.assert_array_equal(rx, perm[12:])
    np.testing.assert_array_equal(ly, 2 * lx)  # arrays stay aligned
    set_random_seed(1)
    a = split_dataset(x, left_size=5, shuffle=True)
    set_random_seed(1)
    b = split_dataset(x, left_size=5, shuffle=True)
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match=r"dataset\[1\]: expected 20 samples \(as dataset\[0\]\), got shape \(3,\)"):
        split_dataset((x, np.zeros(3)), left_size=2)


# ---- set_random_seed -----------------------------------------------------------------------------

def _fit_once(seed: int):
    from rnnkit.layers import LSTM, Dense, Dropout
    from rnnkit.models import Sequential

    set_random_seed(seed)
    rng = np.random.default_rng(100)  # the data is fixed; only rnnkit's own randomness varies
    x = rng.standard_normal((48, 5, 3)).astype(np.float32)
    y = rng.integers(0, 2, 48)
    model = Sequential([LSTM(8, dropout=0.3, input_shape=(5, 3)), Dropout(0.3), Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)  # shuffled, dropout on, no seed given
    return [w.copy() for w in model.weights]


@pytest.mark.threads
def test_set_random_seed_makes_fit_reproducible(one_thread):
    first, second, other = _fit_once(0), _fit_once(0), _fit_once(1)
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))


def test_set_random_seed_seeds_python_numpy_and_nn_modules():
    set_random_seed(42)
    py, npv = random.random(), np.random.random()
    lstm = nn.LSTM(3, 4).weight_ih_l0.data.copy()
    set_random_seed(42)
    assert random.random() == py and np.random.random() == npv
    np.testing.assert_array_equal(nn.LSTM(3, 4).weight_ih_l0.data, lstm)
    with pytest.raises(TypeError, match="seed: expected an int, got NoneType"):
        set_random_seed(None)
    with pytest.raises(TypeError, match="seed: expected None or an int, got float"):
        set_random_seed(1.5)
    with pytest.raises(ValueError, match=r"seed: expected an int in \[0, 2\*\*32\), got 4294967296"):
        set_random_seed(2**32)


# ---- PyDataset -----------------------------------------------------------------------------------

class _Batches(PyDataset):
    def __init__(self, x, y, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, y, batch_size
        self.epochs_ended = 0

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, idx):
        s = slice(idx * self.batch_size, (idx + 1) * self.batch_size)
        return self.x[s], self.y[s]

    def on_epoch_end(self):
        self.epochs_ended += 1


def test_pydataset_protocol():
    ds = _Batches(np.arange(10), np.arange(10) * 2, 4, workers=2, use_multiprocessing=False, max_queue_size=5)
    assert len(ds) == ds.num_batches == 3
    batches = list(ds)
    assert [len(xb) for xb, _ in batches] == [4, 4, 2]
    np.testing.assert_array_equal(batches[2][1], [16, 18])
    assert list(map(len, (b[0] for b in ds))) == [4, 4, 2]  # iterating again
    assert (ds.workers, ds.use_multiprocessing, ds.max_queue_size) == (2, False, 5)
    ds.on_epoch_begin()
    ds.on_epoch_end()
    assert ds.epochs_ended == 1
    assert Sequence is PyDataset
    with pytest.raises(ValueError, match="workers: expected an int >= 1, got 0"):
        _Batches(np.arange(3), np.arange(3), 1, workers=0)
    with pytest.raises(NotImplementedError, match="PyDataset must implement __getitem__"):
        PyDataset()[0]


def test_pydataset_without_super_init_warns_like_keras():
    class NoInit(PyDataset):
        def __init__(self):
            pass

        def __len__(self):
            return 1

        def __getitem__(self, idx):
            return np.zeros(1), np.zeros(1)

    ds = NoInit()
    with pytest.warns(UserWarning, match=r"should call `super\(\).__init__\(\*\*kwargs\)`"):
        assert ds.workers == 1
    assert ds.max_queue_size == 10  # defaults set once: no second warning


def test_pydataset_without_len_iterates_until_stopped():
    class Endless(PyDataset):
        def __getitem__(self, idx):
            return np.full(2, idx)

    it = iter(Endless())
    assert [int(next(it)[0]) for _ in range(4)] == [0, 1, 2, 3]
