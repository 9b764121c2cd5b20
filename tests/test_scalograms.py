"""Scalograms: frequencies land in the right rows; the store round-trips; a run resumes."""
import json

import numpy as np
import pandas as pd
import pytest

from sts_utils.compute import cwt, signals
from sts_utils.stages import scalograms as sc
from sts_utils.core.errors import SelectionError
from sts_utils.stages.scalograms import ScalogramParams, compute_scalograms
from sts_utils.data.store import ScalogramStore


FS = 4000.0
N = 4800


def freqs():
    return ScalogramParams().frequencies_hz(N / FS)


@pytest.mark.parametrize("f", [8.0, 40.0, 150.0, 600.0])
def test_sine_peaks_in_its_frequency_row(f):
    t = np.arange(N) / FS
    img = cwt.multirate_cwt_modulus(np.sin(2 * np.pi * f * t), FS, freqs(), 480)
    power = img[:, 60:-60].mean(axis=1)
    peak = freqs()[np.argmax(power)]
    assert abs(np.log(peak / f)) < np.log(1.08), (f, peak)


@pytest.mark.parametrize("rate", [10.0, 25.0, 60.0])
def test_regular_spike_train_has_its_ridge_at_the_firing_rate(rate):
    window = 3.2
    spikes = np.arange(0.05, window, 1.0 / rate)
    x = signals.bin_spike_train(spikes, 0.0, window, N)
    fs = N / window
    fr = ScalogramParams(f_max_hz=200.0).frequencies_hz(window)
    img = cwt.multirate_cwt_modulus(x, fs, fr, 480)
    low = fr < 1.5 * rate  # the ridge is the lowest strong band: the fundamental
    peak = fr[low][np.argmax(img[low][:, 60:-60].mean(axis=1))]
    assert abs(np.log(peak / rate)) < np.log(1.1), (rate, peak)


def test_multirate_equals_full_rate_cwt_averaged_to_the_stored_grid():
    rng = np.random.default_rng(0)
    t = np.arange(N) / FS
    x = np.sin(2 * np.pi * 30 * t) * (t > 0.3) + 0.3 * np.sin(2 * np.pi * 300 * t) + 0.2 * rng.standard_normal(N)
    fr = freqs()
    fast = cwt.multirate_cwt_modulus(x, FS, fr, 480)
    full = cwt.resample_rows(cwt.cwt_modulus(x, FS, fr), 480)
    inner = slice(60, -60)
    r = np.corrcoef(fast[:, inner].ravel(), full[:, inner].ravel())[0, 1]
    assert r > 0.99
    # the same level (no seam between octaves): power-weighted error under 5 %, and row by row within
    # 10 % from 10 Hz up (below, a 1.2-s window is all inside the wavelets' cone of influence and the
    # values depend on the edge handling)
    assert np.abs(fast[:, inner] - full[:, inner]).sum() / full[:, inner].sum() < 0.05
    ratio = fast[:, inner].mean(axis=1) / full[:, inner].mean(axis=1)
    assert np.all(np.abs(ratio[fr >= 10] - 1) < 0.12), ratio.round(3)


