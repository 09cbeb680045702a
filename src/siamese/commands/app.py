"""``src/app.py``: the local web page (compare, search, name), served until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from siamese.data.io import set_max_pixels
from siamese.entry import Stopped, stop_on_signals
from siamese.errors import UserError, as_number
from siamese.use.checkpoints import load_for_use
from siamese.use.gallery import open_gallery
from siamese.use.search import check_k


def serve_app(cfg: DictConfig) -> None:
    """Serve the web page of ``src/app.py`` until Ctrl-C."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError('the web page needs gradio: pip install -e ".[app]"') from None
    from siamese.serving.page import FlowerApp, build_page

    port = as_number(cfg.port, "port", int)
    set_max_pixels(cfg.max_pixels)
    k = check_k(cfg.k)
    with stop_on_signals("while loading the model"):
        if cfg.index:
            gallery, model = open_gallery(Path(cfg.index), cfg.ckpt_path, cfg.device, test_views=cfg.test_views)
        else:
            gallery, model = None, load_for_use(cfg.ckpt_path, device=cfg.device, test_views=cfg.test_views)
        app = FlowerApp(model, gallery, cfg.backend)
        page = build_page(app, k)
    print(app.status())
    try:
        with stop_on_signals():
            page.launch(server_name=cfg.host, server_port=port, max_file_size=cfg.max_upload, show_error=True,
                        quiet=False, share=False)
    except OSError as exc:
        raise UserError(f"cannot serve on {cfg.host}:{port} ({exc}); choose another with port=...") from None
    except Stopped as exc:  # Ctrl-C or SIGTERM: the normal way to end serving
        page.close()
        print(f"{exc}: the page is closed")
