"""The example notebooks run top to bottom in their light mode, and their outputs render."""

import os
import queue
import shutil
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
# what each notebook must show: images as PNG, audio players and HTML, not only text
MUST_SHOW = {"01_image_ar_ctf_dd.ipynb": {"image/png"}, "02_token_shuffle.ipynb": {"image/png"},
             "03_flextok_karl.ipynb": {"image/png"}, "04_vat_3d.ipynb": {"image/png"},
             "05_speech_codec_tts.ipynb": {"text/html"}}
# Two kernels, one torch thread each, take the notebooks in turn: a kernel spends most of its time importing
# torch and diffusers and in the small ops of AR decoding, which a second thread hardly speeds up. A kernel
# runs its next notebook after `%reset -f` (a clean namespace; modules stay imported, which saves ~13 s).
KERNELS = 2
KERNEL_ENV = {"ZOO_NOTEBOOK_LIGHT": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def test_every_notebook_is_checked():
    assert {p.name for p in NOTEBOOKS} == set(MUST_SHOW)


def _run(notebook, km, workdir: Path):
    import nbclient

    client = nbclient.NotebookClient(notebook, km=km, timeout=600, resources={"metadata": {"path": str(workdir)}})
    return client.execute()


def _start_kernel(workdir: Path):
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env={**os.environ, **KERNEL_ENV}, cwd=str(workdir))
    return km


def _kernel(pending: queue.SimpleQueue, futures: dict, workdir: Path):
    """One kernel: runs notebooks from `pending` until none is left, each result or error into its future."""
    import nbformat

    reset = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%reset -f")])
    km = None
    try:
        while True:
            try:
                path = pending.get_nowait()
            except queue.Empty:
                return
            try:
                km = km or _start_kernel(workdir)
                futures[path.name].set_result(_run(nbformat.read(path, as_version=4), km, workdir))
            except BaseException as error:  # the test of this notebook raises it
                futures[path.name].set_exception(error)
            try:
                if km is not None:
                    _run(reset, km, workdir)
            except BaseException:  # a kernel that cannot reset is replaced for the next notebook
                km.shutdown_kernel(now=True)
                km = None
    finally:
        if km is not None:
            km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every notebook, run by KERNELS kernels taking them in turn: name -> Future of the executed notebook."""
    pytest.importorskip("nbclient")
    pending, futures = queue.SimpleQueue(), {}
    for path in NOTEBOOKS:
        if "speech" in path.name and shutil.which("espeak-ng") is None:
            continue  # its test skips
        futures[path.name] = Future()
        pending.put(path)
    kernels = [threading.Thread(target=_kernel, args=(pending, futures, tmp_path_factory.mktemp("kernel")), daemon=True)
               for _ in range(KERNELS)]
    for kernel in kernels:
        kernel.start()
    yield futures
    for kernel in kernels:
        kernel.join(timeout=60)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_renders(path, executed):
    import nbformat

    if path.name not in executed:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    committed = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in committed.cells if cell.cell_type == "code"), \
        f"{path.name} is committed with outputs; clear them (Kernel > Restart & Clear Output)"
    notebook = executed[path.name].result(timeout=900)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    shown = {mime for o in outputs if o.output_type in ("display_data", "execute_result") for mime in o.data}
    assert MUST_SHOW[path.name] <= shown, f"{path.name} showed {sorted(shown)}"
