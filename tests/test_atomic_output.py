import os
import stat

import pytest

from spacy_ner_plus.annotate import atomic_output
from spacy_ner_plus.annotate.atomic_output import atomic_directory, atomic_file, atomic_files_into


class Crash(Exception):
    pass


def listing(path):
    return sorted(p.name for p in path.iterdir())


def test_atomic_directory_appears_whole_and_replaces_the_old_one(tmp_path):
    out = tmp_path / "a" / "b" / "model"  # parents are created
    with atomic_directory(out) as tmp:
        (tmp / "config.cfg").write_text("new")
        assert not out.exists()  # nothing at OUTPUT until the end
    assert listing(out) == ["config.cfg"]
    with atomic_directory(out) as tmp:
        (tmp / "weights").write_text("newer")
    assert listing(out) == ["weights"]  # replaced whole: no file of the old one stays
    assert listing(out.parent) == ["model"]


def test_atomic_directory_error_keeps_the_old_one_and_no_temporary(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.cfg").write_text("old")
    with pytest.raises(Crash):
        with atomic_directory(out) as tmp:
            (tmp / "config.cfg").write_text("half")
            raise Crash()
    assert (out / "config.cfg").read_text() == "old"
    assert listing(tmp_path) == ["model"]


def test_failed_rename_in_puts_the_old_directory_back(tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.cfg").write_text("old")
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the old one is aside; now the new one cannot move in
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(atomic_output.os, "rename", rename)
    with pytest.raises(OSError):
        with atomic_directory(out) as tmp:
            (tmp / "config.cfg").write_text("new")
    assert (out / "config.cfg").read_text() == "old"
    assert listing(tmp_path) == ["model"]


def test_atomic_file_replaces_in_one_step_with_the_usual_mode(tmp_path):
    out = tmp_path / "pages" / "out.html"
    umask = os.umask(0o022)
    try:
        with atomic_file(out) as tmp:
            tmp.write_text("page")
            assert not out.exists()
    finally:
        os.umask(umask)
    assert out.read_text() == "page"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # not mkstemp's 0600
    with pytest.raises(Crash):
        with atomic_file(out) as tmp:
            tmp.write_text("pa")
            raise Crash()
    assert out.read_text() == "page"
    assert listing(out.parent) == ["out.html"]


def test_atomic_files_into_keeps_the_folders_other_files(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "notes.txt").write_text("mine")
    (report / "calibration.json").write_text("old")
    with pytest.raises(Crash):
        with atomic_files_into(report) as tmp:
            (tmp / "calibration.json").write_text("new")
            raise Crash()
    assert (report / "calibration.json").read_text() == "old"
    with atomic_files_into(report) as tmp:
        (tmp / "calibration.json").write_text("new")
        (tmp / "reliability.png").write_bytes(b"png")
    assert listing(report) == ["calibration.json", "notes.txt", "reliability.png"]
    assert (report / "calibration.json").read_text() == "new"
    assert listing(tmp_path) == ["report"]
