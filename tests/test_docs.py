"""The documentation: the site builds without warnings, and every public name has a docstring with an example."""

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = ["zoo", "pipelines", "tokenizers_visual", "tokenizers_audio"]


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("mkdocs")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "index.html").is_file() and (tmp_path / "api" / "engine" / "index.html").is_file()


def _public_objects():
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield f"{module_name}.{name}", obj


def test_every_public_class_and_function_has_a_docstring_with_an_example():
    missing = sorted({name for name, obj in _public_objects() if ">>>" not in (inspect.getdoc(obj) or "")})
    assert not missing, f"public names whose docstring has no example (>>> ...): {missing}"


def test_readme_links_the_docs_and_shows_each_family():
    readme = (ROOT / "README.md").read_text()
    assert "docs/" in readme and "mkdocs" in readme
    for picture in ("llamagen-shapes", "ctf-shapes", "dd-shapes", "token-shuffle-shapes", "tts-speech"):
        assert f"docs/images/{picture}.png" in readme
        assert (ROOT / "docs" / "images" / f"{picture}.png").is_file()


DOCTEST_MODULES = ["zoo.nn.linear", "zoo.ar.sampling", "zoo.ar.generate", "zoo.ar.transformer", "zoo.ar.distilled", "zoo.ar.token_shuffle",
                   "zoo.ar.speech", "zoo.hub", "weights_registry.catalogue", "tokenizers_visual.vq", "tokenizers_visual.vat",
                   "tokenizers_audio.codec", "zoo.metrics.classifier", "zoo.metrics.recognizer", "pipelines.base",
                   "pipelines.ar_image", "pipelines.vat", "pipelines.speech"]


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    """The examples that need no trained model beyond the built-ins run as written (the others are marked
    `# doctest: +SKIP`)."""
    import doctest

    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"
