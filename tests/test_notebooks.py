"""The notebooks execute end to end (at small sizes), so they never rot."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # each notebook trains and predicts end to end

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run notebooks/NAME at 256 px and 1 epoch in tmp_path; return it with its outputs."""
    monkeypatch.setenv("WETMAP_NB_SIZE", "256")
    monkeypatch.setenv("WETMAP_NB_EPOCHS", "1")
    monkeypatch.setenv("WETMAP_NB_WORKDIR", str(tmp_path))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def test_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("quickstart.ipynb", tmp_path, monkeypatch)
    assert (tmp_path / "wetlands.tif").exists()
    assert (tmp_path / "report" / "report.json").exists()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "maps are shown inline"


def test_loss_experiment_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("loss_experiment.ipynb", tmp_path, monkeypatch)
    for name in ("masked_Dice", "unmasked_Dice", "BCE"):
        assert (tmp_path / name / "model.pt").exists()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "split map, Dice plots and error maps are shown inline"
