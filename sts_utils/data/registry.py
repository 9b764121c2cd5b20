"""Where every raw file comes from: one declarative table of sources, URLs and pinned hashes.

Stage I/O, after MNE's ``datasets/_fetch.py``: each source has a base URL at a pinned commit or
release, and the SHA-256 of every file the project knows ships with the package
(``sts_utils/data/hashes/<source>.sha256``, ``sha256sum`` format; DANDI 000020's come from the patch-seq
manifest that ipfx ships). :func:`ensure_files` makes files present under a dataset's ``raw/``
cache (mirroring the origin's relative paths), downloading what is missing with :mod:`pooch` or the
``dandi`` client, and verifies every file by content:

* a file with a pinned hash must match it, whether downloaded or copied into the cache by hand;
* a file of unknown hash (Allen API downloads) is hashed on first sight and recorded in
  ``raw/hashes.lock.json``; later runs verify it against that record;
* ``raw/verified.json`` remembers each verified file's hash with its size, modification time,
  inode and status-change time (``ctime``, which no write can keep), so an unchanged file is not
  hashed again but any write to it is (git's index does the same).

Nothing partial is ever left in the cache, and offline (``STS_OFFLINE=1``) a missing file is one
error naming the files, the cache folder and their URLs.

A folder of the user's own recordings is a dataset too, registered by one small file
(:func:`read_folder_dataset`, ``data/<name>/dataset.yaml``): its source is that folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml
from tqdm import tqdm

from sts_utils.core.config import logger, offline, progress_stream
from sts_utils.core.errors import DataNotAvailableError
from sts_utils.core.io import atomic_path, file_sha256, write_text_atomic

TEETER_COMMIT = "dcb232354b1a5c3e348d163cb479ae2ee10c564d"
STS_PAPER_COMMIT = "294842c0b2409acb0f765c0eb9c30849000fd27b"
ALLEN_API = "https://api.brain-map.org"
DANDISET = "000020"


@dataclass(frozen=True)
class Source:
    """One origin of raw files.

    Attributes
    ----------
    url
        Base URL; a file's URL is ``url + relpath``.
    hashes
        Name of the pinned-hash file in ``sts_utils/data/hashes/`` (``None``: hashes come from elsewhere
        or are recorded on first sight).
    licence, description
        What the files are and under which terms (see ``data/README.md``).
    """

    url: str
    hashes: str | None
    licence: str
    description: str


SOURCES: dict[str, Source] = {
    "teeter2018": Source(
        f"https://raw.githubusercontent.com/AllenInstitute/GLIF_Teeter_et_al_2018/{TEETER_COMMIT}/",
        "teeter2018.sha256", "Allen Institute Software License",
        "spike times of Noise 1 sweeps and long-square features of 645 Allen Cell Types cells (Teeter et al. 2018)"),
    "sts_paper": Source(
        f"https://raw.githubusercontent.com/smilies-polito/spike-train-scalograms/{STS_PAPER_COMMIT}/",
        "sts_paper.sha256", "as published", "labels and train/test split of the STS paper"),
    "dandi_000020": Source(
        f"dandi://DANDI/{DANDISET}/", None, "CC-BY-4.0",
        "Allen patch-seq NWB 2 files (Gouwens et al. 2020); SHA-256 from ipfx's 2020-06-26 manifest"),
    "allen_api": Source(
        f"{ALLEN_API}", None, "Allen Institute terms of use",
        "Allen Cell Types DB NWB 1 files and specimen details (Gouwens et al. 2019); hashes recorded on first sight"),
}


@dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset: its path under ``raw/``, where it comes from, and its hash when known."""

    relpath: str
    url: str
    sha256: str | None = None
    dandi_path: str | None = None  # set for DANDI assets (downloaded with the dandi client)


@lru_cache(maxsize=None)
def pinned_hashes(source: str) -> dict[str, str]:
    """``relpath -> sha256`` of a source's files as shipped with the package (empty when none)."""
    name = SOURCES[source].hashes
    if name is None:
        return {}
    text = resources.files("sts_utils.data").joinpath("hashes", name).read_text()
    out = {}
    for line in text.splitlines():
        if line.strip():
            digest, rel = line.split(maxsplit=1)
            out[rel.strip()] = digest
    return out


