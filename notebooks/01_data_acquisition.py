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
# # 01 — Data acquisition
#
# Makes the recordings of `DATASET` present under `data/<dataset>/raw/` and reads them into the two
# tables every later stage uses: `cells.csv` (one row per cell: label, where the label comes from,
# source, QC status) and the sweep table `sweeps.csv` (or `spike_trains.parquet` for data that only
# have spike times).
#
# * `demo` simulates a cohort of conductance-based neurons of four classes and writes it as NWB 2 files
#   in the DANDI 000020 layout (`sts_utils.compute.simulate`). **Everything computed from it is simulated.**
# * `teeter2018`, `patchseq`, `celltypes`, `allen` are real Allen data, downloaded on first use (or
#   read from the cache folder when the files were copied there by hand), each checked against its
#   pinned SHA-256.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None          # default: $STS_DATA_DIR, else the project's data/
FIGURES_DIR = None       # default: $STS_FIGURES_DIR, else the project's figures/
N_CELLS = 100            # demo only: simulated cells per class
MAX_CELLS = None         # stratified subset of at most this many cells (before any download)
N_JOBS = 2
N_FI_CELLS = 12          # cells per class analysed for the f–I figure

# %%
from sts_utils.stages import acquisition
from sts_utils.pages import plots
from sts_utils.pages.page import open_page

page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)
result = acquisition.acquire(DATASET, DATA_DIR, seed=SEED, max_cells=MAX_CELLS, n_cells=N_CELLS, n_jobs=N_JOBS)
cells, table, qc = result["cells"], result["table"], result["qc"]

# %% [markdown]
# ## Cohort
# Cells per class and source, and where each label comes from.

# %%
page.table(acquisition.cohort_summary(cells), "cohort_summary", "Cells per class, label source and dataset")

# %% [markdown]
# ## Quality control
# Files that could not be read are skipped and counted, never silently dropped; so are sweeps that
# cannot be used (truncated, no step found, unknown stimulus).

# %%
checks = acquisition.qc_summary(qc, table, cells)
page.table(checks["files"], "qc_acquisition", "Acquisition QC")
if "sweeps" in checks:
    page.table(checks["sweeps"], "qc_sweeps", "Sweeps per QC status (unusable sweeps are skipped)")
if "flags" in checks:
    page.show(checks["flags"])

# %% [markdown]
# ## Example recordings
# Voltage recordings: one cell per class at rheobase and rheobase + 40 pA (spikes from ipfx), and the
# f–I curves of `N_FI_CELLS` cells per class. Spike-time data: the rasters of one cell per class.

# %%
if "spike_times_s" not in table.columns:
    fi, examples = acquisition.fi_and_examples(cells, table, page.data_dir / "raw", page.rng, N_FI_CELLS)
    page.figure(plots.example_traces_figure(examples, f"Example long-square responses{page.tag}"), "example_traces.png")
    page.figure(plots.fi_curves_figure(fi, f"f–I curves ({N_FI_CELLS} cells per class){page.tag}"), "fi_curves.png")
else:
    rasters = acquisition.example_rasters(cells, table)
    page.figure(plots.example_rasters_figure(rasters, f"Noise 1 epochs 2 and 3, every repeat{page.tag}"),
                "example_rasters.png")
    if "protocol_version" in cells.columns:
        page.table(acquisition.protocol_versions(cells), "protocol_versions",
                   "Cells per class and protocol version (time base)")

# %% [markdown]
# ## Published labels (allen only)
# For `allen`, the paper's labels are used as published; this table shows how they agree with the
# labels derived here from transcriptomic types (patch-seq) and Cre lines (Cell Types DB).

# %%
if "derived_label" in cells.columns:
    page.table(acquisition.label_agreement(cells).reset_index(), "label_agreement",
               "Paper labels (rows) vs derived labels (columns)")
readable = int((cells.qc_status == "ok").sum())
page.say(f"**{len(cells)} cells** on `{DATASET}`{page.tag}, {readable} readable; "
         + ", ".join(f"{n} {c}" for c, n in cells[cells.qc_status == "ok"].label.value_counts().items()) + ".")
