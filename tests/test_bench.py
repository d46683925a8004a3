"""The benchmarks' doc writing, the readings and objective-margin benchmarks, on tiny settings."""
import json
import os

import pytest

from bench import docfile


def test_replace_section_keeps_the_hand_written_text_around_the_block(tmp_path):
    doc = tmp_path / "quality.md"
    start, end = docfile.markers("quality")
    doc.write_text(f"# Title\n\n{start}\nold table\n{end}\n\nAnalysis by hand.\n", encoding="utf-8")
    docfile.replace_section(str(doc), "quality", "new table\n")
    assert doc.read_text(encoding="utf-8") == f"# Title\n\n{start}\nnew table\n{end}\n\nAnalysis by hand.\n"
    docfile.replace_section(str(doc), "readings", "readings table")      # another bench's block: appended
    text = doc.read_text(encoding="utf-8")
    assert text.startswith(f"# Title\n\n{start}\nnew table\n{end}\n\nAnalysis by hand.\n\n")
    assert text.endswith("\n".join([*docfile.markers("readings")[:1], "readings table", docfile.markers("readings")[1]]) + "\n")
    assert not os.path.exists(str(doc) + ".partial")


def test_replace_section_creates_a_missing_doc_and_refuses_unbalanced_markers(tmp_path):
    doc = tmp_path / "new.md"
    docfile.replace_section(str(doc), "quality", "table")
    start, end = docfile.markers("quality")
    assert doc.read_text(encoding="utf-8") == f"{start}\ntable\n{end}\n"
    broken = tmp_path / "broken.md"
    broken.write_text(f"{start}\nhalf a block, its end marker deleted\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unbalanced.*fix them by hand"):
        docfile.replace_section(str(broken), "quality", "table")
    assert broken.read_text(encoding="utf-8") == f"{start}\nhalf a block, its end marker deleted\n"   # untouched


def test_readings_benchmark_reads_the_ideal_renders_right_and_writes_only_its_block(one_thread, capsys, tmp_path,
                                                                                   monkeypatch):
    from bench import readings

    doc = tmp_path / "quality.md"
    doc.write_text("Hand-written analysis.\n", encoding="utf-8")
    monkeypatch.setattr(readings, "DOC", str(doc))
    assert readings.main(["--motions", "translate_E_2", "static", "--scenes-per-motion", "1", "--sample-steps", "2",
                          "--sources", "render", "vae", "class_token", "--threads", "1"]) == 0
    table, kinds = [block.splitlines() for block in capsys.readouterr().out.split("\n\n") if block.startswith("|")]
    sources = [readings.SOURCES["render"], readings.SOURCES["vae"], readings.SOURCES["class_token"]]
    assert [line.split("|")[1].strip() for line in table[2:]] == sources
    render = [cell.strip() for cell in table[2].split("|")[2:-1]]
    assert render[:3] == ["100%", "100%", "100%"] and render[-1] == "exact"   # every reading names a clean clip
    assert table[3].split("|")[-2].strip() != "exact"                        # the VAE changes frame 0
    assert kinds[0] == "| clips read (dense flow / nearest ideal) | translate (1) | static (1) |"
    assert [line.split("|")[1].strip() for line in kinds[2:]] == sources
    assert kinds[2].split("|")[2:-1] == [" 100% / 100% ", " 100% / 100% "]
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("Hand-written analysis.\n\n" + docfile.markers("readings")[0])
    assert "python -m bench.readings --motions translate_E_2 static" in text and table[2] in text and kinds[2] in text