def remote_file(source: str, relpath: str) -> RemoteFile:
    """The registry's entry for ``relpath`` of ``source`` (URL and pinned hash)."""
    return RemoteFile(relpath, SOURCES[source].url + relpath, pinned_hashes(source).get(relpath))


# ------------------------------------------------------------------------------------- verification

def _lock_path(cache: Path) -> Path:
    return cache / "hashes.lock.json"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def verified_sha256(path: Path, cache: Path, record: dict) -> str:
    """SHA-256 of a cached file, hashed again unless ``record`` saw it unchanged (size, mtime, ctime, inode)."""
    rel = str(path.relative_to(cache))
    key = _stat_key(path)
    seen = record.get(rel)
    if isinstance(seen, dict) and seen.get("stat") == key:
        return seen["sha256"]
    digest = file_sha256(path)
    record[rel] = {"sha256": digest, "stat": key}
    return digest


def ensure_files(entries: list[RemoteFile], cache: Path, what: str) -> list[Path]:
    """Make every entry present in ``cache`` and verify each by content.

    Returns
    -------
    The local paths, in the order of ``entries``.

    Raises
    ------
    DataNotAvailableError
        When files are missing and cannot be downloaded (the message names the files, the cache
        folder and where to get them), or a file does not match its pinned or recorded hash.
    """
    cache = Path(cache)
    lock = _read_json(_lock_path(cache))
    verified_path = cache / "verified.json"
    verified = _read_json(verified_path)
    before = json.dumps([lock, verified], sort_keys=True)
    try:
        missing = []
        for e in entries:
            p = cache / e.relpath
            if not p.is_file():
                missing.append(e)
                continue
            digest = verified_sha256(p, cache, verified)
            expected = e.sha256 or lock.get(e.relpath)
            if expected is None:
                lock[e.relpath] = digest  # unknown to the registry: recorded on first sight
            elif digest != expected:
                raise DataNotAvailableError(
                    f"{p} does not match its {'pinned' if e.sha256 else 'recorded'} sha256 {expected[:12]}… "
                    f"(it is {digest[:12]}…): the file is corrupt or changed; delete it to download it again "
                    f"({e.url})")
        if missing:
            logger.info("%s: %d of %d files missing from %s", what, len(missing), len(entries), cache)
            if offline():
                raise DataNotAvailableError(_missing_message(missing, cache, what, "STS_OFFLINE is set"))
            for e in tqdm(missing, desc=f"downloading {what}", file=progress_stream()):
                last: Exception | None = None
                for attempt in range(3):
                    try:
                        _download(e, cache)
                        break
                    except Exception as exc:  # network errors of requests/urllib/dandi differ by client
                        last = exc
                        logger.warning("download of %s failed (attempt %d): %s", e.url, attempt + 1, exc)
                else:
                    raise DataNotAvailableError(_missing_message(
                        [m for m in missing if not (cache / m.relpath).is_file()], cache, what,
                        f"download failed: {last}")) from last
                digest = verified_sha256(cache / e.relpath, cache, verified)
                if e.sha256 is None:
                    lock[e.relpath] = digest
    finally:
        if json.dumps([lock, verified], sort_keys=True) != before:
            write_text_atomic(_lock_path(cache), json.dumps(lock, indent=1, sort_keys=True))
            write_text_atomic(verified_path, json.dumps(verified, indent=1, sort_keys=True))
    return [cache / e.relpath for e in entries]


