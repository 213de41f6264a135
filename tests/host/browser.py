"""Pages in a real browser: headless Chromium (Debian's chromium package) renders a page, and
a script injected before </body> measures, after layout, every SVG label that sticks out of its
chart and every figure caption that overflows.  Used by report.html's tests
(tests/host/test_reports.py) and compare.html's (tests/regress/test_regress_host.py)."""
import json
import re
import shutil
import subprocess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Injected before </body>: after layout, list every SVG label that sticks out of its chart and
# every caption that overflows, on <body data-clipped=...>.
MEASURE = """<script>
window.addEventListener('load', () => {
  const out = [];
  for (const svg of document.querySelectorAll('svg')) {
    const s = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll('text')) {
      const r = t.getBoundingClientRect();
      if (r.left < s.left - 0.5 || r.right > s.right + 0.5 || r.top < s.top - 0.5 || r.bottom > s.bottom + 0.5)
        out.push(t.textContent);
    }
  }
  for (const c of document.querySelectorAll('figcaption'))
    if (c.scrollWidth > c.clientWidth + 1) out.push('caption: ' + c.textContent);
  document.body.setAttribute('data-clipped', JSON.stringify(out));
});
</script>"""


def render(html_path, tmp_path, name="page"):
    """The DOM after layout (with MEASURE's verdict) and a screenshot, from headless Chromium."""
    assert CHROMIUM, "chromium is not installed (make deps installs Debian's chromium package)"
    page = tmp_path / f"{name}.html"
    page.write_text(open(html_path).read().replace("</body>", MEASURE + "</body>"))
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / (name + '-profile')}", "--window-size=1280,1600",
              "--virtual-time-budget=5000"]
    dom = subprocess.run(common + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=300)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp_path / f"{name}.png"
    p = subprocess.run(common + [f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    return dom.stdout, shot


def png_size(path):
    data = open(path, "rb").read(24)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def clipped(dom):
    m = re.search(r'data-clipped="([^"]*)"', dom)
    assert m, "the measuring script did not run"
    import html as h
    return json.loads(h.unescape(m.group(1)))