def test_quality_benchmark_updates_its_block_and_keeps_the_analysis(one_thread, capsys, tmp_path, monkeypatch):
    from bench import quality

    doc = tmp_path / "quality.md"
    start, end = docfile.markers("quality")
    doc.write_text(f"# Title\n\n{start}\nan old table\n{end}\n\nThe analysis, by hand.\n", encoding="utf-8")
    weights, manifest, _doc = quality.MODELS["class_token"]
    monkeypatch.setitem(quality.MODELS, "class_token", (weights, manifest, str(doc)))
    record = tmp_path / "quality.json"
    from motion_core.toy.toytrain import sha256
    shipped = sha256(weights)
    record.write_text(json.dumps({"rows": [
        {"model": "class_token", "key": "class_token", "name": "an older run", "learning_steps": 150,
         "weights_sha256": shipped},
        {"model": "class_token", "key": "mi_none", "name": "same file's row, kept", "learning_steps": 150,
         "weights_sha256": shipped},
        {"model": "class_token", "key": "mi_qk_only", "name": "a retrained file's row, dropped", "learning_steps": 150,
         "weights_sha256": "0" * 64},
        {"model": "svd_like", "key": "no_motion", "name": "another model's row, kept", "learning_steps": 150,
         "weights_sha256": "1" * 64}]}),
        encoding="utf-8")
    monkeypatch.setattr(quality, "JSON", str(record))
    assert quality.main(["--motions", "static", "--variants", "class_token", "no_motion", "--targets-per-reference", "1",
                         "--sample-steps", "2", "--threads", "1", "--log-sigma-mean", "2.3",
                         "--augment-crop", "0.7", "--token-start", "zero"]) == 0
    rows = json.loads(record.read_text(encoding="utf-8"))["rows"]
    assert [(row["model"], row["key"]) for row in rows] == [          # replaced, kept; the retrained file's dropped
        ("class_token", "class_token"), ("class_token", "no_motion"), ("class_token", "mi_none"),
        ("svd_like", "no_motion")]
    measured = rows[0]
    assert measured["weights_sha256"] == shipped and rows[1]["weights_sha256"] == shipped
    assert measured["name"].startswith("(upper bound)") and measured["command"].startswith("python -m bench.quality")
    for field in ("dense_flow_accuracy", "nearest_ideal_accuracy", "klt_accuracy", "mfs_moving", "mfs_all",
                  "appearance_leakage", "learning_seconds"):
        assert field in measured, field
    assert 0.0 <= measured["dense_flow_accuracy"] <= 1.0 and -1.0 <= measured["mfs_moving"] <= 1.0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| (upper bound)")]
    text = doc.read_text(encoding="utf-8")
    head, block = text.split(start + "\n")
    block, tail = block.split(end)
    assert head == "# Title\n\n" and tail == "\n\nThe analysis, by hand.\n"
    assert "an old table" not in block and table[0] in block and "`python -m bench.quality --motions static" in block
    assert ("150 learning steps (learning rate 0.02, log sigma ~ N(2.3, 1.2^2), crops down to 0.7, "
            "colour jitter 0.05, tokens starting at zero)") in block   # the settings it ran with


