"""Real recordings of other rigs through models trained on a dataset (notebook 10, ``make rig-recordings``).

Stage. Every set (sub-folder) of ``../shared/data/rig_recordings/`` (ABF, Igor waves, NWB 2 of other writers;
its README says what each is) is read and classified by the bundles notebook 09 exported
(:func:`sts_utils.stages.predict.predict_cells`: the same sweep choice and transform as training). The page shows one
cell per set (its chosen sweeps, step window and scalogram), the QC counts per set, every readable cell's class
probabilities, and a reading of what the models call real pyramidal cells and interneurons.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from sts_utils.stages.bundle import check_compatible, read_card
from sts_utils.core.config import CLASSES, project_root
from sts_utils.stages.predict import compute_images, predict_cells, read_new_cells
from sts_utils.data.recordings import load_sweep

#: where the real files lie in a checkout beside ``shared/`` (CI has them)
RIG_FOLDER = Path("shared") / "data" / "rig_recordings"
#: where the folder comes from: its README (in ../shared/data/) gives each set's origin, licence and class
ORIGIN = ("../shared/data/README.md, section 'rig_recordings/': the files come from GitHub BlueBrain/SSCxEModelExamples "
          "(sscx_l5pc), swharden/pyABF (pyabf), OpenSourceBrain/NWBShowcase (ferguson2015) and BlueBrain/BluePyEfe "
          "(hippocampus_hub), at the commits it names")
#: what the data's README states of each set's cells ("" for a set whose types it does not state)
KNOWN_TYPES = {"sscx_l5pc": "pyramidal", "ferguson2015": "pyramidal", "hippocampus_hub": "interneuron", "pyabf": ""}
#: single files whose type the README states inside a set of unstated types
KNOWN_FILES = {"pyabf/2019_07_24_0055_fsi.abf": "interneuron"}
INTERNEURON_CLASSES = ("Pvalb", "Sst", "Vip/Lamp5")


def rig_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of real rig recordings: ``path``, else ``../shared/data/rig_recordings`` beside the checkout."""
    return Path(path).expanduser() if path else project_root().parent / RIG_FOLDER


def shown_path(folder: Path) -> str:
    """``folder`` as a page shows it: relative to the checkout (``../shared/...``), never a machine path."""
    # not resolved: ../shared may be a link, and the page names it as the reader sees it
    return os.path.relpath(folder, project_root()) if Path(folder).is_absolute() else str(folder)


def known_type(cell: str) -> str:
    """``pyramidal``, ``interneuron`` or ``""`` for a cell (its path below the rig folder), from the data's README."""
    return KNOWN_FILES.get(cell, KNOWN_TYPES.get(cell.split("/")[0], ""))


def classify(bundles: list[Path], folder: Path, out_dir: Path, device: str | None = None, n_jobs: int = 2) -> pd.DataFrame:
    """Every recording below ``folder`` classified by ``bundles`` (``out_dir``: predictions.csv, skipped.csv, run.json).

    Returns :func:`sts_utils.stages.predict.predict_cells`'s table with ``set`` (the sub-folder) and ``known_type``.
    """
    table = predict_cells(bundles, folder, out_dir, device=device, n_jobs=n_jobs, progress=False)
    return table.assign(set=table["cell"].str.split("/").str[0], known_type=table["cell"].map(known_type))


def _sweep_counts(sweep_qc: pd.Series) -> dict[str, int]:
    """Sum of predictions.csv's ``sweep_qc`` strings (``reason: n; ...``) over cells."""
    out: dict[str, int] = {}
    for text in sweep_qc.fillna(""):
        for part in filter(None, (p.strip() for p in str(text).split(";"))):
            reason, _, n = part.rpartition(":")
            out[reason.strip()] = out.get(reason.strip(), 0) + int(n)
    return out


