"""Features stage: IPFX long-square features per cell, and the published feature tables.

Computed features come from the same sweeps the CNNs see, through ipfx's own analysis
(``LongSquareAnalysis`` with the long-square detection parameters, then
``ipfx.feature_record.build_cell_feature_record`` for the Allen/IPFX feature names), on time axes
aligned to each sweep's stimulus onset: every ``*_t_long_square`` feature is a time after onset.

Published tables (``FEATURE_TABLES``) are the STS paper's two tables (Cell Types DB: Allen API
names, key ``specimen_id``; patch-seq: IPFX names, key ``cell_specimen_id``), Allen's cell-types
specimen details CSV (key ``specimen__id``, features ``ef__*``) and teeter2018's
``features_7_27_17.csv``. Feature sets:

``paper``
    the paper's selection exactly: the columns whose lower-cased name contains one of
    ``f_i_curve_slope, avg_isi, adaptation, latency, has_burst, has_pause, has_delay, long_square``
    *after* its renames (``avg_isi -> average_ISI``, ``has_* -> had_*``), which therefore drop out,
    kept only where common to both tables: 15 features on the full tables.
``all``
    every numeric feature common to the inputs, with absolute spike times turned into intervals
    (``X_t_long_square - threshold_t_long_square``, and ``threshold_t`` itself dropped), so that no
    feature carries the recording protocol's stimulus onset.
"""
from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from tqdm import tqdm

from ipfx import spike_train_features as strf
from ipfx.data_set_features import detection_parameters, extractors_for_sweeps
from ipfx.error import FeatureError
from ipfx.feature_record import build_cell_feature_record
from ipfx.stimulus import StimulusType
from ipfx.stimulus_protocol_analysis import LongSquareAnalysis
from ipfx.sweep import Sweep, SweepSet

from sts_utils.core.config import CLASSES, dataset_dir, logger, progress_stream
from sts_utils.core.errors import RecordingError, TableError
from sts_utils.core.io import write_csv_atomic, write_sidecar
from sts_utils.data.recordings import load_sweep
from sts_utils.data.tables import read_cells, read_sweeps

PAPER_REQUIRED = ("f_i_curve_slope", "avg_isi", "adaptation", "latency", "has_burst", "has_pause", "has_delay",
                  "specimen_id", "long_square")
PAPER_RENAMES = {"avg_isi": "average_ISI", "has_burst": "had_burst", "has_pause": "had_pause", "has_delay": "had_delay"}
#: what ipfx raises on a cell or ISI set it cannot analyse (a value then stays NaN, or the cell is counted)
IPFX_ERRORS = (FeatureError, ValueError, IndexError, KeyError, ZeroDivisionError, RuntimeError, RecordingError)
KEY_COLUMNS = ("specimen_id", "cell_specimen_id", "specimen_ID", "specimen__id")
NON_FEATURES = {"specimen_id", "label", "rheobase_sweep_num", "thumbnail_sweep_num", "rheobase_sweep_number",
                "rheobase_sweep_id", "thumbnail_sweep_id", "id", "electrode_0_pa", "seal_gohm", "Unnamed: 0",
                "qc_status", "source", "protocol_version",
                # teeter2018 table: the Cre line and E/I class are labels, has_reset_rules a GLIF-fit outcome
                "cre", "excitation", "has_reset_rules"}


# ------------------------------------------------------------------------------- computed by ipfx

