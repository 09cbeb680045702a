"""Progress lines off a terminal (siamese.progress)."""

import io

from siamese.progress import Progress


def test_progress_lines_off_a_terminal():
    stream = io.StringIO()
    progress = Progress(100, "embedding", stream=stream, interval=0.0)
    progress.update(40)
    progress.update(60)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("embedding: 40 of 100 images, ") and ", ETA " in lines[0]
    assert lines[1].startswith("embedding: 100 of 100 images, ") and "ETA" not in lines[1]
    quiet = io.StringIO()
    slow = Progress(100, "embedding", stream=quiet, interval=3600)
    slow.update(10)  # not yet: one line per interval
    slow.update(90)  # but always the last
    assert quiet.getvalue().count("\n") == 1
