# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (sts)
#     language: python
#     name: sts
# ---

# %% [markdown]
# # 02 — From sweeps to scalograms
#
# Each cell becomes a two-channel time–frequency image. Per cell: the long-square sweeps; rheobase =
# the smallest step with a spike inside it (ipfx's spike detector); the two sweeps nearest to
# rheobase + `OFFSETS_PA` (ties to the higher amplitude). Each sweep's membrane potential, from `PRE_S`
# before its own stimulus onset to `POST_S` after the offset, is resampled to `N_TIMES` points and
# transformed with a complex Morlet CWT (PyWavelets) at `N_SCALES` log-spaced frequencies. The choices
# and their reasons are documented in `sts_utils.scalograms`.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
SIGNAL = None            # "voltage" or "spikes"; None: spikes for spike-time-only data, else voltage
OFFSETS_PA = [40, 50]
PRE_S = 0.1
POST_S = 0.1
N_TIMES = 4800
N_SCALES = 180
F_MIN_HZ = None          # default: two cycles per analysis window
F_MAX_HZ = None          # default: a quarter of the resampled rate
STORE_TIMES = 480
N_JOBS = 2

# %%
import numpy as np
import pandas as pd
from IPython.display import display

from sts_utils import config, io, plots
from sts_utils.scalograms import ScalogramParams, ScalogramStore, compute_scalograms

config.setup_logging()
config.seed_everything(SEED)
FIG = config.figures_dir(DATASET, FIGURES_DIR)
TAG = config.simulated_tag(DATASET)
DDIR = config.dataset_dir(DATASET, DATA_DIR)
if SIGNAL is None:
    SIGNAL = "spikes" if (DDIR / "spike_trains.parquet").exists() else "voltage"
params = ScalogramParams(signal=SIGNAL, offsets_pa=tuple(float(o) for o in OFFSETS_PA), pre_s=PRE_S, post_s=POST_S,
                         n_times=N_TIMES, n_scales=N_SCALES, f_min_hz=F_MIN_HZ, f_max_hz=F_MAX_HZ, store_times=STORE_TIMES)
result = compute_scalograms(DATASET, DATA_DIR, params, seed=SEED, n_jobs=N_JOBS)
store = ScalogramStore.load(DATASET, DATA_DIR)
print(store.images.shape, store.images.dtype, f"{store.images[0].nbytes:,} bytes per cell")

# %% [markdown]
# ## Quality control
# Cells without the sweeps STS needs are skipped; the reason is counted here.

# %%
qc = result["qc"].groupby(["status", "label"]).size().unstack(fill_value=0).reset_index()
io.write_table(qc, FIG / "qc_scalograms", caption=f"Scalogram stage: cells per status and class{TAG}.")
display(qc)

# %% [markdown]
# ## How a sweep becomes a scalogram
# Trace, spike raster (ipfx) and the scalogram of channel 0 of one cell, on the time axis of the
# stimulus onset.

# %%
index = store.index
example = index.iloc[0]
sid = int(example.specimen_id)
if SIGNAL == "voltage":
    from sts_utils.recordings import load_sweep
    from sts_utils.sweeps import detect_spikes

    sweeps = pd.read_csv(DDIR / "sweeps.csv")
    row = sweeps[(sweeps.specimen_id == sid) & (sweeps.sweep_number == example.sweep_ch0)].iloc[0]
    sw = load_sweep(row, config.raw_dir(DATASET, DATA_DIR))
    spikes = detect_spikes(sw.t_s, sw.v_mv, sw.i_pa)
    fig = plots.sweep_to_scalogram_figure(sw.t_s, sw.v_mv, spikes["threshold_t"], store.get(sid)[0], store.freqs_hz,
                                          store.times_s, row.stim_start_s,
                                          f"{example.label} cell {sid}, {row.amplitude_pa:.0f} pA (rheobase {example.rheobase_pa:.0f} pA){TAG}")
else:
    from sts_utils.recordings import read_spike_trains

    trains = read_spike_trains(DDIR / "spike_trains.parquet")
    reps = trains[(trains.specimen_id == sid) & (trains.epoch == 2)]
    spikes = [r.spike_times_s - r.epoch_start_s for r in reps.itertuples()]
    edges = np.linspace(store.times_s[0], store.times_s[-1], 121)
    rate = np.mean([np.histogram(s, bins=edges)[0] for s in spikes], axis=0) / np.diff(edges)
    fig = plots.sweep_to_scalogram_figure(edges[:-1] + np.diff(edges) / 2, rate, spikes, store.get(sid)[0], store.freqs_hz,
                                          store.times_s, 0.0,
                                          f"{example.label} cell {sid}, Noise 1 epoch 2, {len(spikes)} repeats{TAG}",
                                          ylabel="rate (Hz, mean of repeats)")
plots.save(fig, FIG / "sweep_to_scalogram.png")

# %% [markdown]
# ## Scalograms per class
# One example per class (the first cell of each class in the index), and the class means.

# %%
spike_data = (DDIR / "spike_trains.parquet").exists()
names = ("noise epoch 2", "noise epoch 3") if spike_data else tuple(f"rheobase + {o:g} pA" for o in OFFSETS_PA)
examples = {c: store.get(int(index[index.label == c].specimen_id.iloc[0])) for c in config.CLASSES if (index.label == c).any()}
plots.save(plots.scalogram_grid_figure(examples, store.freqs_hz, store.times_s, names, f"Example scalograms{TAG}"),
           FIG / "scalograms_examples.png")
means = {c: np.asarray(store.images[index[index.label == c].row.to_numpy()], dtype=np.float32).mean(axis=0)
         for c in config.CLASSES if (index.label == c).any()}
plots.save(plots.scalogram_grid_figure(means, store.freqs_hz, store.times_s, names, f"Class-mean scalograms{TAG}"),
           FIG / "scalograms_class_means.png")
