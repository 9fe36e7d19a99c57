"""A page of pages/ run on its own, for AppTest: through the router (app.py + switch_page) a
widget's rerun under AppTest opened the default page again and the click was lost (Streamlit
1.67), so page tests that click run the page file inside `routed()` directly. The page is named
by NETLAB_TEST_PAGE (a file name in pages/)."""
import os
import runpy
from pathlib import Path

from ui.page import routed

with routed():
    runpy.run_path(str(Path(__file__).resolve().parent.parent / "pages" /
                       os.environ["NETLAB_TEST_PAGE"]))
