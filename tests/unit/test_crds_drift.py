"""`crds/` must be exactly what the models generate (run `make crds` after a model change)."""

from pathlib import Path

import pytest
from kitaru.core import crdgen

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
CHART = REPO / "charts" / "kitaru-operator"
# The chart installs the CRDs from crds/ and templates the policies from files/.
CHART_COPIES = [CHART / "crds" / kind.filename for kind in crdgen.KINDS] + [
    CHART / "files" / "admission.yaml"
]


def test_committed_crds_match_the_models() -> None:
    diffs = crdgen.drift(CRDS)
    assert not diffs, "crds/ drifted from kitaru.core.models; run `make crds`\n" + "".join(diffs)


@pytest.mark.parametrize("copy", CHART_COPIES, ids=lambda p: str(p.relative_to(REPO)))
def test_chart_copies_match_the_models(copy: Path) -> None:
    generated = crdgen.render()[copy.name if copy.parent.name == "crds" else crdgen.ADMISSION_FILE]
    assert copy.exists() and copy.read_text() == generated, f"{copy} drifted: run `make crds`"


def test_no_stray_files_in_crds() -> None:
    assert {p.name for p in CRDS.glob("*.yaml")} == set(crdgen.render())


def test_no_stray_files_in_the_charts_crds() -> None:
    # The admission policies are templates (release-owned), never in the chart's crds/.
    copied = {p.name for p in (CHART / "crds").glob("*.yaml")}
    assert copied == {kind.filename for kind in crdgen.KINDS}, "run `make crds`"


def test_check_flag_exits_1_on_drift(tmp_path: Path, capsys) -> None:
    crdgen.write(tmp_path)
    assert crdgen.main(["--check", str(tmp_path)]) == 0
    route = tmp_path / crdgen.ROUTE.filename
    route.write_text(route.read_text().replace("froute", "fr"))
    assert crdgen.main(["--check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "make crds" in captured.err
    assert "-    - fr\n" in captured.out


def test_writes_every_outdir(tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b" / "crds"]
    assert crdgen.main([str(d) for d in dirs]) == 0
    for d in dirs:
        assert not crdgen.drift(d)
