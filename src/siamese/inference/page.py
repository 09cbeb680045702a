"""The local web page of ``src/app.py`` (Gradio): three tabs over :class:`FlowerApp`'s functions."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

from siamese.errors import UserError
from siamese.inference.app import NO_INDEX, FlowerApp, preview


def _shown(func: Callable[..., Any]) -> Callable[..., Any]:
    """A user's mistake (not an image, no gallery) as a message in the page, not a traceback."""
    import gradio as gr

    @functools.wraps(func)
    def wrapper(*args: Any) -> Any:
        try:
            return func(*args)
        except UserError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    return wrapper


def _enlarged(image, side: int = 256):
    """The model's input shown large enough to see, its pixels kept (nearest neighbour)."""
    from PIL import Image

    scale = max(1, side // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def _photo(gr, label: str, elem_id: str):
    """An upload box that hands the file's path over as it is (the app checks that it is an image and
    says so in the page; an image component would decode it first and fail with a traceback), and
    the photo itself shown under it as soon as it is dropped."""
    upload = gr.File(label=label, type="filepath", file_count="single", height=80, elem_id=elem_id)
    shown = gr.Image(label=f"{label} (dropped)", interactive=False, height=200, elem_id=f"{elem_id}_shown",
                     show_label=False)
    upload.change(_shown(preview), upload, shown, api_name=f"preview_{elem_id}")
    return upload


def _gallery_tab(gr, app: FlowerApp, k: int, photo_id: str, k_label: str, action: str, function, api_name: str,
                 output) -> None:
    """A tab that asks the gallery about one photo: the photo, k, a button, and ``output``."""
    if app.gallery is None:
        gr.Markdown(NO_INDEX)
    photo = _photo(gr, "photo", photo_id)
    chosen_k = gr.Slider(1, 50, value=k, step=1, label=k_label)
    button = gr.Button(action, variant="primary")
    output.render()
    button.click(function, [photo, chosen_k], output, api_name=api_name)


def build_page(app: FlowerApp, k: int = 8):
    """The page: Compare, Search and Name it, under a line saying what is loaded."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local page calls no one
    import gradio as gr

    def compare(path_a, path_b):
        result = app.compare(path_a, path_b)
        return _enlarged(result.seen_a), _enlarged(result.seen_b), result.text

    def search(path, k):
        return [(n.thumbnail, n.caption) for n in app.search(path, k)]

    with gr.Blocks(title="Same kind of flower?") as page:
        gr.Markdown("## Same kind of flower?")
        gr.Markdown(app.status(), elem_id="status")
        with gr.Tab("Compare"):
            with gr.Row():
                photo_a = _photo(gr, "photo A", "photo_a")
                photo_b = _photo(gr, "photo B", "photo_b")
            compare_button = gr.Button("Compare", variant="primary")
            verdict = gr.Textbox(label="verdict", elem_id="verdict")
            with gr.Row():
                seen_a = gr.Image(label="A as the model sees it", interactive=False, height=270)
                seen_b = gr.Image(label="B as the model sees it", interactive=False, height=270)
            compare_button.click(_shown(compare), [photo_a, photo_b], [seen_a, seen_b, verdict], api_name="compare")
        with gr.Tab("Search"):
            neighbours_label = "nearest gallery images: green = same kind by the threshold, red = not"
            _gallery_tab(gr, app, k, "query", "k (neighbours)", "Search", _shown(search), "search",
                         gr.Gallery(label=neighbours_label, columns=8, elem_id="neighbours", render=False))
        with gr.Tab("Name it"):
            _gallery_tab(gr, app, k, "to_name", "k (voters)", "Name it", _shown(app.name), "name",
                         gr.Textbox(label="name", elem_id="name", render=False))
    return page
