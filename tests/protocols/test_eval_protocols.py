"""``priorswap eval ip2p|zero123|vd`` on tiny random models and fabricated metric weights, fully offline.

Checked against things this project did not write: Zero-1-to-3 cameras against closed-form spherical
coordinates, PSNR against numpy, FID against scipy's sqrtm, CLIP metrics against transformers' CLIPModel
called directly. A fine-tune used as its own prior must give exactly vanilla; a killed run must resume to the
same table; bad input must be one line and exit code 2 before any sample is written.
"""

from __future__ import annotations

import json
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from PIL import Image

from priorswap.toolkit.cli import main  # noqa: E402
from priorswap.toolkit.errors import PriorswapError  # noqa: E402
from priorswap.toolkit.images import make_grid  # noqa: E402
from priorswap.toolkit.protocols.items import read_items, relative_pose  # noqa: E402

import metric_factories as mf  # noqa: E402
from protocol_factories import (  # noqa: E402
    STEPS,
    assert_same_values,
    look_at,
    protocol_env,
    read_csv,
    values,
    write_jsonl,
    write_objects,
    zero123_args,
)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([*argv, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.startswith("priorswap: error")]
    assert code == 2 and len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return protocol_env(tmp_path_factory.mktemp("protocols"))


def to_t(im) -> torch.Tensor:
    """PIL (any mode) -> (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]


def reference_clip(folder: str):
    """Unit CLIP image / text embeddings straight from transformers' CLIPModel and CLIPTokenizer (an independent check)."""
    from transformers import CLIPModel, CLIPTokenizer

    clip, tok = CLIPModel.from_pretrained(folder).eval(), CLIPTokenizer.from_pretrained(folder)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    s = clip.config.vision_config.image_size

    def pooled(e):
        return torch.nn.functional.normalize(e if torch.is_tensor(e) else e.pooler_output, dim=-1)[0]

    def image(x):  # shortest side to s (bicubic, antialiased), centre crop, CLIP normalisation
        h, w = x.shape[-2:]
        size = (s, max(s, round(w * s / h))) if h <= w else (max(s, round(h * s / w)), s)
        x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(
            0, 1
        )
        top, left = (x.shape[-2] - s) // 2, (x.shape[-1] - s) // 2
        with torch.no_grad():
            return pooled(clip.get_image_features(pixel_values=(x[..., top : top + s, left : left + s] - mean) / std))

    def text(t):
        with torch.no_grad():
            return pooled(clip.get_text_features(**tok([t], return_tensors="pt")))

    return image, text


# -- items -----------------------------------------------------------------------------------------
def test_relative_pose_matches_closed_form_spherical_offsets():
    polar, azimuth, radius = relative_pose(look_at(60, 30, 1.5), look_at(45, 300, 2.0))
    assert polar == pytest.approx(-15.0, abs=1e-6)
    assert azimuth == pytest.approx(270.0, abs=1e-6)  # (300 - 30) mod 360
    assert radius == pytest.approx(0.5, abs=1e-9)
    four = np.vstack([look_at(60, 30, 1.5), [0, 0, 0, 1]])  # 4x4 extrinsics give the same answer
    assert relative_pose(four, look_at(60, 30, 1.5)) == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)


def test_view_folders_give_one_item_per_non_reference_view(env):
    items = read_items(env["objects"], "zero123")
    assert [it.id for it in items] == ["obj0_001", "obj0_002", "obj1_001", "obj1_002"]
    assert all(it.image.endswith("000.png") for it in items)
    assert items[1].pose == pytest.approx((0.0, 120.0, 0.0), abs=1e-6)
    with pytest.raises(PriorswapError, match="no reference view 5"):
        read_items(env["objects"], "zero123", reference_view=5)


