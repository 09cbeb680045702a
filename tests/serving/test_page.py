"""The local web page (src/app.py): its functions give verify.py's and search.py's numbers, and the
page serves them over HTTP (driven with gradio_client, as a browser's uploads reach it)."""

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import compose_config, free_port, indexed_gallery, read_rows, run_script, write_png_header
from PIL import Image

from siamese.errors import UserError
from siamese.serving.page import NO_INDEX, FlowerApp
from siamese.use.checkpoints import load_for_use
from siamese.use.gallery import Gallery

pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def served(checkpoint, tmp_path_factory):
    """(app, gallery folder, index file, a query photo that is not in the gallery)."""
    photos, index, query = indexed_gallery(tmp_path_factory.mktemp("app"), checkpoint)
    return FlowerApp(load_for_use(checkpoint), Gallery.load(index)), photos, index, query


def test_compare_gives_verify_pys_distance_and_verdict(served, checkpoint):
    app, photos, _, _ = served
    a, b = photos / "daisy" / "0.jpg", photos / "rose" / "1.png"
    result = app.compare(a, b)
    verified = run_script("src/verify.py", f"ckpt_path={checkpoint}", f"image_a={a}", f"image_b={b}")
    distance, word = verified.stdout.split()[1], verified.stdout.split()[-1]
    assert f"{result.distance:.4f}" == distance and result.text.startswith(f"{word}: distance {distance}")
    assert "calibrated on validation" in result.text  # the rule that chose the threshold
    size = app.model.embedder.preprocessing.image_size
    assert result.seen_a.size == (size, size)  # as the model sees it


def test_search_and_name_give_search_pys_answers(served, tmp_path):
    from siamese.commands.search import search

    app, _, index, query = served
    neighbours = app.search(query, 3)
    out = tmp_path / "found.csv"
    search(compose_config("search", [f"index={index}", f"query={query}", "k=3", f"out={out}"]))
    rows = read_rows(out)
    assert [n.caption for n in neighbours] == [f"{r['label']}  {float(r['distance']):.3f}" for r in rows]
    threshold = app.model.verdict.threshold
    for n, r in zip(neighbours, rows):  # framed green when the verdict says same, red otherwise
        expected = (46, 158, 68) if float(r["distance"]) < threshold else (208, 48, 48)
        assert n.thumbnail.getpixel((1, 1)) == expected

    named = app.name(query, 3)
    search(compose_config("search", [f"index={index}", f"query={query}", "k=3", "identify=true", f"out={out}"]))
    row = read_rows(out)[0]
    if row["label"] == "unknown":
        assert named.startswith("unknown: even the nearest gallery image is")
    else:
        assert named.startswith(f"{row['label']}: {row['votes']} of 3 votes")


def test_bad_input_is_a_message(served, tmp_path, checkpoint):
    app, photos, _, _ = served
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(UserError, match=r"^notes.jpg is not an image \(or is damaged\)"):  # its name alone
        app.compare(text, photos / "rose" / "0.jpg")
    bomb = write_png_header(tmp_path / "bomb.png", 20_000, 20_000)
    with pytest.raises(UserError, match=r"^bomb.png is 20000 x 20000 pixels \(400 Mpx\), over the limit of 179 Mpx"):
        app.compare(photos / "rose" / "0.jpg", bomb)
    with pytest.raises(UserError, match="drop a photo in each"):
        app.compare(None, photos / "rose" / "0.jpg")
    bare = FlowerApp(load_for_use(checkpoint))
    with pytest.raises(UserError, match="build one with python src/index.py"):
        bare.search(photos / "rose" / "0.jpg")
    assert bare.status().endswith("; no gallery") and NO_INDEX.startswith("no gallery loaded")
    assert app.status().endswith("gallery 11 images, 3 kinds") and "threshold" in app.status()


def test_the_page_serves_the_same_answers_over_http(served, monkeypatch, capfd):
    from gradio_client import Client, handle_file

    from siamese.serving.page import build_page

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    app, photos, _, query = served
    page = build_page(app)
    port = free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                max_file_size="1mb")
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        a, b = photos / "daisy" / "0.jpg", photos / "daisy" / "1.png"
        _, _, verdict = client.predict(handle_file(str(a)), handle_file(str(b)), api_name="/compare")
        assert verdict == app.compare(a, b).text
        assert client.predict(handle_file(str(query)), 3, api_name="/name") == app.name(query, 3)
        shown = client.predict(handle_file(str(query)), 2, api_name="/search")
        assert [item["caption"] for item in shown] == [n.caption for n in app.search(query, 2)]
        notes = photos.parent / "notes.png"
        notes.write_text("not an image")
        with pytest.raises(Exception) as caught:  # the message the page shows names the file the user chose
            client.predict(handle_file(str(notes)), handle_file(str(a)), api_name="/compare")
        assert "notes.png is not an image" in str(caught.value) and "gradio" not in str(caught.value)
        shown = Image.open(client.predict(handle_file(str(a)), api_name="/preview_photo_a"))
        assert shown.size == Image.open(a).size  # the dropped photo itself, shown before Compare
        big = photos.parent / "big.png"
        big.write_bytes(b"0" * 2_000_000)
        with pytest.raises(Exception):  # over max_file_size: refused before the app sees it
            client.predict(handle_file(str(big)), handle_file(str(a)), api_name="/compare")
    finally:
        page.close()
    assert "Traceback" not in capfd.readouterr().err


