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
# # 01 — Data acquisition
#
# Makes the recordings of `DATASET` present under `$STS_DATA_DIR/<dataset>/raw/` and reads them into
# the two tables every later stage uses: `cells.csv` (one row per cell: label, where the label comes
# from, source, QC status) and the sweep table `sweeps.csv` (or `spike_trains.parquet` for data that
# only have spike times).
#
# * `demo` simulates a cohort of conductance-based neurons of four classes and writes it as NWB 2 files
#   in the DANDI 000020 layout (see `sts_utils.simulate`). **Everything computed from it is simulated.**
# * `teeter2018`, `patchseq`, `celltypes`, `allen` are real Allen data, downloaded on first use (or
#   read from the cache folder when the files were copied there by hand).

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None          # default: $STS_DATA_DIR, else data/
FIGURES_DIR = None       # default: figures/
N_CELLS = 100            # demo only: simulated cells per class
MAX_CELLS = None         # stratified subset of at most this many cells (before any download)
N_JOBS = 2
N_FI_CELLS = 12          # cells per class analysed for the f–I figure

# %%
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from sts_utils import config, datasets, io, plots
from sts_utils.sweeps import spike_count_table

config.setup_logging()
config.seed_everything(SEED)
FIG = config.figures_dir(DATASET, FIGURES_DIR)
TAG = config.simulated_tag(DATASET)
result = datasets.acquire(DATASET, DATA_DIR, seed=SEED, max_cells=MAX_CELLS, n_cells=N_CELLS, n_jobs=N_JOBS)
cells, table, qc = result["cells"], result["table"], result["qc"]
RAW = config.raw_dir(DATASET, DATA_DIR)

# %% [markdown]
# ## Cohort
# Cells per class and source, and where each label comes from.

# %%
summary = pd.crosstab([cells["label"], cells["label_source"]], cells["source"]).reset_index()
io.write_table(summary, FIG / "cohort_summary", caption=f"Cells per class, label source and dataset{TAG}.")
display(summary)

# %% [markdown]
# ## Quality control
# Files that could not be read are skipped and counted, never silently dropped.

# %%
qc_counts = qc["qc_status"].str.split(":").str[0].value_counts().rename_axis("qc_status").reset_index(name="cells")
io.write_table(qc_counts, FIG / "qc_acquisition", caption=f"Acquisition QC{TAG}.")
display(qc_counts)
if "sweep_qc" in table.columns:
    sweep_qc = table["sweep_qc"].value_counts().rename_axis("sweep_qc").reset_index(name="sweeps")
    io.write_table(sweep_qc, FIG / "qc_sweeps", caption=f"Sweeps per QC status (unusable sweeps are skipped){TAG}.")
    display(sweep_qc)
if "label_flags" in cells.columns:
    flags = cells["label_flags"].fillna("").str.split(";").explode().replace("", "none").value_counts()
    display(flags.rename("cells").to_frame())

# %% [markdown]
# ## Example recordings
# For voltage recordings: one cell per class at rheobase and rheobase + 40 pA (spikes from ipfx), and
# the f–I curves of a sample of cells per class. For spike-time data: rasters of one cell per class.

# %%
if "spike_times_s" not in table.columns:
    from sts_utils.recordings import load_sweep

    rng = np.random.default_rng(SEED)
    ok = cells[(cells.qc_status == "ok") & cells.label.isin(config.CLASSES)]
    groups = dict(tuple(table.groupby("specimen_id")))
    examples, fi_rows = {}, []
    for label in config.CLASSES:
        ids = ok.loc[ok.label == label, "specimen_id"].to_numpy()
        if len(ids) == 0:
            continue
        for k, sid in enumerate(rng.choice(ids, size=min(N_FI_CELLS, len(ids)), replace=False)):
            counts = spike_count_table(groups[sid], RAW)
            spiking = counts[counts.n_spikes > 0]
            if spiking.empty:
                continue
            rheo = spiking.amplitude_pa.min()
            fi_rows.append(counts.assign(specimen_id=sid, label=label, above_rheobase_pa=counts.amplitude_pa - rheo))
            if label not in examples:
                panels = []
                for name, target in (("rheobase", rheo), ("rheobase + 40 pA", rheo + 40)):
                    row = groups[sid].iloc[(groups[sid].amplitude_pa - target).abs().argmin()]
                    sw = load_sweep(row, RAW)
                    panels.append((f"{name} ({row.amplitude_pa:.0f} pA), cell {sid}", sw.t_s, sw.v_mv))
                examples[label] = panels
    plots.save(plots.example_traces_figure(examples, f"Example long-square responses{TAG}"), FIG / "example_traces.png")
    fi = pd.concat(fi_rows, ignore_index=True)
    fi = fi[(fi.above_rheobase_pa >= -40) & (fi.above_rheobase_pa <= 120)]
    plots.save(plots.fi_curves_figure(fi, f"f–I curves ({N_FI_CELLS} cells per class){TAG}"), FIG / "fi_curves.png")
else:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(13, 2.8), sharey=False)
    for ax, label in zip(axes, config.CLASSES):
        ids = cells.loc[(cells.label == label) & (cells.qc_status == "ok"), "specimen_id"]
        if ids.empty:
            continue
        rows = table[table.specimen_id == ids.iloc[0]]
        for k, r in enumerate(rows.itertuples()):
            ax.eventplot(r.spike_times_s - r.epoch_start_s, lineoffsets=k, linelengths=0.8, color=plots.CLASS_COLORS[label])
        ax.set_title(f"{label} — cell {ids.iloc[0]}", fontsize=8)
        ax.set_xlabel("time from epoch onset (s)")
    axes[0].set_ylabel("sweep x epoch")
    fig.tight_layout()
    plots.save(fig, FIG / "example_rasters.png")
    if "protocol_version" in cells.columns:
        pv = pd.crosstab(cells.label, cells.protocol_version).reset_index()
        io.write_table(pv, FIG / "protocol_versions", caption="Cells per class and protocol version (time base).")
        display(pv)

# %% [markdown]
# ## Published labels (allen only)
# For `allen`, the paper's labels are used as published; this table shows how they agree with the
# labels derived here from transcriptomic types (patch-seq) and Cre lines (Cell Types DB).

# %%
if "derived_label" in cells.columns:
    agreement = datasets.label_agreement(cells).reset_index()
    io.write_table(agreement, FIG / "label_agreement", caption="Paper labels (rows) vs derived labels (columns).")
    display(agreement)
display(Markdown(f"**{len(cells)} cells**, {int((cells.qc_status == 'ok').sum())} readable{TAG}."))