def test_manifest_problems_are_one_line(tmp_path):
    bad = write_jsonl(str(tmp_path / "m.jsonl"), [{"image": "a.png", "edit": "x"}, {"image": "b.png"}])
    with pytest.raises(PriorswapError, match=r"m.jsonl:2 lacks edit"):
        read_items(bad, "ip2p")
    with pytest.raises(PriorswapError, match=r"m.jsonl:1 lacks input_caption, output_caption"):
        read_items(bad, "ip2p", captions=True)
    (tmp_path / "j.jsonl").write_text('{"image": "a.png"}\nnot json\n')
    with pytest.raises(PriorswapError, match=r"j.jsonl:2 is not valid JSON"):
        read_items(str(tmp_path / "j.jsonl"), "vd")
    (tmp_path / "e.csv").write_text(
        "image,Instruction,Source Prompt,Target Prompt\na.png,add snow,a field,a snowy field\n"
    )
    it = read_items(str(tmp_path / "e.csv"), "ip2p", captions=True)[0]  # benchmark column names are understood
    assert (it.edit, it.input_caption, it.output_caption, it.id) == ("add snow", "a field", "a snowy field", "000002")
    caption = write_jsonl(
        str(tmp_path / "c.jsonl"), [{"image": "a.png", "edit": "x", "input_caption": 5, "output_caption": "y"}]
    )
    with pytest.raises(PriorswapError, match=r"c.jsonl:1 has a non-text input_caption \(5\)"):
        read_items(caption, "ip2p", captions=True)
    (tmp_path / "latin1.csv").write_bytes("image,edit\na.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(PriorswapError, match="is not UTF-8 text"):
        read_items(str(tmp_path / "latin1.csv"), "ip2p")
    with pytest.raises(PriorswapError, match="needs a .jsonl/.csv manifest"):
        read_items(str(tmp_path), "ip2p")
    with pytest.raises(PriorswapError, match="does not exist"):
        read_items(str(tmp_path / "nope"), "vd")


# -- Zero-1-to-3 -----------------------------------------------------------------------------------
def test_zero123_table_own_prior_equals_vanilla_and_psnr_matches_numpy(env, capsys, tmp_path):
    out = tmp_path / "z"
    code, text, err = run_cli(
        capsys, *zero123_args(env, out, "--prior", f"own={env['zero123']}", "--prior", f"sd={env['sd']}")
    )
    assert code == 0, err
    assert "| vanilla CFG | g=5 | 4 |" in text and "ours w/ own" in text and "ours w/ sd" in text
    v = values(str(out))
    for m in ("lpips", "psnr", "ssim"):
        # own null = vanilla up to float batching (vanilla runs cond and null in one batch, a prior in two)
        assert v[("own", "g=5", m)] == pytest.approx(v[("vanilla", "g=5", m)], rel=1e-3)
        assert math.isfinite(v[("sd", "g=5", m)])
    assert v[("sd", "g=5", "psnr")] != v[("vanilla", "g=5", "psnr")]
    sample = out / "samples" / "vanilla" / "g5" / "obj1_002_0.png"
    own = np.asarray(Image.open(out / "samples" / "own" / "g5" / "obj1_002_0.png"), dtype=np.int16)
    assert np.abs(np.asarray(Image.open(sample), dtype=np.int16) - own).max() <= 1
    # PSNR against the ground-truth view composited onto white, recomputed with numpy
    gen = np.asarray(Image.open(sample), dtype=np.float64) / 255
    rgba = np.asarray(Image.open(os.path.join(env["objects"], "obj1", "002.png")), dtype=np.float64) / 255
    target = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    target = np.round(target * 255) / 255  # PIL's alpha composite rounds to uint8
    expected = 10 * math.log10(1 / np.mean((gen - target) ** 2))
    row = next(r for r in read_csv(str(out / "items.csv")) if r["method"] == "vanilla" and r["item"] == "obj1_002")
    assert float(row["psnr"]) == pytest.approx(expected, abs=0.05)
    assert not list(out.rglob(".*.tmp")) and (out / "eval.md").read_text().startswith("Zero-1-to-3 novel views")
    # rows: inputs, true views, 3 methods, each labelled; 32 px tiles enlarged 3x
    rows = [torch.zeros(4, 3, 32, 32)] * 5
    expected = make_grid(rows, row_labels=["input", "target", "vanilla", "own", "sd"])
    assert Image.open(out / "grid.png").size[::-1] == tuple(expected.shape[1:]) and expected.shape[1] == 5 * 98 + 2


def test_zero123_killed_run_resumes_to_the_same_table(env, capsys, tmp_path, monkeypatch):
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    args = ("--prior", f"sd={env['sd']}", "--guidance-scale", "2", "5")
    assert run_cli(capsys, *zero123_args(env, fresh, *args))[0] == 0
    real_save, saved = Image.Image.save, []

    def dying_save(self, fp, *a, **k):  # the 6th PNG dies half-written, inside the atomic write
        if len(saved) == 5:
            fp.write(b"\x89PNG half")  # the atomic writer's temp file
            raise KeyboardInterrupt
        saved.append(fp)
        real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", dying_save)
    code, _, _ = run_cli(capsys, *zero123_args(env, resumed, *args))
    assert code == 130 and not (resumed / "eval.md").exists()
    pngs = list((resumed / "samples").rglob("*.png"))
    assert len(pngs) == 5 and not list(resumed.rglob(".*.tmp"))  # the half-written file was removed
    assert all(Image.open(p).size == (32, 32) for p in pngs)
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert run_cli(capsys, *zero123_args(env, resumed, *args))[0] == 0
    settings = json.loads((resumed / "settings.json").read_text())
    assert settings["made_this_run"] == 2 * 2 * 4 - 5  # only the missing samples were made
    assert_same_values(values(str(resumed)), values(str(fresh)))
    code, _, err = run_cli(capsys, *zero123_args(env, resumed, *args, "--steps", "4"))
    assert "holds a run with steps=3" in one_line_error(code, err)
    code, _, err = run_cli(
        capsys, *zero123_args(env, resumed, "--prior", f"sd={env['zero123']}", "--guidance-scale", "2", "5")
    )
    assert "holds samples of prior 'sd'" in one_line_error(code, err)  # a name keeps its prior
    code, text, err = run_cli(capsys, *zero123_args(env, resumed, *args, "--prior", f"own={env['zero123']}"))
    assert code == 0 and "ours w/ own" in text, err  # a new prior is added next to the old samples
    assert json.loads((resumed / "settings.json").read_text())["made_this_run"] == 2 * 4


def test_shards_then_unsharded_scoring_equals_one_process(env, capsys, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert run_cli(capsys, *zero123_args(env, single, "--batch-size", "4"))[0] == 0
    for k in range(2):
        code, text, err = run_cli(capsys, *zero123_args(env, sharded, "--shard", f"{k}/2"))
        assert code == 0 and "run again without --shard" in text, err
        assert not (sharded / "eval.md").exists()
    assert run_cli(capsys, *zero123_args(env, sharded))[0] == 0
    assert json.loads((sharded / "settings.json").read_text())["made_this_run"] == 0
    assert_same_values(values(str(sharded)), values(str(single)))  # batch size and sharding do not change samples


def test_incompatible_prior_names_both_vaes_before_sampling(env, capsys, tmp_path):
    out = tmp_path / "bad"
    code, _, err = run_cli(capsys, *zero123_args(env, out, "--prior", env["sdxl_vae"]))
    line = one_line_error(code, err)
    assert "scaling 0.18215" in line and "scaling 0.13025" in line
    assert not (out / "samples").exists() and not (out / "eval.md").exists()


def test_bad_inputs_fail_in_one_line_before_loading(env, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    args = zero123_args(env, tmp_path / "o", "--lpips-weights", str(tmp_path / "missing.pth"))
    assert "LPIPS backbone weights" in one_line_error(*run_cli(capsys, *args)[::2])
    code, _, err = run_cli(capsys, *zero123_args(env, tmp_path / "o2", "--metrics", "fid"))
    assert "'fid' is not available for zero123" in one_line_error(code, err)
    corrupt = tmp_path / "corrupt"
    write_objects(str(corrupt), [(60, 0, 1.5), (60, 60, 1.5)], n_objects=1)
    (corrupt / "obj0" / "001.png").write_bytes(b"\x89PNG not really")
    code, _, err = run_cli(capsys, *zero123_args(env, tmp_path / "o3", "--data", str(corrupt)))
    assert "001.png" in one_line_error(code, err) and "corrupt" in err
    code, _, err = run_cli(capsys, *zero123_args(env, tmp_path / "o4", "--shard", "2/2"))
    assert "--shard 2/2 is invalid" in one_line_error(code, err)
    code, _, err = run_cli(capsys, *zero123_args(env, tmp_path / "o5", "--size", "0"))
    assert "--size must be at least 1" in one_line_error(code, err)
    np.save(corrupt / "obj0" / "001.npy", np.zeros((2, 2)))
    (corrupt / "obj0" / "001.png").write_bytes((corrupt / "obj0" / "000.png").read_bytes())
    code, _, err = run_cli(capsys, *zero123_args(env, tmp_path / "o6", "--data", str(corrupt)))
    assert "001.npy' has shape (2, 2)" in one_line_error(code, err)


# -- Versatile Diffusion ---------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 8 samples in 2048 dims: singular covariances
def test_vd_fid_matches_scipy_and_clip_i_matches_clipmodel(env, capsys, tmp_path):
    import scipy.linalg

    from priorswap.toolkit.metrics import InceptionExtractor

    out = tmp_path / "vd"
    code, text, err = run_cli(
        capsys,
        "eval",
        "vd",
        "--model",
        env["vd"],
        "--data",
        env["images"],
        "--output-dir",
        str(out),
        "--steps",
        STEPS,
        "--prior",
        f"sd={env['sd']}",
        "--num-samples",
        "2",
        "--clip",
        env["clip"],
        "--inception-weights",
        env["inception"],
        "--dinov2-weights",
        env["vit"],
        "--dinov2-model",
        mf.TINY_VIT,
        "--dinov2-size",
        "32",
        "--stats-cache",
        str(tmp_path / "stats"),
    )
    assert code == 0, err
    assert "FID ↓" in text and "FD_DINOv2 ↓" in text and "CLIP-I ↑" in text and "DINOv2 ↑" in text
    v = values(str(out))
    # FID of vanilla samples, recomputed: features from the same Inception, Frechet distance with scipy
    inc = InceptionExtractor(env["inception"])
    gen = torch.cat([to_t(Image.open(p)) for p in sorted((out / "samples" / "vanilla" / "g2").glob("*.png"))])
    refs = []
    for p in sorted(os.listdir(env["images"])):
        im = Image.open(os.path.join(env["images"], p)).convert("RGB")
        w, h = im.size
        s = min(w, h)
        refs.append(
            to_t(
                im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize(
                    (32, 32), Image.BICUBIC
                )
            )
        )
    f1, f2 = inc(gen).double().numpy(), inc(torch.cat(refs)).double().numpy()
    m1, m2, s1, s2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    fid = float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert v[("vanilla", "g=2", "fid")] == pytest.approx(fid, rel=1e-3, abs=1e-3)
    # CLIP-I of one sample, recomputed with transformers' CLIPModel and its own image features
    embed, _ = reference_clip(env["clip"])
    row = next(
        r
        for r in read_csv(str(out / "items.csv"))
        if r["method"] == "vanilla" and r["item"] == "img3" and r["sample"] == "1"
    )
    expected = float(
        embed(to_t(Image.open(os.path.join(env["images"], "img3.png"))))
        @ embed(to_t(Image.open(out / "samples" / "vanilla" / "g2" / "img3_1.png")))
    )
    assert float(row["clip_i"]) == pytest.approx(expected, abs=1e-4)
    assert len(list((tmp_path / "stats").glob("refstats-*.safetensors"))) == 2  # FID and FD-DINOv2 references cached


def test_vd_manifest_without_reference_folder_is_refused(env, capsys, tmp_path):
    manifest = write_jsonl(str(tmp_path / "v.jsonl"), [{"image": os.path.join(env["images"], "img0.png")}])
    code, _, err = run_cli(
        capsys, "eval", "vd", "--model", env["vd"], "--data", manifest, "--output-dir", str(tmp_path / "o")
    )
    assert "need --reference" in one_line_error(code, err)


# -- InstructPix2Pix -------------------------------------------------------------------------------
def test_ip2p_clip_t_and_directional_match_direct_computation(env, capsys, tmp_path):
    out = tmp_path / "ip2p"
    code, text, err = run_cli(
        capsys,
        "eval",
        "ip2p",
        "--model",
        env["ip2p"],
        "--data",
        env["edits"],
        "--output-dir",
        str(out),
        "--steps",
        STEPS,
        "--prior",
        f"own={env['ip2p']}",
        "--text-guidance",
        "3",
        "7.5",
        "--clip",
        env["clip"],
    )
    assert code == 0, err
    assert "gI=1.5, gT=3" in text and "gI=1.5, gT=7.5" in text
    v = values(str(out))
    for s in ("gI=1.5, gT=3", "gI=1.5, gT=7.5"):
        for m in ("clip_i", "clip_t", "clip_d"):
            assert v[("own", s, m)] == pytest.approx(v[("vanilla", s, m)], rel=1e-3, abs=1e-4)
    # the inputs have different sizes (40 and 48 px wide): each sample keeps its input's size
    assert Image.open(out / "samples" / "vanilla" / "gI1.5_gT7.5" / "000001_0.png").size == (40, 32)
    assert Image.open(out / "samples" / "vanilla" / "gI1.5_gT7.5" / "000002_0.png").size == (48, 32)
    image, text = reference_clip(env["clip"])
    edited = image(to_t(Image.open(out / "samples" / "vanilla" / "gI1.5_gT3" / "000002_0.png")))
    source = image(to_t(Image.open(os.path.join(env["images"], "img1.png"))))
    t_in, t_out = text("a field"), text("a snowy field")
    row = next(
        r
        for r in read_csv(str(out / "items.csv"))
        if r["method"] == "vanilla" and r["setting"] == "gI=1.5, gT=3" and r["item"] == "000002"
    )
    assert float(row["clip_t"]) == pytest.approx(float(edited @ t_out), abs=1e-4)
    assert float(row["clip_i"]) == pytest.approx(float(source @ edited), abs=1e-4)
    d_img, d_txt = edited - source, t_out - t_in  # InstructPix2Pix's directional similarity
    assert float(row["clip_d"]) == pytest.approx(float(d_img @ d_txt / (d_img.norm() * d_txt.norm())), abs=1e-4)


def test_offload_and_limit_give_the_same_samples(env, capsys, tmp_path, monkeypatch):
    plain, offload = tmp_path / "plain", tmp_path / "offload"
    from priorswap.toolkit.core.offload import Offloaded

    common = ("--prior", f"sd={env['sd']}", "--limit", "2")
    assert run_cli(capsys, *zero123_args(env, plain, *common))[0] == 0
    calls = []
    real = Offloaded.predict
    monkeypatch.setattr(
        Offloaded, "predict", lambda self, *a: calls.append(os.path.basename(self.inner.name)) or real(self, *a)
    )
    code, text, err = run_cli(capsys, *zero123_args(env, offload, *common, "--offload"))
    assert code == 0, err
    assert {"zero123", "sd"} <= set(calls)  # both models ran through the offloading wrapper
    assert "| vanilla CFG | g=5 | 2 |" in text  # --limit 2 of the 4 views
    assert sorted(p.name for p in (plain / "samples" / "sd" / "g5").iterdir()) == sorted(
        p.name for p in (offload / "samples" / "sd" / "g5").iterdir()
    )
    assert_same_values(values(str(offload)), values(str(plain)))


def test_shard_runs_check_metric_weights_too(env, capsys, tmp_path):
    code, _, err = run_cli(
        capsys, *zero123_args(env, tmp_path / "s", "--shard", "0/2", "--lpips-weights", str(tmp_path / "nope.pth"))
    )
    assert "LPIPS backbone weights" in one_line_error(code, err)


def test_zero123_manifest_with_explicit_poses_equals_object_folders(env, capsys, tmp_path):
    folder_items = read_items(env["objects"], "zero123")
    rows = [
        {"image": it.image, "target": it.target, "polar": it.pose[0], "azimuth": it.pose[1], "radius": it.pose[2]}
        for it in folder_items[:2]
    ]
    manifest = write_jsonl(str(tmp_path / "views.jsonl"), rows)
    a, b = tmp_path / "folder", tmp_path / "manifest"
    assert run_cli(capsys, *zero123_args(env, a, "--metrics", "psnr"))[0] == 0
    assert run_cli(capsys, *zero123_args(env, b, "--data", manifest, "--metrics", "psnr"))[0] == 0
    for k, it in enumerate(folder_items[:2]):  # same index -> same seed, same pose -> same sample
        x = np.asarray(Image.open(a / "samples" / "vanilla" / "g5" / f"{it.id}_0.png"), dtype=np.int16)
        y = np.asarray(Image.open(b / "samples" / "vanilla" / "g5" / f"{k + 1:06d}_0.png"), dtype=np.int16)
        assert np.abs(x - y).max() <= 1


def test_ip2p_shard_with_a_missing_image_elsewhere_is_one_line(env, capsys, tmp_path):
    rows = [
        {**json.loads(line), "image": os.path.join(env["images"], f"img{i}.png")}
        for i, line in enumerate(open(env["edits"]))
    ]
    rows[2]["image"] = os.path.join(env["images"], "missing.png")  # item 2 belongs to shard 0/2; this run is shard 1/2
    manifest = write_jsonl(str(tmp_path / "edits.jsonl"), rows)
    code, _, err = run_cli(
        capsys,
        "eval",
        "ip2p",
        "--model",
        env["ip2p"],
        "--data",
        manifest,
        "--output-dir",
        str(tmp_path / "o"),
        "--steps",
        STEPS,
        "--clip",
        env["clip"],
        "--shard",
        "1/2",
    )
    assert "missing.png" in one_line_error(code, err) and not (tmp_path / "o" / "samples").exists()


def test_two_runs_claiming_one_folder_at_once_are_checked_against_each_other(tmp_path, monkeypatch):
    from priorswap.toolkit.protocols.generate import Method
    from priorswap.toolkit.protocols.runner import claim_output

    real_link = os.link

    def other_process_wins(src, dst):  # another shard links its claim in between our check and our link
        (tmp_path / "other.json").write_text(json.dumps({"steps": 50, "priors": {"vanilla": None}}))
        real_link(tmp_path / "other.json", dst)
        real_link(src, dst)  # raises FileExistsError, as the real race would

    monkeypatch.setattr(os, "link", other_process_wins)
    with pytest.raises(PriorswapError, match="holds a run with steps=50, this one has steps=20"):
        claim_output(str(tmp_path / "out"), {"steps": 20}, [Method("vanilla")])
    assert not list((tmp_path / "out").glob("run.json.tmp*"))


def test_conditions_are_encoded_once_per_batch_for_all_guidance_scales(env, capsys, tmp_path, monkeypatch):
    from priorswap.toolkit.protocols.conditions import Zero123Conditions

    calls = []
    real = Zero123Conditions.encode
    monkeypatch.setattr(Zero123Conditions, "encode", lambda self, items: calls.append(len(items)) or real(self, items))
    args = zero123_args(env, tmp_path / "o", "--guidance-scale", "2", "5", "7", "--metrics", "psnr")
    assert run_cli(capsys, *args)[0] == 0
    assert calls == [3, 1]  # 4 items in batches of 3, each encoded once for the 3 scales
    assert len(list((tmp_path / "o" / "samples" / "vanilla").rglob("*.png"))) == 3 * 4


def test_ip2p_pickscore_is_the_preference_over_vanilla(env, capsys, tmp_path):
    """PickScore against IP2P (the paper's Table 5): sigmoid(s_method - s_vanilla) per sample; the raw score is
    exp(logit_scale) * cos(image, output caption) as transformers' CLIPModel computes it."""
    import shutil

    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    ps = tmp_path / "pickscore"
    shutil.copytree(env["clip"], ps)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(ps)
    out = tmp_path / "out"
    code, text, err = run_cli(
        capsys, "eval", "ip2p", "--model", env["ip2p"], "--data", env["edits"], "--output-dir", str(out), "--steps",
        STEPS, "--prior", f"own={env['ip2p']}", "--metrics", "clip_i", "pickscore", "--clip", env["clip"],
        "--pickscore", str(ps), "--pickscore-processor", str(ps),
    )  # fmt: skip
    assert code == 0, err
    v = values(str(out))
    assert v[("vanilla", "gI=1.5, gT=7.5", "pickscore")] == pytest.approx(0.5)
    assert v[("own", "gI=1.5, gT=7.5", "pickscore")] == pytest.approx(0.5, abs=1e-3)  # the same samples
    row = next(r for r in read_csv(str(out / "items.csv")) if r["method"] == "vanilla" and r["item"] == "000002")
    model, proc = CLIPModel.from_pretrained(str(ps)).eval(), CLIPProcessor.from_pretrained(str(ps))
    img = Image.open(out / "samples" / "vanilla" / "gI1.5_gT7.5" / "000002_0.png")
    with torch.no_grad():
        e_i = model.visual_projection(model.vision_model(**proc(images=[img], return_tensors="pt")).pooler_output)
        t = proc(text=["a snowy field"], padding=True, return_tensors="pt")
        e_t = model.text_projection(
            model.text_model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).pooler_output
        )
        want = model.logit_scale.exp() * torch.nn.functional.cosine_similarity(e_i, e_t)
    assert float(row["pickscore_raw"]) == pytest.approx(float(want), abs=1e-4)
    assert "PS vs vanilla" in text


def test_ip2p_imagereward_is_the_mean_reward_against_the_output_caption(env, capsys, tmp_path):
    """ImageReward (the paper's Table 5) on fabricated ImageReward.pt / med_config.json / BERT vocab: each sample's
    reward against its output caption, as the metric called on the PNG gives it; the table shows the mean."""
    from priorswap.toolkit.metrics.imagereward import ImageReward

    ir = mf.write_imagereward(str(tmp_path / "imagereward"))
    out = tmp_path / "out"
    code, text, err = run_cli(
        capsys, "eval", "ip2p", "--model", env["ip2p"], "--data", env["edits"], "--output-dir", str(out), "--steps",
        STEPS, "--prior", f"own={env['ip2p']}", "--metrics", "clip_i", "imagereward", "--clip", env["clip"],
        "--imagereward-weights", ir["weights"], "--imagereward-tokenizer", ir["tokenizer"],
    )  # fmt: skip
    assert code == 0, err
    assert "ImageReward ↑" in text
    rows = [r for r in read_csv(str(out / "items.csv")) if r["method"] == "vanilla"]
    model = ImageReward(ir["weights"], ir["config"], ir["tokenizer"])
    img = np.array(Image.open(out / "samples" / "vanilla" / "gI1.5_gT7.5" / "000002_0.png").convert("RGB"))
    want = model(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, ["a snowy field"])
    assert float(next(r for r in rows if r["item"] == "000002")["imagereward"]) == pytest.approx(float(want), abs=1e-5)
    v = values(str(out))
    mean = sum(float(r["imagereward"]) for r in rows) / len(rows)
    assert v[("vanilla", "gI=1.5, gT=7.5", "imagereward")] == pytest.approx(mean, abs=1e-6)
    assert v[("own", "gI=1.5, gT=7.5", "imagereward")] == pytest.approx(mean, abs=1e-3)  # the same samples


def test_ip2p_imagereward_bad_files_fail_before_sampling(env, capsys, tmp_path):
    ir = mf.write_imagereward(str(tmp_path / "imagereward"))
    base = [
        "eval", "ip2p", "--model", env["ip2p"], "--data", env["edits"], "--output-dir", str(tmp_path / "o"),
        "--steps", STEPS, "--metrics", "imagereward", "--imagereward-tokenizer", ir["tokenizer"],
    ]  # fmt: skip
    code, _, err = run_cli(capsys, *base, "--imagereward-weights", str(tmp_path / "nope.pt"))
    assert "--imagereward-weights" in one_line_error(code, err)
    code, _, err = run_cli(capsys, *base, "--imagereward-weights", ir["weights"], "--imagereward-config", ir["weights"])
    assert "not a BLIP med_config.json" in one_line_error(code, err)
    assert not (tmp_path / "o" / "samples").exists()