def real_flower_folder(root, kinds=3, per_kind=5):
    """A folder per kind of real Flowers102 photos from ../shared (named by cat_to_name.json)."""
    from helpers import SHARED_DATA
    from scipy.io import loadmat

    base = SHARED_DATA / "flowers-102"
    labels = loadmat(base / "imagelabels.mat")["labels"][0]
    names = json.loads((base / "cat_to_name.json").read_text())
    for label in (49, 73, 88)[:kinds]:  # oxeye daisy, water lily, cyclamen
        folder = root / names[str(label)].replace(" ", "_")
        folder.mkdir(parents=True)
        for k in [i for i, v in enumerate(labels) if v == label][:per_kind]:
            shutil.copy(base / "jpg" / f"image_{k + 1:05d}.jpg", folder)
    return root


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_page_works_in_a_browser(checkpoint, tmp_path):
    """Start src/app.py, drop real flower photos into its three tabs in headless Chromium, check the
    verdict, the neighbours and the name shown, and save one screenshot of the three (app_page.png)."""
    import subprocess
    import sys
    import time
    import urllib.request

    from helpers import ROOT, SHARED_DATA
    from PIL import Image

    from siamese.commands.index import build_index

    sync_api = pytest.importorskip("playwright.sync_api")
    if not (SHARED_DATA / "flowers-102" / "cat_to_name.json").exists():
        pytest.skip("needs the real photos in ../shared")
    photos = real_flower_folder(tmp_path / "gallery")
    index = tmp_path / "gallery.pt"
    build_index(compose_config("index", [f"ckpt_path={checkpoint}", f"images={photos}", f"out={index}"]))
    app = FlowerApp(load_for_use(checkpoint), Gallery.load(index))
    daisies = sorted((photos / "oxeye_daisy").iterdir())
    query = sorted((photos / "water_lily").iterdir())[0]

    port = free_port()
    server = subprocess.Popen([sys.executable, "src/app.py", f"ckpt_path={checkpoint}", f"index={index}",
                               f"port={port}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    shots = []
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(url)
            page.get_by_text("gallery 15 images, 3 kinds").wait_for(timeout=60_000)

            page.locator("#photo_a input[type=file]").set_input_files(str(daisies[0]))
            page.locator("#photo_b input[type=file]").set_input_files(str(daisies[1]))
            for box in ("photo_a_shown", "photo_b_shown"):  # the dropped photos show before Compare
                page.locator(f"#{box} img").wait_for(timeout=60_000)
            shots.append(tmp_path / "dropped.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            notes = tmp_path / "notes.jpg"
            notes.write_text("not an image")
            page.locator("#photo_a button[aria-label='Clear']").click()
            page.locator("#photo_a input[type=file]").set_input_files(str(notes))
            page.get_by_text("notes.jpg is not an image").first.wait_for(timeout=60_000)  # named as chosen
            assert "gradio" not in page.get_by_text("notes.jpg is not an image").first.inner_text()
            page.locator("#photo_a button[aria-label='Clear']").click()
            page.locator("#photo_a input[type=file]").set_input_files(str(daisies[0]))
            page.get_by_role("button", name="Compare").click()
            verdict = page.locator("#verdict textarea")
            page.wait_for_function("() => document.querySelector('#verdict textarea').value.includes('distance')")
            assert verdict.input_value() == app.compare(daisies[0], daisies[1]).text
            shots.append(tmp_path / "compare.png")
            page.screenshot(path=str(shots[-1]), full_page=True)

            page.get_by_role("tab", name="Search").click()
            page.locator("#query input[type=file]").set_input_files(str(query))
            page.get_by_role("button", name="Search").click()
            page.locator("#neighbours img").first.wait_for(timeout=60_000)
            expected = [n.caption for n in app.search(query, 8)]
            page.wait_for_function(
                f"() => document.querySelectorAll('#neighbours img').length >= {len(expected)}")
            shown = page.locator("#neighbours").inner_text()
            assert all(caption.split()[0] in shown for caption in expected)
            shots.append(tmp_path / "search.png")
            page.screenshot(path=str(shots[-1]), full_page=True)

            page.get_by_role("tab", name="Name it").click()
            page.locator("#to_name input[type=file]").set_input_files(str(query))
            page.get_by_role("button", name="Name it").click()
            page.wait_for_function("() => document.querySelector('#name textarea').value.length > 0")
            assert page.locator("#name textarea").input_value() == app.name(query, 8)
            shots.append(tmp_path / "name.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            browser.close()
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "Traceback" not in output
    images = [Image.open(shot).convert("RGB") for shot in shots]
    sheet = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    top = 0
    for image in images:
        sheet.paste(image, (0, top))
        top += image.height
    target = Path(os.environ.get("APP_SCREENSHOT", tmp_path / "app_page.png"))
    sheet.save(target)
    print(f"screenshot: {target}")
