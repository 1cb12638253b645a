"""The example notebooks run top to bottom in their light mode, and their outputs render."""

import os
import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
# what each notebook must show: images as PNG, audio players and HTML, not only text
MUST_SHOW = {"01_image_ar_ctf_dd.ipynb": {"image/png"}, "02_token_shuffle.ipynb": {"image/png"},
             "03_flextok_karl.ipynb": {"image/png"}, "04_vat_3d.ipynb": {"image/png"},
             "05_speech_codec_tts.ipynb": {"text/html"}}


def test_every_notebook_is_checked():
    assert {p.name for p in NOTEBOOKS} == set(MUST_SHOW)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_renders(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if "speech" in path.name and shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    monkeypatch.setenv("ZOO_NOTEBOOK_LIGHT", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name} is committed with outputs; clear them (Kernel > Restart & Clear Output)"
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ})
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    shown = {mime for o in outputs if o.output_type in ("display_data", "execute_result") for mime in o.data}
    assert MUST_SHOW[path.name] <= shown, f"{path.name} showed {sorted(shown)}"
