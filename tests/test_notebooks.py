"""The example notebooks run top to bottom in their light mode, and their outputs render."""

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
# what each notebook must show: images as PNG, audio players and HTML, not only text
MUST_SHOW = {"01_image_ar_ctf_dd.ipynb": {"image/png"}, "02_token_shuffle.ipynb": {"image/png"},
             "03_flextok_karl.ipynb": {"image/png"}, "04_vat_3d.ipynb": {"image/png"},
             "05_speech_codec_tts.ipynb": {"text/html"}}
# Two kernels at a time, one torch thread each: a kernel spends most of its time importing and in the small
# ops of AR decoding, which a second thread does not speed up, so two at once take half the time of one by one.
KERNELS_AT_ONCE = 2


def test_every_notebook_is_checked():
    assert {p.name for p in NOTEBOOKS} == set(MUST_SHOW)


def _execute(path: Path, workdir: Path):
    """The notebook run in a fresh kernel in `workdir`, in light mode; returns the executed notebook."""
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name} is committed with outputs; clear them (Kernel > Restart & Clear Output)"
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute(env={**os.environ, "ZOO_NOTEBOOK_LIGHT": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"})
    return notebook


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every notebook, started KERNELS_AT_ONCE at a time when the first test asks: name -> Future."""
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    with ThreadPoolExecutor(KERNELS_AT_ONCE) as pool:
        futures = {}
        for path in NOTEBOOKS:
            if "speech" in path.name and shutil.which("espeak-ng") is None:
                continue  # its test skips
            futures[path.name] = pool.submit(_execute, path, tmp_path_factory.mktemp(path.stem))
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_renders(path, executed):
    if path.name not in executed:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    notebook = executed[path.name].result()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    shown = {mime for o in outputs if o.output_type in ("display_data", "execute_result") for mime in o.data}
    assert MUST_SHOW[path.name] <= shown, f"{path.name} showed {sorted(shown)}"
