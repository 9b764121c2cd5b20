"""Acquisition: labels, the real teeter2018 files, the paper's labels and split, offline behaviour."""

import numpy as np
import pandas as pd
import pytest

from sts_utils.stages import acquisition
from sts_utils.data import recordings
from sts_utils.core.errors import DataNotAvailableError, TableError
from sts_utils.data.labels import (label_flags, label_from_cre_line, label_from_transcriptomic_type, read_paper_labels,
                              read_paper_split)
from sts_utils.data.recordings import find_step_epoch
from sts_utils.data.registry import RemoteFile, ensure_files


@pytest.mark.parametrize("alias,dendrite,expected", [
    ("Pvalb Reln Itm2a", "aspiny", ("Pvalb", "transcriptomic")),
    ("Sst Calb2 Pdlim5", "aspiny", ("Sst", "transcriptomic")),
    ("Lamp5 Lsp1", "aspiny", ("Vip/Lamp5", "transcriptomic")),
    ("Sncg Vip Itih5", "aspiny", ("Vip/Lamp5", "transcriptomic")),
    ("Meis2 Adamts19", "aspiny", ("Vip/Lamp5", "transcriptomic")),
    (np.nan, "spiny", ("Excitatory", "dendrite_type")),
    (np.nan, "aspiny", ("Unsure", "no type")),
    ("L2/3 IT VISp Agmat", "spiny", ("Unsure", "transcriptomic (unmapped subclass)")),
])
def test_patchseq_label_rule(alias, dendrite, expected):
    assert label_from_transcriptomic_type(alias, dendrite) == expected


def test_cre_label_rule_and_flags():
    assert label_from_cre_line("Pvalb-IRES-Cre") == ("Pvalb", "cre_line")
    assert label_from_cre_line("Chrna2-Cre_OE25") == ("Sst", "cre_line")
    assert label_from_cre_line("Ndnf-IRES2-dgCre") == ("Vip/Lamp5", "cre_line")
    assert label_from_cre_line("Rorb-IRES2-Cre-D")[0] == "Excitatory"
    assert label_from_cre_line("Htr3a-Cre_NO152")[0] == "Unsure"
    assert label_flags("Excitatory", "cre_line", "aspiny") == "cre_vs_dendrite"
    assert label_flags("Sst", "cre_line", "spiny", "cre reporter negative") == "cre_vs_dendrite;reporter_negative"
    assert label_flags("Sst", "cre_line", "aspiny", "positive") == ""
    assert label_flags("Excitatory", "dendrite_type", "spiny") == "excitatory_from_dendrite"


def test_teeter2018_from_the_shared_real_files(teeter_data_dir):
    out = acquisition.acquire("teeter2018", teeter_data_dir, seed=0, n_jobs=1)
    cells = out["cells"]
    assert len(cells) == 645
    counts = cells.label.value_counts()
    assert (counts["Excitatory"], counts["Pvalb"], counts["Sst"], counts["Vip/Lamp5"]) == (362, 53, 93, 52)
    assert (teeter_data_dir / "teeter2018" / "spike_trains.parquet").exists()
    assert (cells.qc_status == "ok").sum() == 645


def test_teeter2018_time_base_rescaling_on_shared_files(shared_data):
    """Which sweeps are stretched and by how much, checked on the real files."""
    files = sorted((shared_data / "teeter2018" / "mouse_struc_data_dir").glob("*/*_preprocessor_values.json"))
    scales = {}
    for f in files:
        sid = int(f.parent.name.split("_")[0])
        df = recordings.read_teeter_cell(f, sid)
        scales[sid] = set(df.time_scale)
        if len(df):
            t = np.concatenate(df.spike_times_s.to_list())
            # after rescaling, spikes lie in the stated epochs 10-13 s and 18-21 s
            inside = ((t >= 9.5) & (t < 13.5)) | ((t >= 17.5) & (t < 21.5))
            assert inside.mean() > 0.95, sid
    assert all(len(s) == 1 for s in scales.values()), "no cell mixes the two time bases"
    stretched = [sid for sid, s in scales.items() if 1.25 in s]
    assert 180 <= len(stretched) <= 260  # about a third of 645 cells (newer recordings)
    features = pd.read_csv(shared_data / "teeter2018" / "GLIF_clustering" / "features_7_27_17.csv")
    cre = features.set_index("specimen_ID").cre
    vip = [sid for sid in scales if cre.get(sid) in ("Vip-IRES-Cre", "Ndnf-IRES2-dgCre", "Chat-IRES-Cre-neo")]
    assert all(1.25 in scales[s] for s in vip)  # the confound described in shared/data/README.md
    synthetic = np.array([10.5, 11.0, 19.0]) * 1.25
    assert recordings.teeter_time_scale(synthetic) == 1.25
    assert recordings.teeter_time_scale(np.array([10.5, 11.0, 19.0])) == 1.0


def test_paper_labels_and_split_from_shared_files(shared_data):
    labels = read_paper_labels(shared_data / "sts_paper" / "cell_types_GouwensAll_new.txt")
    split = read_paper_split(shared_data / "sts_paper" / "Train_split.csv", shared_data / "sts_paper" / "Test_split.csv")
    assert (split.split == "train").sum() == 4472 and (split.split == "test").sum() == 1118
    assert set(split.source) == {"celltypes", "patchseq"}
    assert set(labels.label) <= {"Pvalb", "Sst", "Vip/Lamp5", "Excitatory", "Unsure"}
    merged = split.merge(labels, on="specimen_id", how="left")
    assert merged.label.notna().mean() > 0.95
    cells = merged.assign(derived_label=np.where(merged.source == "patchseq", merged.label, "missing"))
    table = acquisition.label_agreement(cells)
    assert table.loc["All", "All"] == merged.label.notna().sum()


