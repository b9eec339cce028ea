"""report.html in a real headless Chromium: it loads without console errors, every figure
decodes to a non-empty image, and the token browser renders tokens for every method and
switches colouring. Skipped when Chromium is not installed (Debian: `apt-get install
chromium`).

A probe copy of the page gets two extra scripts: one first in <head> that records errors
and console.error calls, one at the end that, on load, exercises the browser and writes
what it saw into a <pre id="probe"> read back with --dump-dom.
"""

import html
import json
import re
import shutil
import subprocess

import pytest

from dasd.analysis import AnalyzeConfig, analyze
from tests.analysis.test_analyze import make_run

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

RECORD_ERRORS = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
(function () {
  var original = console.error;
  console.error = function () {
    window.__errors.push(Array.prototype.join.call(arguments, " "));
    original.apply(console, arguments);
  };
}());
</script>"""

EXERCISE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {id: img.id, width: img.naturalWidth, height: img.naturalHeight};
  });
  var method = document.getElementById("tb-method"), tokens = [];
  for (var k = 0; k < method.options.length; k++) {
    method.selectedIndex = k;
    method.dispatchEvent(new Event("change"));
    tokens.push(document.querySelectorAll("#tb-tokens .tok").length);
  }
  var example = document.getElementById("tb-example");
  example.selectedIndex = example.options.length - 1;
  example.dispatchEvent(new Event("change"));
  document.querySelector("input[name=tb-color][value=p_base]").click();
  var first = document.querySelector("#tb-tokens .tok");
  var probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    images: images, errors: window.__errors, tokens: tokens,
    view: document.getElementById("tb-view").className,
    title: first ? first.title : null,
    background: first ? getComputedStyle(first).backgroundColor : null,
    reference: document.getElementById("tb-reference").textContent});
  document.body.appendChild(probe);
});
</script>"""


def run_chromium(page, profile):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
               "--dump-dom", page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def test_report_loads_in_chromium_with_figures_and_token_browser(tmp_path):
    root = make_run(tmp_path)
    result = analyze(AnalyzeConfig(path=str(root), tokenizer="none"))
    page = (root / "analysis" / "report.html").read_text()
    probe_page = root / "analysis" / "probe.html"
    probe_page.write_text(page.replace("<head>", "<head>" + RECORD_ERRORS, 1)
                          .replace("</body>", EXERCISE + "</body>", 1))

    done = run_chromium(probe_page, tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page did not finish loading: {done.stderr[-2000:]}"
    seen = json.loads(html.unescape(found.group(1)))

    assert seen["errors"] == []
    console_errors = [line for line in done.stderr.splitlines()
                      if "Uncaught" in line or ("CONSOLE" in line and "error" in line.lower())]
    assert console_errors == []
    assert len(seen["images"]) == len(result["figures"])
    assert {f.rsplit("/", 1)[-1] for f in result["figures"]} >= {
        "high_ppl.png", "segment_ppl.png", "alignment.png", "categories.png",
        "frontier.png", "departures.png", "accuracy.png", "training_loss.png"}
    assert all(img["width"] > 100 and img["height"] > 100 for img in seen["images"])
    assert seen["tokens"] == [2, 4, 4]  # base, sd, dasd: tokens of their first example
    assert seen["view"] == "by-p_base"
    assert seen["title"].startswith("p_base ") and "ref rank" in seen["title"]
    assert seen["background"] not in ("rgba(0, 0, 0, 0)", "transparent")
    assert seen["reference"] == "ref solution"
