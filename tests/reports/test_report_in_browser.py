"""The HTML report as a browser shows it: headless Chromium renders it offline, plots included."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import toy_plugin
from matplotlib import image as mpimg

import moesim
from moesim.reports import render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_chromium_renders_the_plots(tmp_path):
    trace = toy_plugin.zipf_trace(seed=9, passes=12)
    results = moesim.replay(trace, policy=["lru", "toy-fifo"], capacity=["10%", "40%", "80%"], tables=True)
    report = render.write_report(results, tmp_path / "r.html")
    assert report.figures
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2600",
           f"--screenshot={shot}", (tmp_path / "r.html").as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "Chromium wrote no screenshot"
    pixels = mpimg.imread(io.BytesIO(shot.read_bytes()), format="png")[..., :3]
    # plots put colour on the page: a page of text and tables alone is black on white
    colourful = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.25
    assert colourful.mean() > 0.005, "no coloured plot pixels on the rendered page"
    assert np.asarray(pixels).std() > 0.05
