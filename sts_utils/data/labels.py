"""Labels: the four classes from transcriptomic types, Cre lines or the STS paper's label file.

Stage I/O (the paper's files and a folder dataset's label file are read here). Every rule records where a label comes from
(``label_source``) and flags labels that other evidence contradicts (``label_flags``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from sts_utils.core.config import CLASSES, UNSURE
from sts_utils.core.errors import TableError
from sts_utils.data.tables import check_ids, check_labels, check_unique

#: Transcriptomic subclass (first word of the t-type alias) -> class.
TTYPE_SUBCLASS_TO_CLASS = {"Pvalb": "Pvalb", "Sst": "Sst", "Vip": "Vip/Lamp5", "Lamp5": "Vip/Lamp5",
                           "Sncg": "Vip/Lamp5", "Serpinf1": "Vip/Lamp5", "Meis2": "Vip/Lamp5"}

#: Cre line -> class, for the Cell Types DB and teeter2018 (see shared/data/README.md).
CRE_TO_CLASS = {
    "Pvalb-IRES-Cre": "Pvalb", "Sst-IRES-Cre": "Sst", "Chrna2-Cre_OE25": "Sst",
    "Vip-IRES-Cre": "Vip/Lamp5", "Ndnf-IRES2-dgCre": "Vip/Lamp5", "Chat-IRES-Cre-neo": "Vip/Lamp5",
    "Htr3a-Cre_NO152": UNSURE, "Nkx2-1-CreERT2": UNSURE,
}
EXCITATORY_CRE_PREFIXES = ("Cux2", "Rorb", "Scnn1a", "Nr5a1", "Rbp4", "Ntsr1", "Ctgf", "Emx1", "Slc17a6",
                           "Slc17a7", "Tlx3", "Sim1", "Fezf2", "Glt25d2", "Oxtr", "Esr2", "Penk", "Rasgrf2",
                           "Nos1", "Gng7", "Syt6", "Efr3a", "Tac2")


def label_from_transcriptomic_type(alias: str | float | None, dendrite_type: str | float | None) -> tuple[str, str]:
    """Class and label source of a patch-seq cell.

    Transcriptomic subclass first (Pvalb, Sst, Vip/Lamp5 family); cells without a type fall back
    to morphology: spiny -> Excitatory, otherwise Unsure.
    """
    if isinstance(alias, str) and alias.strip():
        subclass = alias.split()[0]
        if subclass in TTYPE_SUBCLASS_TO_CLASS:
            return TTYPE_SUBCLASS_TO_CLASS[subclass], "transcriptomic"
        return UNSURE, "transcriptomic (unmapped subclass)"
    if isinstance(dendrite_type, str) and dendrite_type.strip().lower() == "spiny":
        return "Excitatory", "dendrite_type"
    return UNSURE, "no type"


def label_from_cre_line(cre: str | float | None, dendrite_type: str | float | None = None) -> tuple[str, str]:
    """Class and label source of a Cell Types DB / teeter2018 cell from its Cre line."""
    if not isinstance(cre, str) or not cre:
        return UNSURE, "no cre line"
    if cre in CRE_TO_CLASS:
        return CRE_TO_CLASS[cre], "cre_line"
    if cre.startswith(EXCITATORY_CRE_PREFIXES):
        return "Excitatory", "cre_line"
    return UNSURE, "cre_line (unmapped)"


def label_flags(label: str, label_source: str, dendrite_type: str | float | None = None,
                reporter_status: str | float | None = None) -> str:
    """Semicolon-separated flags for labels that disagree with other evidence (empty when none).

    - ``cre_vs_dendrite``: a Cre-line interneuron label on a spiny cell, or Excitatory on an aspiny cell
    - ``reporter_negative``: the Cre reporter was negative, so the Cre line says little about the cell
    - ``excitatory_from_dendrite``: a patch-seq Excitatory label inferred from morphology, not transcriptome
    """
    flags = []
    dt = dendrite_type.strip().lower() if isinstance(dendrite_type, str) else ""
    if label_source == "cre_line" and dt:
        if label == "Excitatory" and dt == "aspiny":
            flags.append("cre_vs_dendrite")
        if label in ("Pvalb", "Sst", "Vip/Lamp5") and dt == "spiny":
            flags.append("cre_vs_dendrite")
    if isinstance(reporter_status, str) and "negative" in reporter_status.lower():
        flags.append("reporter_negative")
    if label_source == "dendrite_type" and label == "Excitatory":
        flags.append("excitatory_from_dendrite")
    return ";".join(flags)


def read_paper_labels(path: str | os.PathLike) -> pd.DataFrame:
    """The STS paper's label file: ``<Label> <specimen_id>`` lines -> specimen_id, label."""
    rows = []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TableError(f"{path}:{line_no}: expected '<Label> <specimen_id>', got {line!r}")
        label, sid = parts
        if label not in (*CLASSES, UNSURE):
            raise TableError(f"{path}:{line_no}: unknown class {label!r}; expected one of {(*CLASSES, UNSURE)}")
        rows.append((int(sid), label))
    return pd.DataFrame(rows, columns=["specimen_id", "label"])


