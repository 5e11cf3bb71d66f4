"""An install that fits: what only a demo or a plot needs is an extra whose absence is one line naming
``pip install 'mmvicreg[<extra>]'``; CSV captions are read without pandas, as pandas read them."""

import json
import sys
import tomllib

import pytest
from PIL import Image

from mmvicreg.cli import main
from mmvicreg.data import build_source, csv_captions
from mmvicreg.train.rundir import METRICS, PLOTS, plot_metrics, pyplot
from tests.helpers import REPO_ROOT


def _block(monkeypatch, *modules: str) -> None:
    """Make ``modules`` (and every submodule already imported) unimportable, as if they were not installed."""
    for name in list(sys.modules):
        if name.partition(".")[0] in modules:
            monkeypatch.setitem(sys.modules, name, None)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_digits_without_scikit_learn_is_one_line_naming_the_extra(monkeypatch):
    _block(monkeypatch, "sklearn")
    with pytest.raises(ImportError) as info:
        build_source({"format": "digits", "split": "test"})
    message = str(info.value)
    assert message == "the digits demo data comes from scikit-learn, which is not installed: " \
                      "pip install 'mmvicreg[digits]'"
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback to read past


def test_cli_prints_the_missing_extra_as_one_line(monkeypatch, tmp_path, capsys):
    _block(monkeypatch, "sklearn")
    rc = main(["shards", "--format", "digits", "--out", str(tmp_path / "shards")])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mmvicreg") and lines[0].endswith(
        ": error: the digits demo data comes from scikit-learn, which is not installed: pip install 'mmvicreg[digits]'")


def test_plots_without_matplotlib(monkeypatch, tmp_path, capsys):
    """A plot asked for is one ImportError line; a run's plots (a by-product) are left out with one note."""
    _block(monkeypatch, "matplotlib")
    with pytest.raises(ImportError, match=r"^plotting needs matplotlib, which is not installed: "
                                          r"pip install 'mmvicreg\[plot\]'$"):
        pyplot()
    (tmp_path / METRICS).write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    plot_metrics(tmp_path)  # does not raise: the run goes on without its plots
    assert not (tmp_path / PLOTS).exists()
    assert capsys.readouterr().err == f"mmvicreg: the plots {tmp_path / PLOTS} left out (plotting needs matplotlib, " \
                                      "which is not installed: pip install 'mmvicreg[plot]')\n"


def test_plots_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / METRICS).write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2)))
    plot_metrics(tmp_path)
    assert (tmp_path / PLOTS / "terms.png").read_bytes()[:4] == b"\x89PNG"


def test_extras_are_declared_and_all_holds_every_one():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    for name in ("pandas", "scikit-learn", "matplotlib", "optuna", "scipy"):
        assert name not in core, f"{name} is optional, not core"
    assert extras["digits"][0].startswith("scikit-learn>=") and extras["plot"][0].startswith("matplotlib>=")
    assert extras["all"] == ["mmvicreg[sweep,digits,plot,serve,interop]"]
    assert "mmvicreg[all]" in extras["test"]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for k, name in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        Image.new("RGB", (8, 8), (80 * k, 10, 10)).save(folder / name)
    return folder


def test_csv_with_quoted_commas_reads_as_before(images):
    """Standard quoting: a comma, a doubled quote and a line break inside quotes; CRLF, a BOM, blank lines."""
    text = ('\ufeffimage,caption\r\n'
            'a.jpg,"a dog, a cat"\r\n'
            '\r\n'
            'b.jpg,"he said ""hi"""\r\n'
            'a.jpg,"two\nlines"\r\n'
            'c.jpg,  padded  \r\n')
    (images / "captions.csv").write_text(text, newline="")
    src = csv_captions(images / "captions.csv", images)
    assert src.image_ids == ["a.jpg", "b.jpg", "c.jpg"]
    assert src.captions == [["a dog, a cat", "two\nlines"], ['he said "hi"'], ["padded"]]


def test_tsv_reads_as_before(images):
    """A .tsv splits on tabs only (commas stay in the caption); quotes still group; extra columns are ignored."""
    text = ("filepath\tid\ttitle\n"
            "a.jpg\t1\ta dog, a cat\n"
            'b.jpg\t2\t"a tab\there"\n'
            "c.jpg\t3\n")  # a short row: its caption is empty, skipped under on_bad_caption="skip"
    (images / "train.tsv").write_text(text)
    src = csv_captions(images / "train.tsv", images, image_column="filepath", caption_column="title",
                       on_bad_caption="skip")
    assert src.image_ids == ["a.jpg", "b.jpg"]
    assert src.captions == [["a dog, a cat"], ["a tab\there"]]
    assert src.data_report()["skipped_captions"] == 1


@pytest.mark.parametrize("text, expected", [
    ("image,caption\na.jpg,x,extra\n", r"line 2 has 3 fields, the header 2\); pass sep=\.\.\."),
    ('image,caption\na.jpg,"never closed\n', r"a quote in the row on line 2 is never closed"),
    ("", r"the file holds no header row"),
])
def test_csv_that_cannot_be_read_is_one_line(images, text, expected):
    (images / "bad.csv").write_text(text)
    prefix = r"cannot parse .*bad\.csv as a table with separator ',' \("
    with pytest.raises(ValueError, match=prefix + expected) as info:
        csv_captions(images / "bad.csv", images)
    assert "\n" not in str(info.value) and info.value.__cause__ is None
