"""The Colab path as a student meets it, simulated on this machine.

- A fresh virtual environment where torch is preinstalled and avlib absent (as on Colab), a stub ``google.colab``
  module, and a chapter's first cells: the install cell installs the avlib version the notebook was written for
  (here from a wheel of this checkout, through ``AVLIB_INSTALL``), leaves torch alone, and the parameters cell picks
  the ``quick`` scale on a CPU. Run again, it installs nothing.
- Every chapter's install cell is the one ``book/_ext/colab_cells.py`` writes from ``_config.yml`` and the package
  version (a pinned version, one setting for forks).
- Re-running a chapter with its run directory present loads the finished run instead of training: much faster, and
  the same numbers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import colab_cells  # noqa: E402

CHAPTER = ROOT / "book" / "01_logsumexp_softmin.ipynb"


def _first_cells(nb_path: Path) -> str:
    """The code of the notebook's install and parameters cells."""
    nb = nbformat.read(nb_path, as_version=4)
    tagged = {tag: c.source for c in nb.cells if c.cell_type == "code" for tag in c.metadata.get("tags", [])}
    return tagged["colab-install"] + "\n" + tagged["parameters"] + "\n"


def test_every_chapter_installs_the_pinned_release_from_the_one_setting() -> None:
    assert colab_cells.sync(check=True) == [], "run `make sync`: an install cell differs from _config.yml / pyproject"
    version = colab_cells.package_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version)
    source = colab_cells.install_source()
    assert f"@v{version}" in source and f'AVLIB_VERSION = "{version}"' in source
    for nb_path in sorted((ROOT / "book").glob("*.ipynb")):
        assert colab_cells.install_source() in _first_cells(nb_path), f"{nb_path.name}: stale install cell"


@pytest.fixture(scope="module")
def colab_like(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fresh venv that sees this machine's torch (as Colab's preinstalled one) but not avlib; a wheel of avlib."""
    tmp = tmp_path_factory.mktemp("colab")
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, timeout=600, cwd=tmp)
    venv = tmp / "venv"
    subprocess.run([sys.base_prefix + "/bin/python3", "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    preinstalled = tmp / "preinstalled"  # this machine's packages (torch & co) as Colab's, without avlib
    preinstalled.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("avlib", "__editable__")):
            (preinstalled / entry.name).symlink_to(entry)
    (site / "colab_preinstalled.pth").write_text(f"{preinstalled}\n")
    stub = tmp / "stub" / "google" / "colab"
    stub.mkdir(parents=True)
    (stub.parent / "__init__.py").write_text("")
    (stub / "__init__.py").write_text('"""A stand-in for Colab\'s module: its presence is what the cells test."""\n')
    return {"tmp": tmp, "python": python, "site": site, "stub": tmp / "stub",
            "wheel": next(wheels.glob("avlib-*.whl"))}


def _run_cells(env: dict[str, Path], install: str) -> dict:
    script = (
        "import google.colab\n" + _first_cells(CHAPTER) +
        "import json, importlib.metadata, torch, avlib\n"
        "scale = avlib.choose_scale(SCALE)\n"
        "print(json.dumps({'version': importlib.metadata.version('avlib'), 'avlib': avlib.__file__,"
        " 'torch': torch.__file__, 'scale': scale}))\n"
    )
    run_env = {k: v for k, v in os.environ.items() if k not in ("AVLIB_SCALE", "PYTHONPATH", "VIRTUAL_ENV")}
    run_env.update(PYTHONPATH=str(env["stub"]), AVLIB_INSTALL=install, PIP_NO_INPUT="1")
    proc = subprocess.run([str(env["python"]), "-c", script], cwd=env["tmp"], env=run_env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_colab_install_cell_installs_the_matching_avlib_and_keeps_torch(colab_like: dict[str, Path]) -> None:
    python, site = colab_like["python"], colab_like["site"]
    before = subprocess.run([str(python), "-c", "import avlib"], cwd=colab_like["tmp"], capture_output=True)
    assert before.returncode != 0, "the simulated Colab must start without avlib"
    torch_before = subprocess.run([str(python), "-c", "import torch; print(torch.__file__)"], capture_output=True,
                                  text=True, check=True).stdout.strip()
    got = _run_cells(colab_like, str(colab_like["wheel"]))
    assert got["version"] == colab_cells.package_version()
    assert Path(got["avlib"]).is_relative_to(site), "avlib should be installed into the Colab environment"
    assert got["torch"] == torch_before and not (site / "torch").exists(), "the install cell reinstalled torch"
    assert Path(got["torch"]).resolve().is_relative_to(Path(sysconfig.get_paths()["purelib"]).resolve())
    assert got["scale"] == "quick", "no CUDA GPU here: SCALE = 'auto' must pick quick"
    again = _run_cells(colab_like, str(colab_like["tmp"] / "no-such-wheel.whl"))  # would fail if pip ran again
    assert again["version"] == got["version"]


def _execute(nb_path: Path, runs: Path) -> tuple[float, list[str]]:
    from nbclient import NotebookClient

    nb = nbformat.read(nb_path, as_version=4)
    env = {"AVLIB_RUNS": str(runs), "AVLIB_SCALE": "quick"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "book")}}
                       ).execute()
        seconds = time.perf_counter() - t0
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                texts.append(out["text"])
    return seconds, texts


def _numbers(texts: list[str]) -> list[str]:
    """The printed lines, without the ones that report time or where the run came from, and without blank lines
    (how a print's leading newline splits depends on how the kernel chunked the stream around it)."""
    skip = re.compile(r"steps in \d+ s|loaded, not retrained| s on |seconds|it/s|measured on")
    return [line for text in texts for line in text.splitlines() if line.strip() and not skip.search(line)]


def test_rerunning_a_chapter_loads_its_finished_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first_s, first = _execute(CHAPTER, runs)
    assert any(runs.rglob("step_*.pt")), "the chapter's training cell should keep its run in AVLIB_RUNS"
    second_s, second = _execute(CHAPTER, runs)
    assert any("loaded, not retrained" in t for t in second), "the second run should say it loaded the run"
    assert _numbers(second) == _numbers(first), "a loaded run must give the same numbers as the trained one"
    assert second_s < 0.7 * first_s, f"re-running took {second_s:.0f} s against {first_s:.0f} s the first time"
