"""The local web page of ``src/app.py`` (Gradio): three tabs over :class:`FlowerApp`'s functions."""

from __future__ import annotations

import functools
from typing import Any, Callable

from siamese.errors import UserError
from siamese.inference.app import NO_INDEX, FlowerApp


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


def build_page(app: FlowerApp, k: int = 8):
    """The page: Compare, Search and Name it, under a line saying what is loaded."""
    import gradio as gr

    def compare(path_a, path_b):
        result = app.compare(path_a, path_b)
        return result.seen_a, result.seen_b, result.text

    def search(path, k):
        return [(n.thumbnail, n.caption) for n in app.search(path, k)]

    with gr.Blocks(title="Same kind of flower?") as page:
        gr.Markdown("## Same kind of flower?")
        gr.Markdown(app.status(), elem_id="status")
        with gr.Tab("Compare"):
            with gr.Row():
                photo_a = gr.Image(type="filepath", label="photo A", sources=["upload"])
                photo_b = gr.Image(type="filepath", label="photo B", sources=["upload"])
            compare_button = gr.Button("Compare", variant="primary")
            verdict = gr.Textbox(label="verdict", elem_id="verdict")
            with gr.Row():
                seen_a = gr.Image(label="A as the model sees it", interactive=False)
                seen_b = gr.Image(label="B as the model sees it", interactive=False)
            compare_button.click(_shown(compare), [photo_a, photo_b], [seen_a, seen_b, verdict], api_name="compare")
        with gr.Tab("Search"):
            if app.gallery is None:
                gr.Markdown(NO_INDEX)
            query = gr.Image(type="filepath", label="photo", sources=["upload"])
            search_k = gr.Slider(1, 50, value=k, step=1, label="k (neighbours)")
            search_button = gr.Button("Search", variant="primary")
            neighbours = gr.Gallery(label="nearest gallery images: green = same kind by the threshold, red = not",
                                    columns=8, elem_id="neighbours")
            search_button.click(_shown(search), [query, search_k], neighbours, api_name="search")
        with gr.Tab("Name it"):
            if app.gallery is None:
                gr.Markdown(NO_INDEX)
            to_name = gr.Image(type="filepath", label="photo", sources=["upload"])
            name_k = gr.Slider(1, 50, value=k, step=1, label="k (voters)")
            name_button = gr.Button("Name it", variant="primary")
            named = gr.Textbox(label="name", elem_id="name")
            name_button.click(_shown(app.name), [to_name, name_k], named, api_name="name")
    return page