def test_paper_labels_reject_unknown_class(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("Pvalb 1\nChandelier 2\n")
    with pytest.raises(TableError, match="labels.txt:2: unknown class 'Chandelier'"):
        read_paper_labels(p)


def test_offline_fetch_of_missing_file_gives_clear_error_and_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv("STS_OFFLINE", "1")
    entry = RemoteFile("GLIF_clustering/features_7_27_17.csv", "https://example.invalid/features_7_27_17.csv")
    with pytest.raises(DataNotAvailableError) as err:
        ensure_files([entry], tmp_path / "cache", "teeter2018 feature table")
    msg = str(err.value)
    assert "features_7_27_17.csv" in msg and str(tmp_path / "cache") in msg and "https://example.invalid" in msg
    assert not (tmp_path / "cache").exists() or not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_failed_download_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.delenv("STS_OFFLINE", raising=False)
    entry = RemoteFile("x/data.csv", "http://127.0.0.1:9/data.csv")  # nothing listens on the discard port
    with pytest.raises(DataNotAvailableError, match="download failed"):
        ensure_files([entry], tmp_path, "test file")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_cached_file_is_used_offline_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("STS_OFFLINE", "1")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("hello")
    import hashlib
    good = hashlib.sha256(b"hello").hexdigest()
    assert ensure_files([RemoteFile("a/f.txt", "http://x", sha256=good)], tmp_path, "t")[0].read_text() == "hello"
    with pytest.raises(DataNotAvailableError, match="does not match"):
        ensure_files([RemoteFile("a/f.txt", "http://x", sha256="0" * 64)], tmp_path, "t")


def test_find_step_epoch_ignores_test_pulse():
    rate = 10_000.0
    i = np.zeros(int(2 * rate))
    i[100:200] = -10  # test pulse
    i[5000:15000] = 70
    start, end, amp = find_step_epoch(i, rate)
    assert (start, end, amp) == (0.5, 1.5, 70.0)
    assert np.isnan(find_step_epoch(np.full(10, np.nan), rate)[0])


def test_stratified_subset_keeps_every_class(tmp_path):
    cells = pd.DataFrame({"specimen_id": range(100), "label": ["Excitatory"] * 85 + ["Pvalb"] * 10 + ["Sst"] * 5})
    sub = acquisition.stratified_subset(cells, 20, seed=0)
    assert len(sub) <= 20 and set(sub.label) == {"Excitatory", "Pvalb", "Sst"}
    assert sub.equals(acquisition.stratified_subset(cells, 20, seed=0))


def test_verified_files_are_not_rehashed_but_any_write_is_caught(tmp_path, monkeypatch):
    """An unchanged file is hashed once; a same-size change with its mtime restored is still caught."""
    import hashlib
    import os

    from sts_utils.data import registry

    monkeypatch.setenv("STS_OFFLINE", "1")
    (tmp_path / "f.txt").write_text("hello")
    entry = RemoteFile("f.txt", "http://x", sha256=hashlib.sha256(b"hello").hexdigest())
    calls = []
    real = registry.file_sha256
    monkeypatch.setattr(registry, "file_sha256", lambda p: calls.append(p) or real(p))
    ensure_files([entry], tmp_path, "t")
    ensure_files([entry], tmp_path, "t")
    assert len(calls) == 1  # the second run trusts the record (size, mtime, ctime, inode unchanged)
    st = (tmp_path / "f.txt").stat()
    (tmp_path / "f.txt").write_text("HELLO")  # same size ...
    os.utime(tmp_path / "f.txt", ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the old mtime put back
    with pytest.raises(DataNotAvailableError, match="does not match its pinned sha256"):
        ensure_files([entry], tmp_path, "t")
    assert len(calls) == 2


def test_a_corrupt_teeter_file_copied_into_the_cache_is_refused(tmp_path, shared_data, monkeypatch):
    """The registry ships teeter2018's hashes: one changed digit in a spike index is caught, naming the file."""
    import shutil

    monkeypatch.setenv("STS_OFFLINE", "1")
    raw = tmp_path / "teeter2018" / "raw"
    shutil.copytree(shared_data / "teeter2018", raw, ignore=shutil.ignore_patterns("LICENSE"))
    victim = sorted((raw / "mouse_struc_data_dir").glob("*/*_preprocessor_values.json"))[0]
    text = victim.read_text()
    digit = next(k for k, ch in enumerate(text) if ch.isdigit() and k > text.find("spike_ind"))
    victim.write_text(text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:])
    with pytest.raises(DataNotAvailableError) as err:
        acquisition.acquire("teeter2018", tmp_path, seed=0, n_jobs=1)
    assert victim.name in str(err.value) and "delete it to download it again" in str(err.value)
    assert not (tmp_path / "teeter2018" / "cells.csv").exists()


def test_registry_pins_every_shared_file(shared_data):
    """Every real file the project knows has its SHA-256 shipped with the package, and they match."""
    from sts_utils.core.io import file_sha256
    from sts_utils.data.registry import pinned_hashes

    teeter = pinned_hashes("teeter2018")
    files = [p for p in (shared_data / "teeter2018").rglob("*") if p.is_file() and p.name != "LICENSE"]
    assert len(teeter) == len(files) == 647
    for p in files[:20]:
        assert teeter[str(p.relative_to(shared_data / "teeter2018"))] == file_sha256(p)
    paper = pinned_hashes("sts_paper")
    for name in ("Train_split.csv", "Test_split.csv", "cell_types_GouwensAll_new.txt"):
        assert paper[f"data/{name}"] == file_sha256(shared_data / "sts_paper" / name)