def _download(entry: RemoteFile, cache: Path) -> Path:
    """Download one file into the cache atomically (dandi client or pooch), checking its pinned hash."""
    target = cache / entry.relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    if entry.dandi_path is not None:
        from dandi.dandiapi import DandiAPIClient  # heavy client, only needed for DANDI downloads

        with DandiAPIClient() as client:
            asset = client.get_dandiset(DANDISET, "draft").get_asset_by_path(entry.dandi_path)
            with atomic_path(target) as tmp:
                tmp.unlink()
                asset.download(tmp)
                if entry.sha256 and file_sha256(tmp) != entry.sha256:
                    raise OSError(f"sha256 mismatch for {entry.dandi_path}")
        return target
    import pooch  # only needed when something is downloaded

    known = f"sha256:{entry.sha256}" if entry.sha256 else None
    path = pooch.retrieve(entry.url, known_hash=known, fname=target.name, path=target.parent,
                          downloader=pooch.HTTPDownloader(progressbar=False, timeout=60), progressbar=False)
    return Path(path)


def _missing_message(missing: list[RemoteFile], cache: Path, what: str, reason: str) -> str:
    shown = "\n".join(f"  {cache / e.relpath}  <-  {e.url}" for e in missing[:10])
    more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
    return (f"{len(missing)} file(s) of {what} are not in the cache folder {cache} and cannot be downloaded "
            f"({reason}):\n{shown}{more}\nEither run with internet access, or copy the files to those paths "
            f"(the folder mirrors the origin's relative paths), or set STS_DATA_DIR to a folder that holds them.")


# ------------------------------------------------------------------------------------ per source

TEETER_FEATURES = "GLIF_clustering/features_7_27_17.csv"


def teeter_cell_relpath(specimen_id: int, cre_line: str) -> str:
    """Path of one teeter2018 cell's spike-time file in its repository."""
    return f"mouse_struc_data_dir/{specimen_id}_{cre_line}/{specimen_id}_{cre_line}_preprocessor_values.json"


def sts_paper_files(cache: Path) -> dict[str, Path]:
    """The STS paper's labels and split (downloaded from its pinned commit, or found in ``cache``)."""
    names = {"labels": "data/cell_types_GouwensAll_new.txt", "train": "data/Train_split.csv", "test": "data/Test_split.csv"}
    paths = ensure_files([remote_file("sts_paper", rel) for rel in names.values()], cache / "sts_paper",
                         "STS paper labels and split")
    return dict(zip(names, paths))


def patchseq_manifest() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The patch-seq metadata and NWB file manifest (with SHA-256) that ipfx ships (2020-06-26 release)."""
    import ipfx  # the manifest files ship inside the ipfx package

    base = Path(ipfx.__file__).parent / "data_release"
    meta = pd.read_csv(base / "20200625_patchseq_metadata_mouse.csv")
    manifest = pd.read_csv(base / "2020-06-26_mouse_file_manifest.csv")
    manifest = manifest[(manifest.technique == "intracellular_electrophysiology") & (manifest.file_type == "nwb")]
    manifest = manifest.dropna(subset=["cell_specimen_id"]).copy()
    manifest["cell_specimen_id"] = manifest["cell_specimen_id"].astype("int64")
    return meta, manifest


def patchseq_remote_files(manifest: pd.DataFrame) -> dict[int, RemoteFile]:
    """``specimen_id -> RemoteFile`` of the patch-seq NWB files (DANDI paths, manifest hashes)."""
    out = {}
    for r in manifest.itertuples():
        subject = r.file_name.split("_")[0]
        rel = f"{subject}/{r.file_name}"
        out[int(r.cell_specimen_id)] = RemoteFile(relpath=rel, url=SOURCES["dandi_000020"].url + rel,
                                                  sha256=r.sha256_checksum, dandi_path=rel)
    return out


CELLTYPES_QUERY = (f"{ALLEN_API}/api/v2/data/query.json?criteria=model::ApiCellTypesSpecimenDetail,"
                   "rma::criteria,[donor__species$eq'Mus musculus'],rma::options[num_rows$eqall]")


def celltypes_nwb_query(specimen_id: int) -> str:
    """Allen API query that returns the well-known NWB file of a specimen's ephys result."""
    return (f"{ALLEN_API}/api/v2/data/query.json?criteria=model::Specimen,rma::criteria,[id$eq{specimen_id}],"
            "ephys_result(well_known_files(well_known_file_type[name$eqNWBDownload]))")


