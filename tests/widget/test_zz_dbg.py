import sys, pathlib
sys.path.insert(0, "/work/main/tests/widget"); sys.path.insert(0, "/work/main/tests")
from test_browser import *
def test_dbg(tmp_path):
    from playwright.sync_api import sync_playwright
    with jupyter_lab(tmp_path) as (base, runtime), sync_playwright() as p, chromium(p, tmp_path) as page:
        page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?reset&token={TOKEN}")
        root = run_to_widget(page)
        root.locator(".cb-cell").first.locator(".cb-open").click()
        page.wait_for_timeout(1000)
        print(page.evaluate("""() => { const h = document.querySelector('.cb-overlay-host'); const cs = getComputedStyle(h);
          return [h.parentElement.tagName, cs.backgroundColor, cs.position, JSON.stringify(h.getBoundingClientRect()), cs.zIndex,
           [...document.querySelectorAll('style')].filter(s => s.textContent.includes('cb-overlay-host')).map(s => s.textContent.slice(0,80))]; }"""))
        page.screenshot(path="/tmp/dbg.png")
