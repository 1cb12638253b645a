"""Resolution: built-in names, local folders, Hub ids through the cache, offline errors, sha256 pins."""

import pytest
import torch

import zoo
from pipelines import ARTokenPipeline
from tests.conftest import populate_hub_cache
from weights_registry import CATALOGUE, Entry, register
from zoo.hub import ModelNotFoundError, resolve, sha256_of


@pytest.fixture
def hub_cache(tmp_path, saved_pipeline):
    _, folder = saved_pipeline
    populate_hub_cache(tmp_path / "cache", "zoo-org/tiny-zoo", folder)
    return tmp_path / "cache"


def test_hub_id_loads_from_a_populated_cache_offline(offline, hub_cache, saved_pipeline):
    pipe, _ = saved_pipeline
    expected = pipe(class_labels=[4], generator=torch.Generator().manual_seed(0)).tokens
    for loaded in (ARTokenPipeline.from_pretrained("zoo-org/tiny-zoo", cache_dir=hub_cache),
                   zoo.load("zoo-org/tiny-zoo", cache_dir=hub_cache)):
        loaded.set_progress_bar_config(disable=True)
        assert torch.equal(loaded(class_labels=[4], generator=torch.Generator().manual_seed(0)).tokens, expected)


def test_offline_missing_repo_names_files_and_the_fix(offline, tmp_path):
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE") as err:
        ARTokenPipeline.from_pretrained("zoo-org/missing", cache_dir=tmp_path)
    assert "huggingface-cli download zoo-org/missing" in str(err.value)


def test_pinned_entry_checks_sha256(offline, hub_cache, saved_pipeline, monkeypatch):
    _, folder = saved_pipeline
    good = sha256_of(folder / "model_index.json")
    monkeypatch.setitem(CATALOGUE, "tiny-pinned", Entry("tiny-pinned", "hub", "test", repo_id="zoo-org/tiny-zoo",
                                                        revision="main", files={"model_index.json": good}))
    assert (resolve("tiny-pinned", cache_dir=hub_cache) / "model_index.json").is_file()
    monkeypatch.setitem(CATALOGUE, "tiny-pinned", Entry("tiny-pinned", "hub", "test", repo_id="zoo-org/tiny-zoo",
                                                        revision="main", files={"model_index.json": "0" * 64}))
    with pytest.raises(ValueError, match="sha256 mismatch for model_index.json"):
        resolve("tiny-pinned", cache_dir=hub_cache)


def test_builtin_names_resolve_to_their_folder(saved_pipeline, monkeypatch, tmp_path):
    _, folder = saved_pipeline
    monkeypatch.setattr("weights_registry.catalogue.BUILTIN_DIR", folder.parent)
    monkeypatch.setitem(CATALOGUE, "tiny-builtin", Entry("tiny-builtin", "builtin", "test", folder=folder.name))
    assert resolve("tiny-builtin") == folder
    assert type(zoo.load("tiny-builtin")) is ARTokenPipeline
    monkeypatch.setitem(CATALOGUE, "gone", Entry("gone", "builtin", "test", folder="nope"))
    with pytest.raises(ModelNotFoundError, match="reinstall zoo"):
        resolve("gone")


def test_unknown_names_and_original_checkpoints_are_explained():
    with pytest.raises(ModelNotFoundError, match="not a built-in model"):
        resolve("no such model")
    with pytest.raises(ValueError, match="zoo convert llamagen-gpt-b-256"):
        resolve("llamagen-gpt-b-256")
    with pytest.raises(ValueError, match="unknown entry kind"):
        register(Entry("x", "zip", "bad"))
