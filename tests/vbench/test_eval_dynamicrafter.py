"""`priorswap eval dynamicrafter` end to end: tiny DynamiCrafter and VideoCrafter1 (released layout, converted by the
real command), a miniature VBench-I2V suite, and fabricated weight files in VBench's own formats."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from priorswap.toolkit.cli import main
from priorswap.toolkit.video.tiny import save_tiny_checkpoint

from vbench_factories import amt_file, dreamsim_folder, musiq_file, openai_archive, original_raft_state


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import timm

    root = tmp_path_factory.mktemp("evalvid")
    models = {}
    for flavour, seed in (("dynamicrafter", 1), ("videocrafter", 2)):
        p = save_tiny_checkpoint(str(root / flavour), flavour, seed)
        models[flavour] = str(root / f"{flavour}-c")
        assert (
            main(
                [
                    "convert",
                    flavour,
                    p["ckpt"],
                    models[flavour],
                    "--config",
                    p["config"],
                    "--openclip-config",
                    p["openclip"],
                ]
            )
            == 0
        )
    suite = root / "suite"
    (suite / "crop" / "1-1").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a red ball.jpg", "a quiet lake.jpg"):
        Image.fromarray(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)).save(suite / "crop" / "1-1" / name)
    subject = ["subject_consistency", "temporal_flickering", "dynamic_degree", "aesthetic_quality", "i2v_subject",
               "motion_smoothness", "imaging_quality"]  # fmt: skip
    background = [
        "background_consistency",
        "temporal_flickering",
        "aesthetic_quality",
        "i2v_background",
        "imaging_quality",
    ]
    info = [
        {"prompt_en": "a red ball", "dimension": subject, "image_type": "single", "image_name": "a red ball.jpg"},
        {"prompt_en": "a red ball, camera pans left", "dimension": ["camera_motion"], "image_name": "a red ball.jpg"},
        {
            "prompt_en": "a quiet lake",
            "dimension": background,
            "image_type": "scenery",
            "image_name": "a quiet lake.jpg",
        },
    ]
    (suite / "vbench2_i2v_full_info.json").write_text(json.dumps(info))
    w = root / "weights"
    w.mkdir()
    torch.manual_seed(0)
    torch.save(
        timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).state_dict(),
        w / "dino_vitbase16_pretrain.pth",
    )
    openai_archive(str(w / "ViT-B-32.pt"), seed=0)
    openai_archive(str(w / "ViT-L-14.pt"), seed=1)  # tiny: its embedding has 32 dimensions, and so has the head
    torch.save(torch.nn.Linear(32, 1).state_dict(), w / "sa_0_4_vit_l_14_linear.pth")
    torch.save(original_raft_state()[1], w / "raft-things.pth")
    musiq_file(str(w / "musiq_spaq_ckpt-358bb6af.pth"))
    dreamsim_folder(w / "dreamsim", width=64)  # DreamSim's cache folder layout, 64 wide so that it runs quickly
    amt_file(str(w / "amt-s.pth"))
    nets = ["--dino-weights", w / "dino_vitbase16_pretrain.pth", "--clip-b32", w / "ViT-B-32.pt", "--clip-l14",
            w / "ViT-L-14.pt", "--aesthetic-head", w / "sa_0_4_vit_l_14_linear.pth", "--raft-weights", w / "raft-things.pth",
            "--musiq-weights", w / "musiq_spaq_ckpt-358bb6af.pth", "--dreamsim-weights", w / "dreamsim",
            "--amt-weights", w / "amt-s.pth"]  # fmt: skip
    return {"models": models, "suite": str(suite), "nets": nets}


def got_imaging_in(md: str) -> bool:
    line = next(ln for ln in md.splitlines() if ln.startswith("| Imaging Quality |"))
    return "not computed" not in line


def argv(setup, out, *extra):
    return ["eval", "dynamicrafter", "--model", setup["models"]["dynamicrafter"], "--data", setup["suite"], "--output-dir",
            out, "--prior", f"vc1={setup['models']['videocrafter']}", "--videos-per-prompt", "1", "--steps", "2",
            "--size", "128", "--device", "cpu", "--no-progress", *setup["nets"], *extra]  # fmt: skip


def test_table_4_end_to_end_and_resume(setup, tmp_path, capsys, monkeypatch):
    from priorswap.toolkit.video import pipeline

    encoded, real = [], pipeline.encode_conditions
    monkeypatch.setattr(pipeline, "encode_conditions", lambda *a, **k: encoded.append(a[2]) or real(*a, **k))
    out = tmp_path / "out"
    code, text, err = run(capsys, *argv(setup, out))
    assert code == 0, err
    assert sorted(encoded) == ["a quiet lake", "a red ball"]  # once per prompt, shared by vanilla and the prior
    for method in ("vanilla", "vc1"):
        for prompt in ("a red ball", "a quiet lake"):
            assert (out / "videos" / method / f"{prompt}-0.mp4").is_file()  # VBench's own names
    assert not (out / "videos" / "vanilla" / "a red ball, camera pans left-0.mp4").exists()
    md = (out / "eval.md").read_text()
    assert got_imaging_in(md)
    assert "not computed" not in next(ln for ln in md.splitlines() if ln.startswith("| I2V Background |"))
    for title in ("Subject Consistency", "Background Consistency", "Temporal Flickering", "Dynamic Degree",
                  "Aesthetic Quality", "I2V Subject", "Motion Smoothness", "Imaging Quality", "I2V Background"):  # fmt: skip
        assert f"| {title} |" in md  # never silently absent
    assert "not computed" not in md  # all nine are built
    rows = list(csv.DictReader(open(out / "eval.csv")))
    got = {(r["method"], r["dimension"]): (float(r["value"]), int(r["n"])) for r in rows}
    assert got[("vanilla", "subject_consistency")][1] == 1 and got[("vanilla", "background_consistency")][1] == 1
    assert got[("vanilla", "temporal_flickering")][1] == 2  # both prompts count for it
    assert 0 <= got[("vc1", "dynamic_degree")][0] <= 1 and got[("vanilla", "i2v_subject")][0] <= 1
    assert 0 < got[("vanilla", "i2v_background")][0] <= 1 and got[("vc1", "i2v_background")][1] == 1  # the lake only
    assert got[("vanilla", "motion_smoothness")][1] == 1 and 0 <= got[("vc1", "motion_smoothness")][0] <= 1
    items = list(csv.DictReader(open(out / "items.csv")))
    assert {r["prompt"] for r in items} == {"a red ball", "a quiet lake"}
    assert (out / "grid.png").is_file()
    before = os.stat(out / "videos" / "vc1" / "a red ball-0.mp4").st_mtime_ns
    code, _, err = run(capsys, *argv(setup, out, "--dimensions", "temporal_flickering"))  # resumes: nothing sampled
    assert code == 0 and os.stat(out / "videos" / "vc1" / "a red ball-0.mp4").st_mtime_ns == before
    rows2 = {(r["method"], r["dimension"]): float(r["value"]) for r in csv.DictReader(open(out / "eval.csv"))}
    assert rows2[("vc1", "temporal_flickering")] == got[("vc1", "temporal_flickering")][0]  # the same videos
    code, _, err = run(capsys, *argv(setup, out, "--steps", "3"))
    assert code == 2 and "steps" in err and "another folder" in err


@pytest.mark.parametrize(
    "drop,extra,needle",
    [
        ("--raft-weights", [], "dynamic_degree needs --raft-weights (raft-things.pth"),
        ("--dreamsim-weights", [], "i2v_background needs --dreamsim-weights (DreamSim's cache folder"),
        (None, ["--dreamsim-weights", "/no/such/dir"], "'/no/such/dir' is not a folder; expected DreamSim's cache"),
        ("--amt-weights", [], "motion_smoothness needs --amt-weights (amt-s.pth"),
        (None, ["--dimensions", "sharpness"], "unknown dimension 'sharpness'"),
        (None, ["--data", "/no/such/suite"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_before_sampling(setup, tmp_path, capsys, drop, extra, needle):
    a = argv(setup, tmp_path / "o", *extra)
    if drop:
        i = a.index(drop)
        del a[i : i + 2]
    code, out, err = run(capsys, *a)
    lines = [ln for ln in err.splitlines() if ln.startswith("priorswap")]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "o" / "videos").exists()


def test_help_names_every_dimension(capsys):
    from priorswap.toolkit.vbench.suite import DIMENSIONS

    code, out, _ = run(capsys, "eval", "dynamicrafter", "--help")
    assert code == 0
    text = " ".join(out.split())  # argparse wraps help lines
    assert all(d in text for d in DIMENSIONS) and len(DIMENSIONS) == 9


def test_dynamic_degree_reads_each_files_frame_rate(setup, tmp_path, capsys, monkeypatch):
    """VBench reads Dynamic Degree's fps from each video file (every round(fps / 8)-th frame is compared), not from
    the rate a run meant to write: a video re-encoded at 32 fps is scored at 32 fps, whatever --fps (24) says."""
    from priorswap.toolkit.vbench import raft
    from priorswap.toolkit.video.writer import read_fps, read_mp4, write_mp4

    out, dims = tmp_path / "out", ["--dimensions", "dynamic_degree", "--fps", "24"]
    vanilla_only = argv(setup, out, *dims)
    i = vanilla_only.index("--prior")
    del vanilla_only[i : i + 2]
    code, _, err = run(capsys, *vanilla_only, "--shard", "0/1")  # samples only
    assert code == 0, err
    video = out / "videos" / "vanilla" / "a red ball-0.mp4"
    assert read_fps(str(video)) == 24.0  # written at --fps
    write_mp4(str(video), read_mp4(str(video)), 32)  # the same frames, now stated at 32 fps
    seen, real = [], raft.dynamic_degree
    monkeypatch.setattr(raft, "dynamic_degree", lambda net, frames, fps: seen.append(fps) or real(net, frames, fps))
    code, _, err = run(capsys, *vanilla_only)  # scores the video on disk
    assert code == 0, err
    assert seen == [32.0]
