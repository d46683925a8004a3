"""The demo's labelled grid and animated grid (``motion_core.toy.demo_picture``), on small made-up clips."""
import numpy as np
import pytest
import torch

from motion_core.toy import demo_picture as dp

FRAMES, SIZE = 8, 64         # the toy world's clips


def _clip(value):
    """A clip of one grey level with a dark square moving right (frames differ, as an animation's must)."""
    clip = torch.full((FRAMES, SIZE, SIZE, 3), value)
    for f in range(FRAMES):
        clip[f, 40:50, 4 * f:4 * f + 10] = 0.0
    return clip


def _reading(dense, mfs=0.5):
    return {"dense_class": dense, "motion_fidelity_moving": mfs}


def _rows(expected="pan_E"):
    targets = [(_clip(0.2), _clip(0.4), {"with_motion": _reading("pan_E", 0.91), "no_motion": _reading("static", 0.1)}),
               (_clip(0.6), _clip(0.8), {"with_motion": _reading("zoom_in", None), "no_motion": _reading("static")})]
    return dp.demo_rows(_clip(1.0), [dp.Line("motion: pan_E")], targets, expected)


def test_readings_name_the_class_and_judge_only_the_learned_motion():
    good = dp.reading_lines(_reading("pan_E", 0.91), "pan_E")
    bad = dp.reading_lines(_reading("zoom_in"), "pan_E")
    plain = dp.reading_lines(_reading("static"), "pan_E", judge=False)
    assert good[0].text == "dense flow: pan_E = expected" and good[0].colour == dp.GOOD
    assert bad[0].text == "dense flow: zoom_in != expected" and bad[0].colour == dp.BAD
    assert plain[0].text == "dense flow: static != expected" and plain[0].colour == dp.INK
    assert good[1].text == "MFS on moving points: 0.91"
    assert dp.reading_lines(_reading("pan_E", None), None)[0].text == "dense flow: pan_E"   # your own clip: no verdict
    assert dp.reading_lines(_reading("pan_E", None), None)[1].text.endswith("n/a")


def test_grid_has_a_header_and_a_label_column_with_text():
    still, _animated = _rows()
    assert [row.lines[0].text for row in still] == ["reference", "target 1, learned motion", "target 1, no motion",
                                                     "target 2, learned motion", "target 2, no motion"]
    header = dp.demo_header("pan_E", "both", 150, 16, (1.0, 5.0))
    picture = dp.grid_picture(header, still, scale=2)
    strip = FRAMES * SIZE * 2
    label_width = picture.shape[1] - strip - 1
    assert label_width > 150                                      # the longest label line fits
    header_height = len(header) * dp.LINE_HEIGHT + 2 * dp.MARGIN
    assert picture.shape[0] == header_height + sum(max(2 * SIZE, len(r.lines) * dp.LINE_HEIGHT + dp.MARGIN) + 1
                                                   for r in still)
    labels = picture[header_height:, :label_width]
    ink = (labels.astype(int).sum(-1) < 200).mean()
    assert 0.005 < ink < 0.3, ink                                 # text is drawn, not a blank or filled band
    assert (np.abs(labels.astype(int) - dp.GOOD).sum(-1) < 60).any()   # the matching reading in green
    assert (np.abs(labels.astype(int) - dp.BAD).sum(-1) < 60).any()    # the wrong one in red
    first_cell = picture[header_height + 1:header_height + 1 + 2 * SIZE, label_width:label_width + 2 * SIZE]
    assert (first_cell[:40] == 255).all()                         # the reference clip (1.0) sits right of its label


def test_animated_grid_plays_every_row_side_by_side(tmp_path):
    _still, animated = _rows()
    header = dp.demo_header(None, "both", 3, 3, (1.0, 5.0))
    frames = dp.animated_frames(header, animated, scale=3)
    assert len(frames) == FRAMES and len({f.shape for f in frames}) == 1
    assert len(animated) == 3 and [len(row.clips) for row in animated] == [1, 2, 2]
    path = str(tmp_path / "grid.webp")
    assert dp.save_animated_webp(frames, path) is True
    from PIL import Image

    with Image.open(path) as image:
        assert image.n_frames == FRAMES and image.size == (frames[0].shape[1], frames[0].shape[0])


def test_animated_grid_is_skipped_without_pillow(tmp_path, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL":
            raise ImportError("no PIL")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with caplog.at_level("INFO"):
        assert dp.save_animated_webp([np.zeros((8, 8, 3), np.uint8)], str(tmp_path / "x.webp")) is False
    assert "skipping" in caplog.text and not (tmp_path / "x.webp").exists()


@pytest.mark.parametrize("expected", ["pan_E", None])
def test_header_states_the_expected_motion(expected):
    header = dp.demo_header(expected, "both", 150, 16, (1.0, 5.0))
    assert ("expected motion: pan_E" if expected else "unknown (your clip)") in header[0].text
    assert "CFG 1->5" in header[1].text
