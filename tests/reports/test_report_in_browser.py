"""The HTML reports as a browser shows them: headless Chromium renders them offline and a script in
the page checks that every figure decoded and that nothing sticks out past the window's right edge.

.ci/run installs Chromium from the system's packages when it is absent; the test skips (saying why)
only where no Chromium binary exists. The screenshot is kept in $MOESIM_ARTIFACTS (default: the
test's temporary folder) and its path printed, so CI can publish it.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import toy_plugin
from matplotlib import image as mpimg

import moesim
from moesim.reports import render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
WIDTH = 1200
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs headless Chromium: .ci/run installs it (apt-get update && apt-get install -y "
                             "chromium); none is installed here and it could not be installed")

# Runs after the page loaded: counts decoded images and every element whose box passes the
# window's right edge (tables scroll inside their own box, so a wide table is not an overflow).
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return i.alt; });
  var vw = document.documentElement.clientWidth, over = [];
  if (document.documentElement.scrollWidth > vw + 1) { over.push('page ' + document.documentElement.scrollWidth); }
  document.querySelectorAll('body *').forEach(function (el) {
    var r = el.getBoundingClientRect(), inside = el.closest('table');
    if (!inside && r.width > 0 && r.right > vw + 1) { over.push(el.tagName + ' ' + Math.round(r.right)); }
  });
  var out = document.createElement('pre'); out.id = 'moesim-check';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken, over: over, width: vw});
  document.body.appendChild(out);
});
</script>"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-extensions", f"--user-data-dir={profile}", f"--window-size={WIDTH},1000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def page_check(page: Path, tmp_path: Path) -> dict:
    """Load `page` with the check script added; return what the script found."""
    probe = tmp_path / f"{page.stem}.probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    done = _chromium(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path / "profile")
    found = re.search(r'<pre id="moesim-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the check script did not run; chromium said: {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("MOESIM_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / name
    _chromium([f"--screenshot={shot}", "--window-size=1200,2600", page.as_uri()], tmp_path / "profile-shot")
    assert shot.is_file(), "Chromium wrote no screenshot"
    print(f"screenshot: {shot}")
    return shot


@needs_chromium
def test_chromium_loads_every_figure_and_nothing_overflows(tmp_path):
    trace = toy_plugin.zipf_trace(seed=9, passes=12)
    results = moesim.replay(trace, policy=["lru", "toy-fifo"], capacity=["10%", "40%", "80%"], tables=True)
    page = tmp_path / "r.html"
    report = render.write_report(results, page)
    assert report.figures
    found = page_check(page, tmp_path)
    assert found["images"] == len(report.figures), found
    assert found["broken"] == [], f"figures that did not load: {found['broken']}"
    assert found["over"] == [], f"elements past the right edge of a {found['width']} px window: {found['over']}"
    pixels = mpimg.imread(io.BytesIO(screenshot(page, tmp_path, "report-in-browser.png").read_bytes()),
                          format="png")[..., :3]
    # plots put colour on the page: a page of text and tables alone is black on white
    colourful = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.25
    assert colourful.mean() > 0.005, "no coloured plot pixels on the rendered page"
    assert np.asarray(pixels).std() > 0.05


@pytest.fixture
def small_advise_answer():
    """An advise answer for a toy workload on two machines (moesim/advise, no CLI)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "advise"))
    from advise_helpers import machine, workload, zipf_trace

    from moesim.advise.answer import build_answer
    from moesim.advise.search import search_machine

    trace = zipf_trace(seed=4)
    w = workload(trace)
    outcomes = [search_machine(machine(p, 0.4, trace), w, "tpot") for p in ("rtx4090", "phone-oneplus-15r")]
    return build_answer(w, outcomes, "tpot", 60.0, 1.0)


@needs_chromium
def test_chromium_renders_the_advise_report(tmp_path, small_advise_answer):
    from moesim.advise.report import write_advise_report

    written = write_advise_report(small_advise_answer, tmp_path / "advise")
    page = Path(written["html"])
    found = page_check(page, tmp_path)
    assert found["images"] == written["figures"] and found["images"] >= 1, found
    assert found["broken"] == [], f"figures that did not load: {found['broken']}"
    assert found["over"] == [], f"elements past the right edge of a {found['width']} px window: {found['over']}"
    screenshot(page, tmp_path, "advise-in-browser.png")
