"""``benchmarks/elastic_plot.py`` writes a well-formed SVG with the backlog and both actor
lines, whatever the run's numbers (pure: no services)."""

from __future__ import annotations

import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parents[3] / "benchmarks"


def _plot() -> object:
    spec = importlib.util.spec_from_file_location("elastic_plot", BENCH / "elastic_plot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["elastic_plot"] = module
    spec.loader.exec_module(module)
    return module


plot = _plot()
points = st.lists(
    st.builds(
        plot.Point,  # type: ignore[attr-defined]
        st.floats(0, 600),
        st.integers(0, 10**7),
        st.integers(0, 64),
        st.integers(0, 64),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=30)
@given(points)
def test_any_run_plots_as_well_formed_svg(tmp_path_factory: object, run: list[object]) -> None:
    path = Path(tmp_path_factory.mktemp("plot")) / "p.svg"  # type: ignore[attr-defined]
    run = sorted(run, key=lambda p: p.t)  # type: ignore[attr-defined]
    plot.svg(run, "a <run> & its title", {"load starts": 0.0}, path)  # type: ignore[attr-defined]
    root = ET.parse(path).getroot()
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 3  # backlog, desired, running