def celltypes_nwb_relpath(specimen_id: int) -> str:
    return f"specimen_{specimen_id}/ephys.nwb"


def ensure_celltypes_nwb(specimen_id: int, cache: Path) -> Path:
    """Resolve the NWB download link of a specimen through the Allen API, then fetch and record it."""
    rel = celltypes_nwb_relpath(specimen_id)
    if (cache / rel).is_file():
        return ensure_files([RemoteFile(rel, celltypes_nwb_query(specimen_id))], cache, f"Cell Types DB NWB of {specimen_id}")[0]
    query = ensure_files([RemoteFile(f"queries/specimen_{specimen_id}.json", celltypes_nwb_query(specimen_id))], cache,
                         f"Allen API query for {specimen_id}")[0]
    link = json.loads(query.read_text())["msg"][0]["ephys_result"]["well_known_files"][0]["download_link"]
    return ensure_files([RemoteFile(rel, ALLEN_API + link)], cache, f"Cell Types DB NWB of {specimen_id}")[0]


# ---------------------------------------------------------------------------------- folder datasets

#: the keys a folder dataset's registration (``data/<name>/dataset.yaml``) may have
FOLDER_DATASET_KEYS = ("recordings", "labels", "cells", "description")


@dataclass(frozen=True)
class FolderDataset:
    """A dataset of the user's own recordings, registered by ``<data_dir>/<name>/dataset.yaml``.

    Attributes
    ----------
    registration
        The ``dataset.yaml`` file.
    recordings
        The folder of recordings (``.abf``, ``.nwb``, folders of ``.ibw`` waves); the acquisition stage reads it
        through ``<name>/raw/`` (the folder itself, or a link to it).
    labels
        CSV of cell -> class: ``label`` and ``file`` (a recording's path relative to ``recordings``) or
        ``specimen_id``.
    cells
        Optional CSV mapping recordings to ids (``file``, ``specimen_id``); None: one cell per recording,
        ids from ``specimen_id`` in the label file, a ``sub-<id>`` name, else 1, 2, ... in file order.
    description
        Free text, shown on page 01.
    """

    registration: Path
    recordings: Path
    labels: Path
    cells: Path | None
    description: str


def read_folder_dataset(registration: str | os.PathLike) -> FolderDataset:
    """A folder dataset's registration; relative paths are relative to its folder.

    Raises
    ------
    DataNotAvailableError
        Not YAML, an unknown key, or a recordings folder or label file that does not exist (one line naming
        the registration and the fix).
    """
    path = Path(registration)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataNotAvailableError(f"{path}: cannot be read as YAML ({type(exc).__name__}); write it as "
                                    "'recordings: <folder>' and 'labels: labels.csv' lines") from exc
    if not isinstance(spec, dict):
        raise DataNotAvailableError(f"{path}: expected 'key: value' lines ({', '.join(FOLDER_DATASET_KEYS)})")
    unknown = sorted(set(spec) - set(FOLDER_DATASET_KEYS))
    if unknown:
        raise DataNotAvailableError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; a folder dataset has "
                                    f"{', '.join(FOLDER_DATASET_KEYS)}")

    def resolve(key: str, default: str | None) -> Path | None:
        value = spec.get(key, default)
        if value in (None, ""):
            return None
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else path.parent / p

    recordings, labels, cells = resolve("recordings", "raw"), resolve("labels", "labels.csv"), resolve("cells", None)
    if not recordings.is_dir():
        raise DataNotAvailableError(f"{path}: recordings folder {recordings} does not exist; set 'recordings:' to the "
                                    "folder of your .abf/.nwb files and folders of .ibw waves")
    for key, p in (("labels", labels), ("cells", cells)):
        if p is not None and not p.is_file():
            raise DataNotAvailableError(f"{path}: {key} file {p} does not exist; set '{key}:' to it "
                                        "(relative to this file's folder)")
    return FolderDataset(path, recordings, labels, cells, str(spec.get("description", "") or ""))
