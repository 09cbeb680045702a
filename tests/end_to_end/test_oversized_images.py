"""Images over the pixel limit (max_pixels, default Pillow's ~179 Mpx) are refused at every door in
one line naming the file, its size and the option; a 108 Mpx photo is legitimate and works."""

import pytest
from helpers import compose_config, indexed_gallery, user_error_of, write_png_header
from PIL import Image

from siamese.data import io
from siamese.data.io import PILLOW_MAX_PIXELS, image_problem, read_rgb, read_upload, set_max_pixels

TOO_BIG = "20000 x 20000 pixels (400 Mpx), over the limit of 179 Mpx; shrink it, or raise max_pixels " \
          "(data.max_pixels when training)"


@pytest.fixture(autouse=True)
def default_limit():
    set_max_pixels(None)
    yield
    set_max_pixels(None)


@pytest.fixture
def bomb(tmp_path):
    return write_png_header(tmp_path / "bomb.png", 20_000, 20_000)


def test_the_limit_is_pillows_and_an_oversized_file_is_named_with_its_size(bomb, tmp_path):
    assert PILLOW_MAX_PIXELS == 178_956_970 and Image.MAX_IMAGE_PIXELS is None  # our check replaces Pillow's
    with pytest.raises(io.TooManyPixels) as raised:
        read_rgb(bomb)
    assert str(raised.value) == f"{bomb} is {TOO_BIG}"
    assert image_problem(bomb) == TOO_BIG
    with pytest.raises(io.TooManyPixels, match=r"^upload.png is 20000 x 20000 pixels"):  # the name the user chose
        read_upload(bomb, "upload.png")
    write_png_header(tmp_path / "photo.png", 12_000, 9_000)
    set_max_pixels(1000)
    with pytest.raises(io.TooManyPixels, match=r"is 12000 x 9000 pixels \(108 Mpx\), over the limit of 0 Mpx"):
        read_rgb(tmp_path / "photo.png")
    assert user_error_of(set_max_pixels, "many") == "max_pixels must be a number, got 'many'"
    assert user_error_of(set_max_pixels, 0).startswith("max_pixels must be a positive number of pixels")


def test_a_108_megapixel_photo_is_read(tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("L", (12_000, 9_000), 128).save(photo, compress_level=1)
    image = read_rgb(photo)
    assert image.size == (12_000, 9_000) and image.mode == "RGB" and image.getpixel((5, 5)) == (128, 128, 128)
    assert image_problem(photo) is None


def test_training_data_names_the_oversized_image(tmp_path):
    from helpers import IMAGENET, write_image_folder

    from siamese.data.datamodule import PairDataModule

    folder = write_image_folder(tmp_path / "images", {"a": 6, "b": 6, "c": 6})
    write_png_header(folder / "b" / "huge.png", 20_000, 20_000)
    data = PairDataModule(**IMAGENET, root=str(folder), dataset="imagefolder", split="stratified",
                          split_fractions=(0.34, 0.33, 0.33))
    message = user_error_of(data.setup)
    assert message.startswith(f"1 unreadable image(s), first {folder / 'b' / 'huge.png'} ({TOO_BIG})")
    data = PairDataModule(**IMAGENET, root=str(folder), dataset="imagefolder", split="stratified",
                          split_fractions=(0.34, 0.33, 0.33), max_pixels=500_000_000)
    assert user_error_of(PairDataModule, **IMAGENET, root=str(folder), max_pixels=-3) == \
        "data.max_pixels must be a positive number of pixels (or null for Pillow's limit), got -3"
    with Image.open(folder / "b" / "huge.png") as huge:
        io.check_pixels(huge, "huge.png")  # the raised limit lets it through


def test_verify_index_and_search_refuse_it_in_one_line(checkpoint, bomb, tmp_path):
    from siamese.commands.index import build_index
    from siamese.commands.search import search
    from siamese.commands.verify import verify

    photos, index, query = indexed_gallery(tmp_path / "gallery", checkpoint)
    message = user_error_of(verify, compose_config("verify", [f"ckpt_path={checkpoint}", f"image_a={bomb}",
                                                              f"image_b={query}"]))
    assert message == f"{bomb} is {TOO_BIG}"
    out = tmp_path / "search.csv"
    message = user_error_of(search, compose_config("search", [f"index={index}", f"query={bomb}", f"out={out}"]))
    assert message == f"{bomb} is {TOO_BIG}" and not out.exists()
    write_png_header(photos / "rose" / "huge.png", 20_000, 20_000)
    before = index.read_bytes()
    message = user_error_of(build_index, compose_config("index", [f"ckpt_path={checkpoint}", f"images={photos}",
                                                                  f"out={index}", "sync=true"]))
    assert message.startswith(f"1 unreadable image(s) in {photos}, first {photos / 'rose' / 'huge.png'} ({TOO_BIG})")
    assert index.read_bytes() == before
    assert "max_pixels" in compose_config("app", [f"ckpt_path={checkpoint}"])
    assert compose_config("serve", [f"ckpt_path={checkpoint}"]).max_pixels is None
