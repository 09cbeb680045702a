"""The local web page of ``src/app.py``: what it does, as plain functions (:class:`FlowerApp`: compare two
photos, search a gallery, name a flower), and the Gradio page of three tabs that only lays them out
(:func:`build_page`). Tests call the functions directly. Every number comes from the code ``verify.py``
and ``search.py`` use."""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image, ImageOps

from siamese.data.io import read_rgb, read_upload
from siamese.errors import UserError
from siamese.metrics.knn import resolve_backend
from siamese.use.checkpoints import TrainedModel
from siamese.use.embedding import embed_files, pair_distances, preprocess
from siamese.use.gallery import Gallery
from siamese.use.search import UNKNOWN, Query, identify, search_gallery

NO_INDEX = "no gallery loaded: build one with python src/index.py ckpt_path=CKPT images=photos/ out=gallery.pt, " \
           "then start the app with index=gallery.pt"
SAME_COLOUR, DIFFERENT_COLOUR = "#2e9e44", "#d03030"


@dataclass
class Comparison:
    seen_a: Image.Image  # the images as the model sees them (resized, normalisation undone)
    seen_b: Image.Image
    distance: float
    text: str


@dataclass
class Neighbour:
    thumbnail: Image.Image  # framed green (same kind by the verdict) or red
    caption: str


class FlowerApp:
    """A trained model (and optionally a gallery index built with it) behind the page."""

    def __init__(self, model: TrainedModel, gallery: Gallery | None = None, backend: str = "torch") -> None:
        self.model, self.gallery, self.backend = model, gallery, resolve_backend(backend)

    def status(self) -> str:
        """Which checkpoint and index are loaded, in one line."""
        preprocessing, verdict = self.model.embedder.preprocessing, self.model.verdict
        backbone = self.model.embedder.backbone
        run = self.model.path.parent.parent.name if self.model.path.parent.name == "checkpoints" else self.model.path.stem
        line = (f"run {run} ({self.model.path.name}), backbone {backbone.name}, image size {preprocessing.image_size}, "
                f"threshold {verdict.threshold:.4f} ({verdict.rule})")
        if self.gallery is None:
            return line + "; no gallery"
        return line + f"; gallery {len(self.gallery)} images, {self.gallery.classes()} kinds"

    def seen(self, path: Path) -> Image.Image:
        """An image as the model sees it: resized to its input size, the normalisation undone."""
        preprocessing = self.model.embedder.preprocessing
        pixels = (preprocessing.undo(preprocess(preprocessing, [path])[0]) * 255).round().byte().permute(1, 2, 0).numpy()
        return Image.fromarray(pixels)

    def compare(self, path_a: str | Path | None, path_b: str | Path | None) -> Comparison:
        """Distance, threshold, rule and verdict of two photos (``verify.py``'s numbers)."""
        if not path_a or not path_b:
            raise UserError("drop a photo in each of the two boxes")
        a, b = checked_image(path_a), checked_image(path_b)
        distance = float(pair_distances(self.model, [a], [b])[0])
        verdict = self.model.verdict
        text = (f"{verdict.word(distance)}: distance {distance:.4f}, threshold {verdict.threshold:.4f} "
                f"({verdict.rule})")
        return Comparison(self.seen(a), self.seen(b), distance, text)

    def _query(self, path: str | Path | None) -> tuple[Path, torch.Tensor]:
        if self.gallery is None:
            raise UserError(NO_INDEX)
        if not path:
            raise UserError("drop a photo to search with")
        query = checked_image(path)
        return query, embed_files(self.model, [query])

    def search(self, path: str | Path | None, k: int = 8) -> list[Neighbour]:
        """The ``k`` nearest gallery images (``search.py``'s neighbours), framed by the verdict."""
        _, embedding = self._query(path)
        neighbours = search_gallery(self.gallery, embedding, int(k), self.backend)
        verdict = self.model.verdict
        result = []
        for row, distance in zip(neighbours.rows[0].tolist(), neighbours.distances[0].tolist()):
            label = self.gallery.labels[row] or "(no label)"
            colour = SAME_COLOUR if verdict.same(distance) else DIFFERENT_COLOUR
            result.append(Neighbour(framed(self.gallery.file(row), colour), f"{label}  {distance:.3f}"))
        return result

    def name(self, path: str | Path | None, k: int = 8) -> str:
        """The k-NN vote with its counts (``search.py identify=true``), or unknown beyond the threshold."""
        query, embedding = self._query(path)
        found = identify(self.gallery, [Query(query)], embedding, int(k), self.model.verdict, self.backend, [None])[0]
        votes = ", ".join(f"{label} {count}" for label, count in Counter(found.neighbour_labels).most_common())
        if found.label == UNKNOWN:
            return (f"unknown: even the nearest gallery image is {found.nearest_distance:.4f} away, not below the "
                    f"threshold {self.model.verdict.threshold:.4f} (nearest {found.voters}: {votes})")
        return f"{found.label}: {found.votes} of {found.voters} votes (nearest {found.nearest_distance:.4f}; {votes})"


def checked_image(path: str | Path) -> Path:
    """``path`` when it is a readable image, else a UserError naming the file by its name alone (the
    page's uploads sit in a temporary folder the user never chose)."""
    path = Path(path)
    read_upload(path, path.name)
    return path


def preview(path: str | Path | None) -> Image.Image | None:
    """A dropped photo as it was dropped (for the page to show at once), or a UserError naming it."""
    return read_upload(Path(path), Path(path).name) if path else None


def framed(path: Path, colour: str, size: int = 128, border: int = 6) -> Image.Image:
    """A square thumbnail of ``path`` in a frame of ``colour`` (as the contact sheet frames neighbours)."""
    tile = ImageOps.fit(read_rgb(path), (size, size))
    return ImageOps.expand(tile, border=border, fill=colour)

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