def set_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per set: cells, predicted, skipped (by first reason), sweeps and sweeps ok, predicted classes, mean probabilities."""
    rows = []
    for name, d in table.groupby("set", sort=True):
        ok = d[d["status"] == "ok"]
        counts = _sweep_counts(d["sweep_qc"])
        reasons = d.loc[d["status"] != "ok", "reason"].astype(str).str.split(r"[:(]").str[0].str.strip()
        row = {"set": name, "known_type": KNOWN_TYPES.get(name, ""), "cells": len(d), "predicted": len(ok),
               "skipped": int((d["status"] != "ok").sum()),
               "skip_reasons": "; ".join(f"{r}: {n}" for r, n in reasons.value_counts().items()),
               "sweeps": sum(counts.values()), "sweeps_ok": counts.get("ok", 0)}
        for c in CLASSES:
            row[f"n_{c}"] = int((ok["ensemble_class"] == c).sum())
        for c in CLASSES:
            row[f"mean_p_{c}"] = float(ok[f"ensemble_p_{c}"].mean()) if len(ok) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def examples(table: pd.DataFrame, bundles: list[Path], folder: Path) -> dict[str, dict]:
    """Per set, its first predicted cell: chosen sweeps (t, V, I), step windows, scalogram and the axes.

    Returns ``set -> {cell, label, sweeps: [(title, t_s, v_mv, i_pa, start_s, end_s)], image, freqs_hz, times_s,
    channel_names}``.
    """
    setting = check_compatible([read_card(b) for b in bundles])
    out = {}
    for name, d in table[table["status"] == "ok"].groupby("set", sort=True):
        cell = d.iloc[0]
        new = read_new_cells(folder / cell["cell"])
        sid = int(new.cells["specimen_id"].iloc[0])
        status, meta, image, _ = compute_images(new, setting, progress=False)[sid]
        if status != "ok":
            continue
        sweeps = []
        for k in (0, 1):
            row = new.table[(new.table["specimen_id"] == sid) & (new.table["sweep_number"] == meta[f"sweep_ch{k}"])].iloc[0]
            sw = load_sweep(row, new.root)
            sweeps.append((f"sweep {row.sweep_number} ({row.amplitude_pa:.0f} pA)", sw.t_s, sw.v_mv, sw.i_pa,
                           float(row.stim_start_s), float(row.stim_end_s)))
        out[name] = {"cell": cell["cell"], "label": f"{cell['ensemble_class']} ({cell['ensemble_probability']:.2f})",
                     "sweeps": sweeps, "image": np.asarray(image, dtype=np.float32),
                     "freqs_hz": np.asarray(setting["freqs_hz"]), "times_s": np.asarray(setting["times_s"]),
                     "channel_names": setting["channel_names"]}
    return out


def _calls(d: pd.DataFrame) -> str:
    counts = d["ensemble_class"].value_counts()
    return ", ".join(f"{n} {c}" for c, n in counts.items())


def reading(table: pd.DataFrame, trained_on: str) -> str:
    """What the models trained on ``trained_on`` call the real pyramidal cells and interneurons, from the numbers."""
    ok = table[table["status"] == "ok"]
    pyr, inter = ok[ok["known_type"] == "pyramidal"], ok[ok["known_type"] == "interneuron"]
    n_skipped = int((table["status"] != "ok").sum())
    parts = [f"Of {len(table)} real cells read, {len(ok)} went through the sweep choice and were classified "
             f"({n_skipped} skipped, reasons in the QC table)."]
    pyr_exc = float((pyr["ensemble_class"] == "Excitatory").mean()) if len(pyr) else np.nan
    inter_ok = float(inter["ensemble_class"].isin(INTERNEURON_CLASSES).mean()) if len(inter) else np.nan
    if len(pyr):
        parts.append(f"The {len(pyr)} pyramidal cells (sets {', '.join(sorted(pyr['set'].unique()))}) are called "
                     f"{_calls(pyr)}: "
                     f"{pyr_exc:.0%} Excitatory, mean ensemble probability of Excitatory "
                     f"{pyr['ensemble_p_Excitatory'].mean():.2f}.")
    if len(inter):
        parts.append(f"The {len(inter)} interneuron(s) are called {_calls(inter)} "
                     f"({inter_ok:.0%} an interneuron class).")
    unknown = ok[ok["known_type"] == ""]
    if len(unknown):
        parts.append(f"The {len(unknown)} cells of unstated type are called {_calls(unknown)}.")
    if not len(pyr) and not len(inter):
        parts.append("No cell of a stated type could be classified, so nothing can be said about the simulation.")
    elif (len(pyr) and pyr_exc >= 0.5) and (not len(inter) or inter_ok >= 0.5):
        parts.append(f"Models trained on the {trained_on} cohort put most real cells of a stated type on the right "
                     "side of the pyramidal/interneuron divide: the simulated Excitatory class carries something of "
                     "real regular-spiking pyramidal cells. These are few cells of another species and region, and "
                     "the four-class split itself (Pvalb, Sst, Vip/Lamp5) is not tested by them.")
    else:
        parts.append(f"Models trained on the {trained_on} cohort do not recognise real pyramidal cells"
                     + (" or interneurons" if len(inter) and inter_ok < 0.5 else "")
                     + ": what separates the simulated classes is not what separates real cells, so the demo's "
                       "accuracy says nothing about real recordings, and the simulated cells' firing (rates, "
                       "adaptation, spike shape) differs from real ones in what the models use. Only models trained "
                       "on real labelled cells (teeter2018, allen) can be read as classifiers of real cells.")
    return " ".join(parts)


def absent_summary(folder: Path) -> pd.DataFrame:
    """The summary table's one row when the real files are not on this machine."""
    return pd.DataFrame([{"set": "", "known_type": "", "cells": 0, "predicted": 0, "skipped": 0,
                          "skip_reasons": f"no rig recordings at {folder}", "sweeps": 0, "sweeps_ok": 0}])
