# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version,-jupytext.text_representation.format_version
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
# transformed with a complex Morlet CWT (PyWavelets) at `N_SCALES` log-spaced frequencies. Spike-time
# data (teeter2018) use the binned spike rate of two stimulus epochs instead. The choices and their
# reasons are documented in `sts_utils.stages.scalograms` and `sts_utils.compute.cwt`.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
SIGNAL = None            # "voltage" or "spikes"; None: spikes for spike-time-only data, else voltage
OFFSETS_PA = [40, 50]    # the two channels: sweeps nearest to rheobase + these (pA)
PRE_S = 0.1
POST_S = 0.1
N_TIMES = 4800
N_SCALES = 180
F_MIN_HZ = None          # default: two cycles per analysis window
F_MAX_HZ = None          # default: a quarter of the resampled rate
STORE_TIMES = 480
N_JOBS = 2

# %%
from sts_utils.pages import plots
from sts_utils.stages import scalograms
from sts_utils.core.config import CLASSES
from sts_utils.pages.page import open_page
from sts_utils.data.store import ScalogramStore

page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)
if SIGNAL is None:
    SIGNAL = "spikes" if (page.data_dir / "spike_trains.parquet").exists() else "voltage"
params = scalograms.ScalogramParams(signal=SIGNAL, offsets_pa=tuple(OFFSETS_PA), pre_s=PRE_S, post_s=POST_S,
                                    n_times=N_TIMES, n_scales=N_SCALES, f_min_hz=F_MIN_HZ, f_max_hz=F_MAX_HZ,
                                    store_times=STORE_TIMES)
result = scalograms.compute_scalograms(DATASET, DATA_DIR, params, seed=SEED, n_jobs=N_JOBS)
store = ScalogramStore.load(DATASET, DATA_DIR)
page.say(f"{store.images.shape[0]} cells × {store.images.shape[1]} channels × {store.images.shape[2]} frequencies × "
         f"{store.images.shape[3]} time bins, {store.images.dtype}: {store.images[0].nbytes:,} bytes per cell.")

# %% [markdown]
# ## Quality control
# Cells without the sweeps STS needs are skipped; the reason is counted here (cells left out before
# this stage — `Unsure` labels, unreadable files — are listed too).

# %%
page.table(scalograms.qc_table(result["qc"]), "qc_scalograms", "Scalogram stage: cells per status and class")

# %% [markdown]
# ## How a sweep becomes a scalogram
# Trace (or spike rate), spike raster and the scalogram of channel 0 of one cell, on the time axis of
# the stimulus onset.

# %%
panel = scalograms.example_sweep_panel(DATASET, store, DATA_DIR)
panel["title"] += page.tag
page.figure(plots.sweep_to_scalogram_figure(**panel), "sweep_to_scalogram.png")

# %% [markdown]
# ## Scalograms per class
# One example per class (the first cell of each class in the index), and the class means.

# %%
names = scalograms.channel_names(DATASET, DATA_DIR)
page.figure(plots.scalogram_grid_figure(store.class_examples(CLASSES), store.freqs_hz, store.times_s, names,
                                        f"Example scalograms{page.tag}"), "scalograms_examples.png")
page.figure(plots.scalogram_grid_figure(store.class_means(CLASSES), store.freqs_hz, store.times_s, names,
                                        f"Class-mean scalograms{page.tag}"), "scalograms_class_means.png")
