"""avlib writes only inside ``--out`` and its documented cache directory (``AVLIB_CACHE``): nothing in the working
directory, the home directory or the temporary directory, temporary files included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_train_and_eval_write_only_under_out_and_the_cache(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in ("cwd", "home", "tmp", "cache", "data", "run")}
    for name in ("cwd", "home", "tmp"):
        dirs[name].mkdir()
    env = {**os.environ, "HOME": str(dirs["home"]), "TMPDIR": str(dirs["tmp"]), "AVLIB_CACHE": str(dirs["cache"]),
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(dirs["home"] / ".cache"),
           "MPLCONFIGDIR": str(dirs["home"] / ".mpl")}
    cli = [sys.executable, "-m", "avlib.cli"]
    steps = [
        [*cli, "synth", str(dirs["data"]), "--method", "dmc", "--clips", "4", "--test-clips", "2"],
        [*cli, "train", "dmc", "--data", str(dirs["data"]), "--out", str(dirs["run"]), "--steps", "2",
         "--batch-size", "2", "--ckpt-every", "1"],
        [*cli, "eval", "dmc", "--ckpt", str(dirs["run"])],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, cwd=dirs["cwd"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("cwd", "home", "tmp"):
        assert _files(dirs[name]) == [], f"avlib wrote into {name}: {_files(dirs[name])}"
    assert any(dirs["run"].glob("step_*.pt")) and (dirs["run"] / "summary.json").is_file()
    assert _files(dirs["cache"]), "the preflight cache should be in AVLIB_CACHE"