@pytest.mark.parametrize("n, f_lo, f_hi", [(3000, 0.002, 0.25), (600, 1 / 300, 1 / 16), (1200, 5e-4, 0.01), (50, 0.01, 0.3)])
def test_batched_cwt_equals_pywt_cwt(n, f_lo, f_hi):
    """The batched transform is pywt.cwt to rounding, also where wavelets outgrow the signal."""
    import pywt

    x = np.random.default_rng(n).standard_normal(n)
    scales = pywt.frequency2scale(cwt.WAVELET, np.geomspace(f_lo, f_hi, 30))
    ref = pywt.cwt(x, scales, cwt.WAVELET, method="fft")[0]
    tol = 1e-12 * np.abs(ref).max()
    np.testing.assert_allclose(cwt.pywt_cwt_batched(x, scales), ref, rtol=0, atol=tol)
    for start, stop in [(n // 4, n - n // 4), (0, 1), (n - 3, n)]:
        got = cwt.pywt_cwt_batched(x, scales, keep=(start, stop))
        np.testing.assert_allclose(got, ref[:, start:stop], rtol=0, atol=tol)
    two = cwt.pywt_cwt_batched(np.stack([x, -2 * x]), scales)
    np.testing.assert_allclose(two[1], -2 * ref, rtol=0, atol=2 * tol)
    with pytest.raises(ValueError, match=rf"^keep=\(5, {n + 1}\) outside 0..{n}$"):
        cwt.pywt_cwt_batched(x, scales, keep=(5, n + 1))


def test_padding_capped_at_the_wavelet_changes_nothing_inside_the_window():
    """Reflecting half a wavelet or half the signal gives the same coefficients in the window."""
    import pywt

    x = np.random.default_rng(3).standard_normal(N)
    fr = freqs()
    xc = x - x.mean()
    pad = N // 2
    scales = pywt.frequency2scale(cwt.WAVELET, fr / FS)
    ref = np.abs(pywt.cwt(np.pad(xc, pad, mode="reflect"), scales, cwt.WAVELET, method="fft")[0][:, pad:pad + N])
    np.testing.assert_allclose(cwt.cwt_modulus(x, FS, fr), ref, rtol=0, atol=1e-12 * ref.max())


def test_a_silent_channel_does_not_turn_rounding_noise_into_structure():
    """One channel without spikes: its image stays ~0 and does not depend on 1e-12 perturbations."""
    window = 3.2
    fs = N / window
    fr = ScalogramParams(f_max_hz=375.0).frequencies_hz(window)
    silent = np.zeros(N)
    firing = signals.bin_spike_train(np.arange(0.2, 3.0, 0.05), 0.0, window, N)
    a = cwt.scalogram_image([silent, firing], fs, fr, 480)
    b = cwt.scalogram_image([silent + 1e-12 * np.random.default_rng(0).standard_normal(N), firing], fs, fr, 480)
    assert a[0].max() < 1e-3
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(SelectionError, match="flat signal"):
        cwt.scalogram_image([silent, silent], fs, fr, 480)


@pytest.mark.parametrize("f", [5.0, 30.0, 300.0])
def test_multirate_keeps_the_amplitude_of_a_sine(f):
    t = np.arange(N) / FS
    x = np.sin(2 * np.pi * f * t)
    fr = freqs()
    fast = cwt.multirate_cwt_modulus(x, FS, fr, 480)[:, 100:-100].mean(axis=1)
    full = cwt.resample_rows(cwt.cwt_modulus(x, FS, fr), 480)[:, 100:-100].mean(axis=1)
    k = int(np.argmax(full))
    assert abs(fast[k] / full[k] - 1) < 0.03


def test_parameters_are_checked():
    with pytest.raises(ValueError, match=r"^SIGNAL must be 'voltage' or 'spikes', got 'current'$"):
        ScalogramParams(signal="current")
    with pytest.raises(ValueError, match=r"^STORE_TIMES \(5000\) cannot exceed N_TIMES \(4800\)$"):
        ScalogramParams(store_times=5000)
    with pytest.raises(ValueError, match=r"F_MAX_HZ=3000 Hz is at or above the Nyquist frequency 2000 Hz .*choose a lower F_MAX_HZ"):
        ScalogramParams(f_max_hz=3000.0).frequencies_hz(1.2)


def test_store_round_trip_and_size(tiny_demo):
    store = ScalogramStore.load("demo", tiny_demo)
    assert store.images.dtype == np.float16
    assert store.images.shape[1:] == (2, 180, 480)
    assert store.images[0].nbytes <= 350_000  # <= 1/20 of the paper's 6.9 MB per cell
    params = json.loads((tiny_demo / "demo" / "scalograms" / "params.json").read_text())
    shard_dir = tiny_demo / "demo" / "scalograms" / params["params"]["shard_dir"]
    # the store is the only copy of the images: shards are retired, their status files kept
    assert not list(shard_dir.glob("*.npy"))
    assert len(list(shard_dir.glob("*.json"))) == len(pd.read_csv(tiny_demo / "demo" / "scalograms" / "qc.csv"))
    store_file = tiny_demo / "demo" / "scalograms" / "scalograms.npy"
    assert store_file.stat().st_size <= 128 + 345_600 * len(store.index)
    # reloading is bit-identical to the image computed afresh from the cell's sweeps
    sweeps = pd.read_csv(tiny_demo / "demo" / "sweeps.csv")
    first = store.index.iloc[0]
    signals, _ = sc.cell_voltage_signals(sweeps[sweeps.specimen_id == first.specimen_id], tiny_demo / "demo" / "raw", ScalogramParams())
    fresh = cwt.scalogram_image(signals, 4800 / params["params"]["window_s"], store.freqs_hz, 480).astype(np.float16)
    assert np.array_equal(fresh, store.images[first.row])
    assert np.isclose(float(np.asarray(store.images, dtype=np.float32).max()), 1.0, atol=1e-3)
    assert store.freqs_hz[0] < store.freqs_hz[-1]


def test_scalograms_are_deterministic_and_resume_only_the_rest(tiny_demo, monkeypatch):
    ddir = tiny_demo / "demo" / "scalograms"
    before = np.load(ddir / "scalograms.npy")
    params = json.loads((ddir / "params.json").read_text())
    shard_dir = ddir / params["params"]["shard_dir"]
    victims = sorted(shard_dir.glob("*.json"))[:2]
    for v in victims:
        v.unlink()
        v.with_suffix(".npy").unlink(missing_ok=True)
    computed = []
    real = sc._process_cell
    monkeypatch.setattr(sc, "_process_cell", lambda job: computed.append(job[0]) or real(job))
    compute_scalograms("demo", tiny_demo, n_jobs=1, progress=False)
    assert sorted(computed) == sorted(int(v.stem) for v in victims)
    assert np.array_equal(np.load(ddir / "scalograms.npy"), before)


def test_a_store_that_does_not_match_its_record_is_recomputed_not_trusted(tiny_demo, monkeypatch):
    """A store replaced by a run that stopped before params.json, or edited, is not a source of images."""
    ddir = tiny_demo / "demo" / "scalograms"
    before = np.load(ddir / "scalograms.npy")
    n_ok = len(pd.read_csv(ddir / "index.csv"))
    corrupted = before.copy()
    corrupted[0, 0, 0, 0] = 0.5 if corrupted[0, 0, 0, 0] != 0.5 else 0.25
    np.save(ddir / "scalograms.npy", corrupted)
    computed = []
    real = sc._process_cell
    monkeypatch.setattr(sc, "_process_cell", lambda job: computed.append(job[0]) or real(job))
    compute_scalograms("demo", tiny_demo, n_jobs=1, progress=False)
    assert len(computed) == n_ok
    assert np.array_equal(np.load(ddir / "scalograms.npy"), before)


def test_onset_alignment_gives_identical_images_for_shifted_recordings():
    """The same response recorded with the stimulus 0.3 s later gives the same scalogram."""
    rate = 50_000.0
    rng = np.random.default_rng(1)
    resp = -70 + rng.standard_normal(int(1.4 * rate)).cumsum() * 0.01
    t1 = np.arange(len(resp)) / rate
    pad = np.full(int(0.3 * rate), resp[0])
    t2 = np.arange(len(resp) + len(pad)) / rate
    shifted = np.concatenate([pad, resp])
    p = ScalogramParams()
    a = signals.resample_window(t1, resp, 0.2 - p.pre_s, 1.2 + p.post_s, p.n_times)
    b = signals.resample_window(t2, shifted, 0.5 - p.pre_s, 1.5 + p.post_s, p.n_times)
    np.testing.assert_allclose(a, b, atol=1e-9)