def cell_long_square_features(cell_sweeps: pd.DataFrame, root: str | os.PathLike) -> dict:
    """IPFX long-square features of one cell from its sweep-table rows (voltage recordings).

    Raises ``ValueError`` / ipfx ``FeatureError`` when the cell has no usable long squares.
    """
    ls = cell_sweeps[cell_sweeps["stimulus_kind"] == "Long Square"].dropna(subset=["amplitude_pa", "stim_start_s"])
    if "sweep_qc" in ls.columns:
        ls = ls[ls["sweep_qc"] == "ok"]
    ls = ls.sort_values("sweep_number")
    sweeps, numbers = [], []
    for r in ls.itertuples(index=False):
        s = load_sweep(r._asdict(), root)
        if not np.isfinite(s.v_mv).all():
            continue  # a NaN sweep is dropped; the cell goes on with the others
        # each sweep on its own onset-aligned time axis
        sweeps.append(Sweep(s.t_s - r.stim_start_s, s.v_mv, s.i_pa, "CurrentClamp", s.sampling_rate_hz, sweep_number=int(r.sweep_number)))
        numbers.append(int(r.sweep_number))
    if not sweeps:
        raise ValueError("no usable long-square sweep")
    duration = float((ls["stim_end_s"] - ls["stim_start_s"]).median())
    sweep_set = SweepSet(sweeps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spx, spfx = extractors_for_sweeps(sweep_set, start=0.0, end=duration, **detection_parameters(StimulusType.LONG_SQUARE))
        lsa = LongSquareAnalysis(spx, spfx, subthresh_min_amp=-100.0, require_subthreshold=False)
        feats = lsa.analyze(sweep_set)
        as_dict = lsa.as_dict(feats, [dict(sweep_number=n) for n in numbers])
        if as_dict.get("hero_sweep") is None:
            raise ValueError("no hero sweep (no spiking sweep 39-61 pA above rheobase)")
        record = build_cell_feature_record({"long_squares": as_dict, "ramps": None, "short_squares": None})
    hero = as_dict["hero_sweep"]
    first = as_dict["rheobase_sweep"]["spikes"][0]
    record.update(firing_pattern_features(sweep_set, feats, numbers, int(hero["sweep_number"]), duration))
    record.update({"isi_cv": hero.get("isi_cv"), "first_isi": hero.get("first_isi"), "avg_rate_hero_hz": hero.get("avg_rate"),
                   "width_long_square": first.get("width"), "rheobase_i": as_dict.get("rheobase_i")})
    return {k: (np.nan if v is None else float(v)) for k, v in record.items()}


def firing_pattern_features(sweep_set, feats: dict, numbers: list[int], hero_sweep: int, duration_s: float) -> dict:
    """Burst, pause and delay of the hero sweep with ipfx's spike-train functions.

    ipfx computes the quantities (``burst``: max burstiness index and number of bursts; ``pause``:
    number and time fraction of pauses; ``delay``: latency over the rise time constant) but marks the
    functions deprecated and leaves the yes/no flags to the caller. The flags here are plain: a burst
    or a pause was detected, and the delay ratio exceeds 1 (first spike later than one time
    constant of the rise). Values are NaN when ipfx cannot compute them (too few spikes).
    """
    k = numbers.index(hero_sweep)
    sw, spikes = sweep_set.sweeps[k], feats["spikes_set"][k]
    out = {"burstiness_hero": np.nan, "n_bursts_hero": np.nan, "n_pauses_hero": np.nan, "pause_frac_hero": np.nan,
           "delay_ratio_hero": np.nan}
    # ipfx 2.1's wrappers strf.burst / strf.pause call spike_features.detect_bursts / detect_pauses,
    # which live in spike_train_features now (AttributeError), so the detectors are called directly
    # with the inputs those wrappers would pass.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(spikes) >= 3:
            isis = strf.get_isis(sw.t, spikes["threshold_index"].to_numpy().astype(int))
            isi_types = spikes["isi_type"][:-1].to_numpy()
            try:
                pauses = strf.detect_pauses(isis, isi_types, cost_weight=1.0)
                out["n_pauses_hero"] = float(len(pauses))
                out["pause_frac_hero"] = float(isis[pauses].sum() / duration_s) if len(pauses) else 0.0
            except IPFX_ERRORS:  # ipfx raises on degenerate ISI sets; the value stays NaN
                pass
            try:
                bursts = np.array(strf.detect_bursts(isis, isi_types, spikes["fast_trough_v"].to_numpy(),
                                                     spikes["fast_trough_t"].to_numpy(), spikes["slow_trough_v"].to_numpy(),
                                                     spikes["slow_trough_t"].to_numpy(), spikes["threshold_v"].to_numpy()))
                out["n_bursts_hero"] = float(bursts.shape[0])
                out["burstiness_hero"] = float(bursts[:, 0].max()) if bursts.shape[0] else 0.0
            except IPFX_ERRORS:
                pass
        try:
            out["delay_ratio_hero"] = float(strf.delay(sw.t, sw.v, spikes, 0.0, duration_s)[0])
        except IPFX_ERRORS:
            pass
    out["has_burst"] = float(out["n_bursts_hero"] > 0) if np.isfinite(out["n_bursts_hero"]) else np.nan
    out["has_pause"] = float(out["n_pauses_hero"] > 0) if np.isfinite(out["n_pauses_hero"]) else np.nan
    out["has_delay"] = float(out["delay_ratio_hero"] > 1) if np.isfinite(out["delay_ratio_hero"]) else np.nan
    return out


def _features_job(job):
    sid, rows, root = job
    try:
        return sid, cell_long_square_features(rows, root), "ok"
    except IPFX_ERRORS as exc:  # a cell ipfx cannot analyse is counted in features_qc.csv, not fatal
        return sid, {}, f"{type(exc).__name__}: {str(exc)[:120]}"


def compute_features(dataset: str, data_dir: str | os.PathLike | None = None, n_jobs: int = 2, seed: int = 0,
                     progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``features.csv`` of a voltage dataset: one row per labelled cell; failures in ``features_qc.csv``."""
    ddir = dataset_dir(dataset, data_dir)
    cells = read_cells(ddir / "cells.csv")
    cells = cells[cells["label"].isin(CLASSES) & (cells["qc_status"] == "ok")]
    sweeps = read_sweeps(ddir / "sweeps.csv")
    groups = dict(tuple(sweeps.groupby("specimen_id")))
    jobs = [(int(s), groups[s], str(ddir / "raw")) for s in cells["specimen_id"] if s in groups]
    rows, qc = [], []
    with ProcessPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        for sid, feats, status in tqdm(pool.map(_features_job, jobs, chunksize=4), total=len(jobs), desc="ipfx features",
                                       disable=not progress, file=progress_stream()):
            qc.append({"specimen_id": sid, "status": status})
            if status == "ok":
                rows.append({"specimen_id": sid, **feats})
    qc_df = pd.DataFrame(qc, columns=["specimen_id", "status"])
    if not rows:
        # nothing to fit a baseline on: say why, from the QC, instead of failing on an empty table
        reasons = qc_df["status"].str.split(":").str[0].value_counts().to_dict() if len(qc_df) else {}
        raise TableError(f"{ddir}: ipfx computed features for none of {len(jobs)} labelled cells with sweeps "
                         f"({', '.join(f'{k}: {v}' for k, v in reasons.items()) or 'no cell to analyse'}); "
                         f"check sweeps.csv (notebook 01) or pass published FEATURE_TABLES")
    features = pd.DataFrame(rows).sort_values("specimen_id").reset_index(drop=True)
    path = write_csv_atomic(features, ddir / "features.csv")
    write_csv_atomic(qc_df, ddir / "features_qc.csv")
    write_sidecar(path, {"dataset": dataset, "source": "ipfx LongSquareAnalysis, onset-aligned"}, seed=seed,
                  inputs={"sweeps.csv": ddir / "sweeps.csv", "cells.csv": ddir / "cells.csv"}, stage="features",
                  extra={"n_ok": int(len(features)), "failures": qc_df[qc_df.status != "ok"]["status"].str.split(":").str[0].value_counts().to_dict()})
    bad = (qc_df["status"] != "ok").sum()
    if bad:
        logger.warning("ipfx features failed for %d of %d cells", bad, len(qc_df))
    return features, qc_df


# --------------------------------------------------------------------------------- published tables

def read_feature_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a published feature table and name its key ``specimen_id`` (integer)."""
    df = pd.read_csv(path)
    if "specimen__id" in df.columns:
        # Allen's cell-types specimen details: electrophysiology columns carry an "ef__" prefix
        df = df[["specimen__id"] + [c for c in df.columns if c.startswith("ef__")]]
        df = df.rename(columns=lambda c: c[4:] if c.startswith("ef__") else c)
    keys = [k for k in KEY_COLUMNS if k in df.columns]
    if not keys:
        raise ValueError(f"{path}: no key column (expected one of {KEY_COLUMNS})")
    key = "cell_specimen_id" if "cell_specimen_id" in keys else keys[0]
    if "specimen_id" in df.columns and key != "specimen_id":
        df = df.drop(columns=["specimen_id"])
    df = df.rename(columns={key: "specimen_id"})
    if df["specimen_id"].isna().any():
        n = int(df["specimen_id"].isna().sum())
        logger.warning("%s: %d rows without a specimen id skipped", path, n)
        df = df.dropna(subset=["specimen_id"])
    df["specimen_id"] = df["specimen_id"].astype("int64")
    dup = df["specimen_id"].duplicated()
    if dup.any():
        logger.warning("%s: %d duplicated specimen ids, first kept", path, int(dup.sum()))
        df = df[~dup]
    return df.reset_index(drop=True)


def paper_feature_columns(tables: list[pd.DataFrame]) -> list[str]:
    """The paper's selection on renamed tables: required-substring columns common to all tables."""
    selected = []
    for df in tables:
        cols = [c for c in df.columns if any(req in c.lower() for req in PAPER_REQUIRED)]
        selected.append(set(cols))
    common = set.intersection(*selected) if selected else set()
    return sorted(c for c in common if c != "specimen_id")


def select_features(tables: list[pd.DataFrame], feature_set: str = "all") -> pd.DataFrame:
    """Combine feature tables (rows: cells) on their common features.

    Parameters
    ----------
    feature_set
        ``paper`` (the paper's 15 columns, absolute times) or ``all`` (every common numeric
        feature, spike times as intervals after threshold).
    """
    if feature_set not in ("paper", "all"):
        raise ValueError(f"feature_set must be 'paper' or 'all', got {feature_set!r}")
    if feature_set == "paper":
        renamed = [t.rename(columns=PAPER_RENAMES) for t in tables]
        cols = paper_feature_columns(renamed)
        out = pd.concat([t[["specimen_id", *cols]] for t in renamed], ignore_index=True)
    else:
        renamed = [to_intervals(t) for t in tables]
        common = set.intersection(*[set(t.columns) for t in renamed])
        cols = sorted(c for c in common if c not in NON_FEATURES and all(pd.api.types.is_numeric_dtype(t[c]) or t[c].dtype == bool for t in renamed))
        out = pd.concat([t[["specimen_id", *cols]] for t in renamed], ignore_index=True)
    out = out.drop_duplicates("specimen_id").reset_index(drop=True)
    for c in out.columns:
        if out[c].dtype == bool:
            out[c] = out[c].astype(float)
    return out


def to_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """Replace absolute spike times ``X_t_<stim>`` by ``X_dt_<stim>`` = time after that stimulus' threshold time."""
    df = df.copy()
    for col in list(df.columns):
        m = re.fullmatch(r"(\w+?)_t_(long_square|short_square|ramp)", col)
        if m and m.group(1) != "threshold" and f"threshold_t_{m.group(2)}" in df.columns:
            df[f"{m.group(1)}_dt_{m.group(2)}"] = df[col] - df[f"threshold_t_{m.group(2)}"]
            df = df.drop(columns=col)
    return df.drop(columns=[c for c in df.columns if re.fullmatch(r"threshold_t_(long_square|short_square|ramp)", c)])


def load_feature_tables(paths: list[str | os.PathLike], feature_set: str = "all") -> pd.DataFrame:
    return select_features([read_feature_table(p) for p in paths], feature_set)