def read_paper_split(train_path: str | os.PathLike, test_path: str | os.PathLike) -> pd.DataFrame:
    """The STS paper's split files (``specimen_id, Clamp|Seq`` lines) -> specimen_id, split, source."""
    frames = []
    for split, p in (("train", train_path), ("test", test_path)):
        df = pd.read_csv(p, header=None, names=["specimen_id", "source"], skipinitialspace=True)
        df["split"] = split
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["source"] = out["source"].str.strip().map({"Clamp": "celltypes", "Seq": "patchseq"})
    dup = out["specimen_id"].duplicated(keep=False)
    if dup.any():
        raise TableError(f"{int(dup.sum())} specimen ids appear in both {train_path} and {test_path}; a cell can be in one split only")
    return out


def read_label_file(path: str | os.PathLike, recordings: list[str]) -> pd.DataFrame:
    """A folder dataset's label file: one row per cell with its class, checked as ``cells.csv``'s labels are.

    Parameters
    ----------
    path
        CSV with ``label`` and ``file`` (a recording's path relative to the recordings folder, as
        ``recordings`` lists them) and/or ``specimen_id`` (an integer).
    recordings
        The recordings of the folder (paths relative to it).

    Returns
    -------
    The table with ``label``, ``label_source`` (``labels.csv``) and its key columns (``file`` as a normalised path).

    Raises
    ------
    TableError
        Not a CSV, no key column, an unknown label, a cell twice, or a ``file`` that is not one of
        ``recordings`` (one line naming the file, the line and the fix).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"file": str, "label": str})
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: cannot be read as a CSV table ({type(exc).__name__})") from exc
    keys = [c for c in ("file", "specimen_id") if c in df.columns]
    if "label" not in df.columns or not keys:
        raise TableError(f"{path}: a label file needs a label column and file (a recording's path relative to the "
                         "recordings folder) or specimen_id; found columns " + ", ".join(map(str, df.columns)))
    df["label"] = df["label"].fillna("").str.strip()
    check_labels(df, path)
    if "file" in df.columns:
        df["file"] = [str(Path(f)) if isinstance(f, str) else "" for f in df["file"]]
        check_unique(df, "file", path)
        known = set(recordings)
        missing = [k for k, f in enumerate(df["file"]) if f not in known]
        if missing:
            k = missing[0]
            raise TableError(f"{path}: line {k + 2}: {df['file'].iloc[k]!r} is not a recording of the folder "
                             f"({len(missing)} such row(s)); give paths relative to the recordings folder, e.g. "
                             f"{sorted(known)[0] if known else 'cell1.abf'!r}")
    if "specimen_id" in df.columns:
        df = check_ids(df, path)
    return df.assign(label_source="labels.csv")
