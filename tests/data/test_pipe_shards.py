"""Issue 24: a ``pipe:`` shard runs a shell command, so data files never get to name one.

A ``pipe:`` line in a ``shards.txt`` (a list file, or a folder's) is refused whatever the config says; a ``pipe:``
written in the config's own ``shards`` value is read only with ``data.<section>.allow_pipe: true``. Each refusal
is one line naming the shard, the shell command and the switch, raised before anything runs.
"""

import shlex

import pytest

from mmvicreg.data.build import build_source, format_options
from mmvicreg.data.sources.shard_list import expand_shards
from mmvicreg.data.sources.shard_writer import write_shards
from mmvicreg.data.sources.shards import read_shard


@pytest.fixture(scope="module")
def real_tar(tmp_path_factory):
    source = build_source({"format": "shapes", "split": "train", "num_images": 6, "size": 16})
    out = tmp_path_factory.mktemp("pipe") / "shards"
    return write_shards(source, out, samples_per_shard=100)[0]


def _build_and_read(section, split="train"):
    """Build the source and read its captions (the GRU vocabulary pass), as a training run would."""
    source = build_source(section, split)
    return list(source.iter_captions()) if hasattr(source, "iter_captions") else source


def _listed(tmp_path, real_tar, marker, in_folder):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "shards.txt").write_text(f"pipe:touch {shlex.quote(str(marker))}; cat {shlex.quote(str(real_tar))}\n")
    return str(folder if in_folder else folder / "shards.txt")


@pytest.mark.parametrize("in_folder", [False, True], ids=["txt-list", "folder"])
@pytest.mark.parametrize("allow_pipe", [False, True])
def test_a_pipe_line_in_a_shard_list_is_refused_and_never_run(tmp_path, real_tar, in_folder, allow_pipe):
    marker = tmp_path / "MARKER"
    shards = _listed(tmp_path, real_tar, marker, in_folder)
    section = {"format": "webdataset", "shards": shards, **({"allow_pipe": True} if allow_pipe else {})}
    with pytest.raises(ValueError) as err:
        _build_and_read(section)
    message = str(err.value)
    assert not marker.exists()
    assert "\n" not in message and "pipe:touch" in message and "shards.txt" in message
    assert "would run a shell command" in message and "data.train.allow_pipe: true" in message
    with pytest.raises(ValueError, match="would run a shell command"):  # the eval split (indexed) refuses too
        _build_and_read({**section, "streaming": False}, "test")
    assert not marker.exists()


def test_a_pipe_in_the_config_needs_the_switch(tmp_path, real_tar):
    marker = tmp_path / "MARKER"
    command = f"pipe:touch {shlex.quote(str(marker))}; cat {shlex.quote(str(real_tar))}"
    with pytest.raises(ValueError) as err:
        _build_and_read({"format": "webdataset", "shards": command})
    message = str(err.value)
    assert not marker.exists() and "\n" not in message
    assert message.startswith(f"shard {command!r} would run a shell command")
    assert "data.train.allow_pipe: true" in message
    with pytest.raises(ValueError, match=r"data\.train\.allow_pipe must be true or false"):
        build_source({"format": "webdataset", "shards": command, "allow_pipe": "yes"})
    assert not marker.exists()


def test_with_the_switch_a_pipe_in_the_config_is_read(real_tar):
    assert "allow_pipe" in format_options("webdataset")  # a config may name the key
    local = [raw["txt"].decode() for raw in read_shard(str(real_tar))]
    for shards in (f"pipe:cat {real_tar}", [f"pipe:cat {real_tar}"]):
        captions = _build_and_read({"format": "webdataset", "shards": shards, "allow_pipe": True})
        assert captions == local and len(captions) > 0


def test_expand_shards_is_safe_by_default(real_tar):
    with pytest.raises(ValueError, match=r"would run a shell command; if you mean it, set allow_pipe=True"):
        expand_shards(f"pipe:cat {real_tar}")
    with pytest.raises(ValueError, match="would run a shell command"):
        expand_shards(f"PIPE:cat {real_tar}")  # webdataset's gopen takes the scheme in any case
    assert expand_shards(f"pipe:cat {real_tar}", allow_pipe=True) == [f"pipe:cat {real_tar}"]
    assert expand_shards(str(real_tar.parent)) == [str(real_tar)]  # local lists are unaffected