def test_objective_margin_ranks_the_reference_class_and_writes_its_block(one_thread, capsys, tmp_path, monkeypatch):
    from bench import objective_margin

    doc = tmp_path / "quality.md"
    doc.write_text("Hand-written analysis.\n", encoding="utf-8")
    monkeypatch.setattr(objective_margin, "DOC", str(doc))
    assert objective_margin.main(["--motions", "translate_E_2", "--noises", "1", "--steps", "2", "--threads", "1",
                                  "--by-sigma"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    by_sigma = [cell.strip() for cell in table[-1].split("|")[1:-1]]
    assert table[-3].startswith("| reference | sigma ") and table[-3].count("sigma") == 5
    # the model was trained with motion tokens at every noise level: its own token wins at each one
    assert by_sigma[0] == "translate_E_2" and all(not cell.startswith("rank") for cell in by_sigma[1:])
    assert table[0].startswith("| reference | own class: rank of 26 |") and "after 2 learning steps" in table[0]
    cells = [cell.strip() for cell in table[2].split("|")[1:-1]]
    # the shipped model was trained on this motion: its own token explains the clip best, by far
    assert cells[0] == "translate_E_2" and cells[1] == "1" and float(cells[4].rstrip("%")) > 10
    own, start, learned = float(cells[2]), float(cells[5]), float(cells[6])
    assert own < start and learned <= start * 1.5               # a finite loss for every column
    text = doc.read_text(encoding="utf-8")
    assert docfile.markers("objective_margin")[0] in text and table[2] in text
    assert "`python -m bench.objective_margin --motions translate_E_2 --noises 1" in text


def test_objective_margin_on_training_palette_references_leaves_the_doc(one_thread, capsys, tmp_path, monkeypatch):
    from bench import objective_margin
    from motion_core.toy import toyclips

    doc = tmp_path / "quality.md"
    doc.write_text("Hand-written analysis.\n", encoding="utf-8")
    monkeypatch.setattr(objective_margin, "DOC", str(doc))
    palettes, make_clip = [], toyclips.make_clip

    def recording_make_clip(*args, **kwargs):
        palettes.append(kwargs.get("palette"))
        return make_clip(*args, **kwargs)

    monkeypatch.setattr(toyclips, "make_clip", recording_make_clip)
    assert objective_margin.main(["--motions", "translate_E_2", "--noises", "1", "--steps", "0", "--threads", "1",
                                  "--palette", "train", "--levels", "1"]) == 0
    assert palettes == ["train"]
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| translate_E_2 |")]
    cells = [cell.strip() for cell in row[0].split("|")[1:-1]]
    assert cells[1] == "1" and float(cells[4].rstrip("%")) > 10     # the palette it was trained on
    assert doc.read_text(encoding="utf-8") == "Hand-written analysis.\n"   # the doc's block is the held-out one


def test_margins_by_level_rank_each_noise_level_alone():
    from bench.objective_margin import by_level_table, margins_by_level
    from motion_core.toy import toyclips

    classes, own = len(toyclips.MOTION_CLASSES), toyclips.class_index("rotate_ccw")
    rival = toyclips.class_index("rotate_cw")
    per_class = [[2.0] * 4 for _ in range(classes)]          # 2 levels x 2 noises, a level's entries adjacent
    per_class[own] = [1.0, 1.0, 1.0, 1.0]
    per_class[rival] = [1.5, 1.5, 0.8, 0.9]                   # wins the second level only
    levels = margins_by_level("rotate_ccw", per_class, 2)
    assert [level["rank"] for level in levels] == [1, 2]
    assert levels[0]["rival"] == "rotate_cw" and levels[0]["margin"] == pytest.approx(0.5)
    assert levels[1]["margin"] == pytest.approx(0.85 / 1.0 - 1)       # negative: the rival explains it better
    table = by_level_table([{"motion": "rotate_ccw", "by_level": levels}], [0.5, 4.0])
    assert table.splitlines()[0] == "| reference | sigma 0.5 | sigma 4 |"
    assert table.splitlines()[2] == "| rotate_ccw | +50.0% (rotate_cw) | rank 2, -15.0% (rotate_cw) |"


def test_margin_row_names_the_rank_and_the_nearest_rival():
    from bench.objective_margin import margin_row
    from motion_core.toy import toyclips

    losses = [1.0 + 0.01 * c for c in range(len(toyclips.MOTION_CLASSES))]
    own = toyclips.class_index("zoom_in")
    losses[own] = 0.5                                        # the objective prefers the reference's class
    row = margin_row("zoom_in", losses, 2.0, None)
    assert (row["rank"], row["rival"], round(row["margin"], 6)) == (1, toyclips.MOTION_CLASSES[0], 1.0)
    losses[own], losses[3] = 1.015, 0.9                      # classes 0, 1 and 3 beat it, class 3 by most
    row = margin_row("zoom_in", losses, 2.0, 1.1)
    assert row["rank"] == 4 and row["rival"] == toyclips.MOTION_CLASSES[3]
    assert row["margin"] == pytest.approx(0.9 / 1.015 - 1) and row["learned"] == 1.1


@pytest.mark.parametrize("bench, args, row", [
    ("readings", ["--scenes-per-motion", "1", "--sources", "vae"], "| ideal render through the toy VAE |"),
    ("objective_margin", ["--steps", "0", "--noises", "1", "--motions", "static", "--levels", "1"], "| static |"),
    ("quality", ["--variants", "class_token", "--targets-per-reference", "1", "--sample-steps", "2"], "| (upper bound)"),
])
def test_benchmark_measures_a_candidate_model_without_touching_the_doc(one_thread, capsys, tmp_path, monkeypatch,
                                                                       bench, args, row):
    import importlib
    import shutil

    from motion_core.toy import toyworld

    module = importlib.import_module(f"bench.{bench}")
    candidate = tmp_path / "candidate.safetensors"
    shutil.copyfile(toyworld.WEIGHTS_PATH, candidate)
    doc = tmp_path / "quality.md"
    monkeypatch.setattr(module, "DOC", str(doc))
    assert module.main(["--weights", str(candidate), "--motions", "static", *args, "--threads", "1"]) == 0
    assert any(line.startswith(row) for line in capsys.readouterr().out.splitlines())
    assert not doc.exists()                          # the doc holds the shipped model's numbers only
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        module.main(["--weights", str(tmp_path / "missing.safetensors"), "--motions", "static", "--no-doc"])


def test_train_step_benchmark_times_both_precisions(one_thread, capsys):
    from bench import train_step

    assert train_step.main(["--steps", "1", "--batch", "1", "--threads", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| float32 (the shipped recipe)", "| bfloat16 autocast"]
    for row in rows:
        seconds, speedup, loss = (float(cell.rstrip("x")) for cell in row.strip("| ").split(" | ")[1:])
        assert seconds > 0 and speedup > 0 and loss > 0


def test_clip_error_is_zero_on_the_reference_and_names_a_shape_mismatch():
    import torch

    from bench.clip_error import clip_errors
    from motion_core.toy import toyclips

    reference = toyclips.make_clip("translate_E_2", 0, palette="heldout")[0]         # (f h w c)
    assert clip_errors(reference, reference[None]) == (0.0, 0.0)
    still = reference[:1].expand_as(reference)[None]
    plain, blurred = clip_errors(reference, torch.cat([reference[None], still]))
    assert plain > 0 and blurred > 0                  # the still clip misses where the object went
    alone = clip_errors(reference, still)
    assert plain == pytest.approx(alone[0] / 2) and blurred == pytest.approx(alone[1] / 2)
    with pytest.raises(ValueError, match=r"do not match the reference \(8, 64, 64, 3\)"):
        clip_errors(reference, reference[None, :4])


def test_clip_error_benchmark_samples_every_row_from_the_reference_frame(one_thread, capsys):
    from bench import clip_error

    assert clip_error.main(["--motions", "translate_E_2", "--noises", "1", "--steps", "2", "--sample-steps", "2",
                            "--threads", "1"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| translate_E_2")]
    assert [row[1] for row in rows] == list(clip_error.ROWS)
    for row in rows:
        assert float(row[2]) > 0 and float(row[3]) > 0 and row[4] in ("0 of 1", "1 of 1")
    assert rows[0][5].strip(" |") in ("yes", "**no**") and all(row[5].strip(" |") == "" for row in rows[1:])


def test_spread_counts_distinct_classes_still_clips_and_the_top_share():
    from bench.toy_spread import spread

    figures = spread([["pan_W", "pan_W", "static", "bounce"], ["zoom_in", "zoom_in", "zoom_in", "zoom_in"]])
    assert figures["distinct"] == 2.0 and figures["still"] == 1 / 8
    assert figures["top_share"] == (0.5 + 1.0) / 2 and figures["classes_seen"] == 4
    assert figures["histogram"][0] == ("zoom_in", 4)


def test_toy_spread_benchmark_prints_both_readings_and_writes_its_block(one_thread, capsys, tmp_path, monkeypatch):
    from bench import quality, toy_spread

    doc = tmp_path / "quality_svd_like.md"
    weights, manifest, _doc = quality.MODELS["class_token"]
    monkeypatch.setitem(quality.MODELS, "class_token", (weights, manifest, str(doc)))
    assert toy_spread.main(["--model", "class_token", "--images", "2", "--seeds", "2", "--sample-steps", "2",
                            "--threads", "1"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert [line.split("|")[1].strip() for line in table[2:]] == ["dense flow", "nearest ideal"]
    assert all(" of 2 |" in line for line in table[2:])
    text = doc.read_text(encoding="utf-8")
    assert docfile.markers("toy_spread")[0] in text and table[2] in text and "2 held-out first frames x 2 seeds" in text


def _wan_rows_from(constants, learned_gib=0.01, weights_gib=0.4):
    """Rows a perfect measurement of ``constants`` would give (float32, 1.3B width)."""
    from motion_core.memory_plan import GIB
    rows = []
    for blocks, tokens, checkpointing in ((2, 800, True), (2, 2550, True), (4, 2550, True), (2, 800, False),
                                          (2, 2550, False)):
        if checkpointing:
            activations = tokens * (constants["kept_per_block"] * blocks + constants["outside"]
                                    + constants["recompute"]) + constants["fixed"]
        else:
            activations = tokens * (constants["outside"] + constants["block"] * blocks) + weights_gib * GIB
        saved = tokens * (constants["kept_per_block"] * blocks + constants["outside"]) + 5e7
        rows.append({"size": "1.3B", "blocks": blocks, "tokens": tokens, "dtype": "float32",
                     "checkpointing": checkpointing, "representation": "temporal", "saved_gib": saved / GIB,
                     "peak_rise_gib": activations / GIB + learned_gib, "learned_gib": learned_gib,
                     "weights_gib": weights_gib})
    return rows


def test_wan_memory_fit_recovers_the_constants_and_the_plan_keeps_the_measured_ones():
    from bench.learn_memory_wan import fit_wan_constants
    from motion_core.memory_plan import WAN_ACTIVATION_BYTES
    made_up = {"kept_per_block": 6000, "outside": 20000, "recompute": 150000, "block": 210000, "fixed": 4e8}
    fitted = fit_wan_constants(_wan_rows_from(made_up))
    assert fitted == pytest.approx(made_up, rel=1e-3)
    assert fit_wan_constants(_wan_rows_from(made_up)[:3]) is None          # a missing row: no fit
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "learn_memory.json"), encoding="utf-8") as fh:
        measured = json.load(fh)["wan_cpu"]
    assert WAN_ACTIVATION_BYTES == pytest.approx(fit_wan_constants(measured["rows"]), rel=0.01)


def test_animatediff_memory_fit_recovers_the_constants_and_the_plan_keeps_the_measured_ones():
    """Rows made from known constants give them back; the committed AD_ACTIVATION_BYTES are the fit of the rows
    bench/learn_memory.py --families animatediff measured (docs/learn_memory.json), and the plan built from them
    lands on each measured row it was fitted on."""
    from bench.learn_memory_ad import fit_ad_constants, planned_gib
    from motion_core.memory_plan import AD_ACTIVATION_BYTES
    made_up = {True: (3e8, 8000.0, 50.0), False: (0, 0, 170.0)}
    rows = []
    for width, layers, checkpointing in ((128, "widest", True), (192, "widest", True), (128, "all", True),
                                         (128, "widest", False)):
        row = {"width": width, "height": width, "frames": 16, "layers": layers, "checkpointing": checkpointing,
               "dtype": "float32", "weights_gib": 5.0, "planned_learned_gib": 0.1 * width / 128,
               "tracked_width": 1960.0 if layers == "widest" else 2920.0}
        row["peak_rise_gib"] = planned_gib(row, made_up)
        rows.append(row)
    fitted = fit_ad_constants(rows)
    assert fitted[True] == pytest.approx(made_up[True], rel=1e-3) and fitted[False] == pytest.approx(made_up[False])
    assert True not in fit_ad_constants(rows[:2] + rows[3:])     # no `all` row: the tracked width's share is unknown
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "learn_memory.json"), encoding="utf-8") as fh:
        measured = json.load(fh)["animatediff_cpu"]["rows"]
    assert {key: tuple(value) for key, value in fit_ad_constants(measured).items()} == AD_ACTIVATION_BYTES
    for row in measured:
        if row["layers"] == "widest":
            assert planned_gib(row, AD_ACTIVATION_BYTES) == pytest.approx(row["peak_rise_gib"], abs=0.01)


def test_wan_toy_vae_reading_keeps_every_motion_through_a_lossless_codec_and_only_stillness_through_a_frozen_one():
    from bench.wan_toy_vae import held_out_clips, read_round_trips
    from motion_core.toy import toyclips

    clips = held_out_clips(per_class=1)
    lossless = read_round_trips(lambda pixels: pixels.clone(), clips)
    assert lossless["kept"] == lossless["of"] == len(toyclips.MOTION_CLASSES)
    frozen = read_round_trips(lambda pixels: pixels[:, :, :1].expand_as(pixels), clips)
    assert frozen["kept"] == 1 and frozen["psnr_frame0"] > 60 and frozen["psnr"] < lossless["psnr"]


def test_wan_toy_sample_reads_every_clip_it_draws():
    import torch

    from bench.wan_toy_sample import read, sample
    from motion_core.toy import wanworld

    transformer, vae, text = wanworld.build_models(seed=0)
    world = wanworld.WanToyWorld(transformer.eval(), vae.eval(), text, {})
    result = read(world, motions=("static", "bounce"), steps=2)
    assert result["of"] == 2 and sum(result["readings"].values()) == 2 and 0 <= result["hits"] <= 2
    latents = sample(world, ["red circle", ""], steps=1)
    assert latents.shape == (2, 16, 4, 16, 16) and torch.isfinite(latents).all()


def test_the_word_probe_measures_nothing_where_the_text_encoder_gives_zeros_and_something_where_it_does_not():
    import torch

    from bench.wan_toy_sample import word_probe
    from motion_core.toy import wanworld

    transformer, vae, text = wanworld.build_models(seed=0)
    world = wanworld.WanToyWorld(transformer.eval(), vae.eval(), text, {})
    heard = word_probe(world, motions=("bounce",), sigmas=(0.5,))[0.5]
    assert heard["motion word"] > 0 and heard["colour word"] > 0 and heard["empty prompt"] > 0
    with torch.no_grad():
        for parameter in world.text_encoder.parameters():
            parameter.zero_()
    deaf = word_probe(world, motions=("bounce",), sigmas=(0.5,))[0.5]
    assert deaf == {"motion word": 0.0, "colour word": 0.0, "empty prompt": 0.0}


def test_the_sampler_probe_reads_every_setting_on_every_clip():
    from bench.wan_toy_sample import sampler_probe
    from motion_core.toy import wanworld

    transformer, vae, text = wanworld.build_models(seed=0)
    world = wanworld.WanToyWorld(transformer.eval(), vae.eval(), text, {})
    found = sampler_probe(world, motions=("static", "bounce"), repeats=1, sampling=((4.0, 2),))
    assert list(found) == ["codec alone", "one step from sigma 0.3", "one step from sigma 0.6",
                           "one step from sigma 0.9", "sampled, guidance 4, 2 steps"]
    assert all(of == 2 and 0 <= hit <= 2 for hit, of in found.values())
